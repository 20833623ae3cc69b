"""The scaling model: bytes, seconds and memory per step of every phase of the paper presets, on paper.

    python -m benchmarks.scaling_model        # writes benchmarks/results/scaling_model.json

For each paper preset (``conf/experiment/paper_*.yaml``) and each candidate 8-GPU layout (Hydra
overrides on top of the preset; the first is what ``launch/local.sh`` picks on 8 GPUs), the run's
config is composed with Hydra, so every count follows the configs: prompts per step, ``rollout.n``,
``max_tokens``, ``max_model_len``, ``algo.top_k`` and ``loss``, the models (``conf/model``), the
engines, learner ranks, ZeRO stage, micro-batches, checkpointing and placement. On that config it
computes, on an H200 and an H100, each phase's seconds and bytes (rollout decode, the rollout's data
path before and after issue 15, moving the batch, the teacher's forward and its transfer chosen by
``opcd.transfer.plan_transfer``, the learner's forward + backward, the weight sync), the memory of
every GPU and the host memory of the driver and each actor, and whether the layout fits.

Nothing is measured: the inputs are quoted figures and named assumptions
(``benchmarks.common.paper_scale``), all written into the JSON; the data path's "after" figure is
read from ``benchmarks/results/data_path.json`` when ``bench_data_path.py`` has written it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # `python benchmarks/scaling_model.py`: the repo root on the path
    sys.path.insert(0, str(ROOT))

from benchmarks.common import paper_scale as P  # noqa: E402
from opcd.algorithms import algo_spec  # noqa: E402
from opcd.transfer import ID_BYTES, LOGPROB_BYTES, ModelDims, dtype_bytes, plan_transfer  # noqa: E402

CONF = ROOT / "conf"
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "scaling_model.json"
PRESETS = ("paper_math", "paper_games", "paper_cross_size", "paper_sysprompt")
MIB = 2 ** 20
# (name, Hydra overrides on top of the preset). Dedicated engines beyond the first layout take 85% of
# their GPU (docs/scale-out.md: raise gpu_memory_utilization when the engine has its GPU to itself).
_GIVE = ["teacher.num_gpus=1", "learner.num_gpus=1"]
LAYOUTS: list[tuple[str, list[str]]] = [
    ("local.sh on 8 GPUs: 6 engines, teacher, 1 learner rank", ["rollout.num_workers=6", *_GIVE]),
    ("6 engines at 85% memory, teacher, 1 learner rank",
     ["rollout.num_workers=6", "rollout.gpu_memory_utilization=0.85", *_GIVE]),
    ("5 engines at 85%, teacher, 2 learner ranks",
     ["rollout.num_workers=5", "learner.num_ranks=2", "rollout.gpu_memory_utilization=0.85", *_GIVE]),
    ("3 engines at 85%, teacher, 4 learner ranks",
     ["rollout.num_workers=3", "learner.num_ranks=4", "rollout.gpu_memory_utilization=0.85", *_GIVE]),
    ("3 engines at 85%, teacher, 4 learner ranks, ZeRO-3",
     ["rollout.num_workers=3", "learner.num_ranks=4", "learner.zero_stage=3", "rollout.gpu_memory_utilization=0.85",
      *_GIVE]),
    ("2 engines at 85%, teacher, 5 learner ranks, ZeRO-3, micro-batch 1 with checkpointing",
     ["rollout.num_workers=2", "learner.num_ranks=5", "learner.zero_stage=3", "learner.micro_batch_size=1",
      "learner.gradient_checkpointing=true", "rollout.gpu_memory_utilization=0.85", *_GIVE]),
    ("colocated: 7 engines + 7 learner ranks (ZeRO-3), teacher",
     ["placement.colocate=true", "rollout.num_workers=7", "learner.num_ranks=7", "learner.zero_stage=3", *_GIVE]),
]


def compose(preset: str, overrides: list[str] = ()):
    """The run's config, as ``python -m opcd.train experiment=<preset> <overrides>`` would build it."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from opcd import config as C

    C.register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=[f"experiment={preset}", *overrides])


def dims(path: str) -> P.Dims:
    try:
        return P.MODELS[path]
    except KeyError:
        raise KeyError(f"scaling model: no dims for {path!r}; add its config.json values to "
                       f"benchmarks.common.paper_scale.MODELS") from None


def workload(cfg) -> dict:
    """Tokens per sequence and per step. Multi-turn tasks: ``max_turns`` turns of ``max_tokens``, with
    the environment's reply between turns (in the response positions, masked out of the loss)."""
    tok = P.TASK_TOKENS.get(cfg.task.name, P.DEFAULT_TOKENS)
    turns = int(cfg.task.get("max_turns") or 1)
    L = int(cfg.rollout.max_tokens)
    positions = turns * L + (turns - 1) * tok["observation"]  # response region of one sequence
    student = tok["prompt"] + positions
    teacher = tok["context"] + student
    if teacher > cfg.model.max_model_len:
        raise ValueError(f"{cfg.experiment}: context + prompt + response = {teacher} tokens > model.max_model_len")
    B = int(cfg.prompts_per_step * cfg.rollout.n)
    return {"sequences": B, "turns": turns, "generated_per_seq": turns * L, "positions_per_seq": positions,
            "student_seq": student, "teacher_seq": teacher, "prompt": tok["prompt"], "context": tok["context"],
            "observation": tok["observation"], "generated": B * turns * L, "positions": B * positions}


def transfer(cfg, w: dict):
    """``opcd.transfer.plan_transfer`` for this config, over the step's modeled response positions."""
    s, t = dims(cfg.model.path), dims(cfg.model.teacher_path or cfg.model.path)
    spec = algo_spec(cfg.algo)
    return plan_transfer(loss=spec.loss, teacher_returns=spec.teacher_returns, setting=cfg.algo.teacher_transfer,
                         top_k=spec.top_k, student=ModelDims(s.vocab, s.hidden), teacher=ModelDims(t.vocab, t.hidden),
                         hidden_dtype_bytes=dtype_bytes(cfg.model.dtype), tokens_per_step=w["positions"],
                         max_transfer_mb=cfg.teacher.max_transfer_mb)


def data_path_figures(top_k: int, path: Path | None = None) -> dict:
    """µs per response token of the rollout's *host-side conversion* (vLLM's output to learner-ready
    arrays), before and after issue 15: from ``bench_data_path.py``'s JSON keys
    ``k<k>_<side>_conversion_us_per_token`` when they exist, else the issue's 71 µs and "pending
    measurement". Its ``k<k>_<side>_us_per_token`` are not used: they include what the top-k costs
    inside the CPU engine (sampler and output processor), which on a GPU runs elsewhere."""
    path = path or RESULTS / "data_path.json"
    before = P.ASSUMPTIONS["data_path_before_us_per_token"][0]
    out = {"before_us_per_token": before, "before_source": "issue 15 (measured, top-256)",
           "after_us_per_token": None, "after_source": "pending measurement (benchmarks/bench_data_path.py)"}
    if path.exists():
        summary = json.loads(path.read_text()).get("summary", {})
        for side in ("before", "after"):
            v = summary.get(f"k{top_k}_{side}_conversion_us_per_token")
            if v is not None:
                out[f"{side}_us_per_token"] = v
                out[f"{side}_source"] = f"benchmarks/results/data_path.json summary.k{top_k}_{side}_conversion_us_per_token"
    return out


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def evaluate(cfg, gpu_name: str, asm: dict, dp: dict, plan) -> dict:
    """Phases, GPU memory per actor and host memory of one composed config on one GPU type."""
    gpu, w = P.GPUS[gpu_name], workload(cfg)
    r, t, lc = cfg.rollout, cfg.teacher, cfg.learner
    s_d = dims(cfg.model.path)
    t_d = dims(cfg.model.teacher_path or cfg.model.path)
    N, Nt = P.params(s_d), P.params(t_d)
    B, k, colocate = w["sequences"], int(cfg.algo.top_k), bool(cfg.placement.colocate)
    E, tp, ranks = int(r.num_workers), int(r.tensor_parallel_size), int(lc.num_ranks)
    over, nvlink = asm["process_overhead_bytes"], asm["nvlink_bytes_per_s"]
    ph: dict[str, dict] = {}

    # Rollout: each engine decodes its share of the sequences.
    seqs = math.ceil(B / E)
    budget = r.gpu_memory_utilization * gpu.memory * tp
    kv_cap = budget - 2.0 * N - asm["engine_overhead_bytes"]
    ro = P.rollout_seconds(n_params=N, d=s_d, gpu=gpu, tp=tp, seqs=seqs, prompt_tokens=w["prompt"],
                           prefill_tokens=w["prompt"] + (w["turns"] - 1) * w["observation"],
                           decode_steps=w["generated_per_seq"], final_tokens=w["student_seq"], kv_capacity=kv_cap,
                           asm=asm)
    ph["rollout"] = {"seconds": ro["seconds"], "bytes": ro["hbm_bytes"], "bytes_are": "HBM read per engine",
                     "sequences_per_engine": seqs, "concurrency": ro["concurrency"], "waves": ro["waves"],
                     "bound": ro["bound"], "prefill_seconds": ro.get("prefill_seconds")}
    # The rollout's data path: vLLM's log-probs to learner-ready arrays, per generated token.
    spec = algo_spec(cfg.algo)
    k_roll = spec.rollout_logprobs  # log-probs per position asked of the engines: the student's top-k, or 1
    support = k * ID_BYTES if spec.student_topk else 0  # the student's top-k ids, sent on to the teacher
    roll_tok = 8 + 4 + k_roll * (ID_BYTES + LOGPROB_BYTES)  # id, sampled log-prob, top-k ids + log-probs
    roll_bytes = w["generated"] * roll_tok
    for side in ("before", "after"):
        us = dp[f"{side}_us_per_token"]
        ph[f"data_path_{side}"] = {"seconds": None if us is None else us * 1e-6 * w["generated"], "bytes": roll_bytes,
                                   "bytes_are": "rollout arrays (host)", "us_per_token": us}
    # Moving the batch through the object store: engines -> driver -> teacher (sequences + support ids)
    # and driver -> learner (the padded batch, put once and read by every rank).
    seq_bytes = B * (w["student_seq"] + w["teacher_seq"]) * 8
    to_teacher = B * w["teacher_seq"] * 8 + w["positions"] * support
    batch_tok = 8 + 1 + 4 + 4 + plan.bytes_per_token  # ids, mask, behaviour + teacher token log-probs; support
    learner_batch = w["positions"] * batch_tok + seq_bytes
    moved = roll_bytes + to_teacher + learner_batch
    ph["batch_movement"] = {"seconds": moved / asm["object_store_bytes_per_s"], "bytes": moved,
                            "bytes_are": "object store (host)"}
    # Teacher: one forward over context + prompt + response, then its transfer back.
    t_flops = P.forward_flops(Nt, t_d, B * w["teacher_seq"], w["teacher_seq"] / 2)
    # One teacher actor, one forward at a time on one device (teacher.num_gpus reserves, it does not split).
    ph["teacher_forward"] = {"seconds": t_flops / (gpu.flops * asm["mfu_teacher"]), "flops": t_flops,
                             "bytes": math.ceil(B / t.micro_batch_size) * 2.0 * Nt,
                             "bytes_are": "HBM: the weights, read once per micro-batch"}
    t_bytes = plan.bytes_per_token * w["positions"]
    ph["teacher_transfer"] = {"seconds": t_bytes / asm["object_store_bytes_per_s"], "bytes": t_bytes,
                              "bytes_are": "object store (host)"}
    # Learner: forward + backward of prompt + response on each rank; ZeRO collectives per rank.
    per_rank = math.ceil(B / ranks)
    mbs = math.ceil(per_rank / lc.micro_batch_size)
    ckpt, stage = bool(lc.gradient_checkpointing), int(lc.zero_stage)
    l_flops = P.learner_flops(N, s_d, per_rank * w["student_seq"], w["student_seq"] / 2, ckpt)
    if ranks == 1:
        comm = 0.0
    elif stage == 3:  # weights gathered for forward, backward (and recompute); gradients reduce-scattered
        comm = mbs * (3 + int(ckpt)) * 2.0 * N
    elif stage == 2:  # gradients reduce-scattered per micro-batch; the updated weights all-gathered once
        comm = mbs * 2.0 * N + 2.0 * N
    else:  # gradients all-reduced per micro-batch
        comm = mbs * 4.0 * N
    ph["learner"] = {"seconds": max(l_flops / (gpu.flops * asm["mfu_learner"]), comm / nvlink), "flops_per_rank": l_flops,
                     "bytes": comm, "bytes_are": f"ZeRO-{stage} collectives per rank (NVLink)",
                     "compute_seconds": l_flops / (gpu.flops * asm["mfu_learner"]), "comm_seconds": comm / nvlink}
    sync_bytes = 2.0 * N + (2.0 * N if stage == 3 else 0.0)  # ZeRO-3: rank 0 gathers the weights first
    ph["weight_sync"] = {"seconds": sync_bytes / nvlink, "bytes": sync_bytes,
                         "bytes_are": "bf16 weights, NCCL broadcast (NVLink)"}

    # GPU memory per actor.
    kv_tok = P.kv_bytes_per_token(s_d)
    engine = {"weights": 2.0 * N / tp, "kv_cache": max(kv_cap, 0.0) / tp,
              "engine_overhead": asm["engine_overhead_bytes"] / tp,
              "process": over}
    engine_ok = kv_cap >= kv_tok * cfg.model.max_model_len
    mode = plan.mode
    teacher = {"weights": 2.0 * Nt,
               "activations": asm["activation_bytes_per_token_layer"] * t_d.hidden * w["teacher_seq"] * t.micro_batch_size,
               "logits": P.teacher_logit_bytes(t_d, mode, w["teacher_seq"], w["positions_per_seq"], t.micro_batch_size),
               "process": over}
    states = P.learner_state_bytes(N, stage, ranks, bool(lc.offload))
    learner = {"weights": states["weights"], "gradients": states["gradients"], "optimizer": states["optimizer"],
               "activations": P.activation_bytes(s_d, w["student_seq"], lc.micro_batch_size, ckpt,
                                                 asm["activation_bytes_per_token_layer"]),
               "logits": P.learner_logit_bytes(s_d, cfg.algo.loss, w["student_seq"], w["positions_per_seq"],
                                               lc.micro_batch_size, cfg.algo.temperature),
               "sync_bucket": cfg.sync.bucket_mb * MIB, "process": over}
    gpus = {}
    if colocate:  # the learner's cached activations stay reserved while the engine is awake (no empty_cache)
        both = {**{f"learner_{n}": v for n, v in learner.items()}, "engine_share": budget / tp, "engine_process": over}
        gpus["engine + learner rank"] = {"count": E * tp, "parts": both, "engine": True}
    else:
        gpus["engine"] = {"count": E * tp, "parts": engine, "engine": True}
        gpus["learner rank"] = {"count": ranks, "parts": learner, "engine": False}
    gpus["teacher"] = {"count": math.ceil(t.num_gpus), "parts": teacher, "engine": False}
    for g in gpus.values():
        g["total"] = sum(g["parts"].values())
        g["fits"] = g["total"] <= gpu.memory and (engine_ok or not g["engine"])
    kv_need = kv_tok * cfg.model.max_model_len

    # Host memory: the driver holds the step's arrays (two steps with rollout.overlap).
    teacher_out = w["positions"] * (plan.bytes_per_token + 4)
    driver = roll_bytes + teacher_out + learner_batch
    host = {"driver": driver * (2 if r.overlap else 1),
            "engine (each)": roll_bytes / E + (2.0 * N if colocate else 0.0),  # asleep: weights on the host
            "teacher": to_teacher + teacher_out, "learner rank (each)": learner_batch + states["host_optimizer"]}

    # The step: phases one after another, and with rollout.overlap (sample and score step t+1 while
    # the learner trains on step t and pushes its weights).
    out = {"phases": {n: {k2: _finite(v) for k2, v in p.items()} for n, p in ph.items()}, "gpus": gpus, "host": host}
    out["capacity"] = gpu.memory
    out["gpu_count"] = sum(g["count"] for g in gpus.values())
    out["kv_cache"] = {"capacity_per_engine": kv_cap, "needed_for_max_model_len": kv_need, "holds_max_model_len": engine_ok,
                       "bytes_per_token": kv_tok}
    out["fits"] = all(g["fits"] for g in gpus.values())
    for side in ("before", "after"):
        dps = ph[f"data_path_{side}"]["seconds"]
        if dps is None:
            out[f"step_{side}"] = None
            continue
        gen = ph["rollout"]["seconds"] + dps + ph["batch_movement"]["seconds"] + ph["teacher_forward"]["seconds"] \
            + ph["teacher_transfer"]["seconds"]
        train = ph["learner"]["seconds"] + ph["weight_sync"]["seconds"]
        # The dominant phase among those the data-path fix does not touch; the data path's own share beside it.
        names = ["rollout", "batch_movement", "teacher_forward", "teacher_transfer", "learner", "weight_sync"]
        dominant = max(names, key=lambda n: ph[n]["seconds"])
        total = gen + train
        out[f"step_{side}"] = {"sequential": _finite(total),
                               "overlap": None if colocate else _finite(max(gen, train)),
                               "overlap_allowed": not colocate, "generate_side": _finite(gen), "train_side": _finite(train),
                               "dominant": dominant, "dominant_share": _finite(ph[dominant]["seconds"] / total),
                               "data_path_share": _finite(dps / total)}
    return out


def config_summary(cfg) -> dict:
    """The config values the model reads (so the JSON shows what it followed)."""
    r, lc = cfg.rollout, cfg.learner
    return {"student": cfg.model.path, "teacher": cfg.model.teacher_path or cfg.model.path, "task": cfg.task.name,
            "prompts_per_step": cfg.prompts_per_step, "rollout.n": r.n, "rollout.max_tokens": r.max_tokens,
            "task.max_turns": cfg.task.get("max_turns"), "model.max_model_len": cfg.model.max_model_len,
            "model.dtype": cfg.model.dtype, "algo.loss": cfg.algo.loss, "algo.top_k": cfg.algo.top_k,
            "algo.teacher_transfer": cfg.algo.teacher_transfer, "rollout.num_workers": r.num_workers,
            "rollout.tensor_parallel_size": r.tensor_parallel_size,
            "rollout.gpu_memory_utilization": r.gpu_memory_utilization, "rollout.overlap": r.overlap,
            "teacher.num_gpus": cfg.teacher.num_gpus, "teacher.micro_batch_size": cfg.teacher.micro_batch_size,
            "learner.num_ranks": lc.num_ranks, "learner.zero_stage": lc.zero_stage, "learner.offload": lc.offload,
            "learner.micro_batch_size": lc.micro_batch_size,
            "learner.gradient_checkpointing": lc.gradient_checkpointing, "placement.colocate": cfg.placement.colocate}


def model_preset(preset: str, asm: dict, layouts=LAYOUTS) -> dict:
    """Every candidate layout of ``preset`` on every GPU type, and the one proposed for each GPU type:
    the fastest that fits (its phases in sequence, as the presets run; None when none fits)."""
    base = compose(preset)
    w = workload(base)
    plan = transfer(base, w)
    dp = data_path_figures(int(base.algo.top_k))
    rows = []
    for name, overrides in layouts:
        cfg = compose(preset, overrides)
        rows.append({"name": name, "overrides": list(overrides), "config": config_summary(cfg),
                     "gpus": {g: evaluate(cfg, g, asm, dp, plan) for g in P.GPUS}})

    def step(row, gpu):  # phases in sequence, with the data path after issue 15 once it is measured
        e = row["gpus"][gpu]
        s = (e["step_after"] or e["step_before"])["sequential"]
        return math.inf if s is None else s

    fastest = {g: min((x for x in rows if x["gpus"][g]["fits"]), key=lambda x: step(x, g), default=None) for g in P.GPUS}
    return {"config": config_summary(base), "workload": w, "data_path": dp,
            "transfer": {"mode": plan.mode, "bytes_per_token": plan.bytes_per_token, "options": plan.options,
                         "tokens_per_step": plan.tokens_per_step, "line": plan.line},
            "params": {"student": P.params(dims(base.model.path)),
                       "teacher": P.params(dims(base.model.teacher_path or base.model.path))},
            "layouts": rows, "proposed": {g: None if x is None else x["name"] for g, x in fastest.items()}}


def build(presets=PRESETS, asm: dict | None = None) -> dict:
    """The whole JSON: inputs, assumptions, and per preset every layout's phases and memory."""
    asm = asm or P.assumption_values()
    return {"what": "scaling model: a calculation from configs, public model configs, GPU data sheets and the "
                    "assumptions below; nothing here is measured",
            "inputs": {"models": {k: {**vars(d), "params": P.params(d)} for k, d in P.MODELS.items()},
                       "gpus": {k: vars(g) for k, g in P.GPUS.items()},
                       "task_tokens": P.TASK_TOKENS, "default_task_tokens": P.DEFAULT_TOKENS,
                       "task_tokens_why": P.TASK_TOKENS_WHY},
            "assumptions": {k: {"value": asm[k], "unit": u, "why": why} for k, (_, u, why) in P.ASSUMPTIONS.items()},
            "layouts": [{"name": n, "overrides": o} for n, o in LAYOUTS],
            "presets": {p: model_preset(p, asm) for p in presets}}


def rounded(obj):
    """``obj`` with every float at 6 significant digits (a readable JSON; the figures carry no more)."""
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    data = rounded(build())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    for name, p in data["presets"].items():
        for g, chosen in p["proposed"].items():
            pick = next((x for x in p["layouts"] if x["name"] == chosen), None)
            s = pick["gpus"][g]["step_before"] if pick else None
            print(f"{name} on {g}: {chosen!r}" + (f", step {s['sequential']:.0f} s, dominant {s['dominant']}" if s else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
