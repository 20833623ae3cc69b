"""The training loop: rollout -> teacher score -> learn -> sync -> evaluate / log / checkpoint."""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from opcd.actors import start_actors, stop_actors
from opcd.batch import build_learn_batch, pad_3d, response_mask
from opcd.chat import encode_prompt
from opcd.checkpoint import find_resume_checkpoint, load_state, remove_partial, truncate_jsonl, write_checkpoint
from opcd.learner.actor import merge_rank_stats
from opcd.learner.objective import TEACHER_SUPPORT
from opcd.eval.metrics import Result, accuracies, paired, topk_agreement_kl
from opcd.modeling import check_same_tokenizer, load_tokenizer
from opcd.recovery import Supervisor
from opcd.rollout.episodes import run_episodes
from opcd.rollout.worker import generate_on
from opcd.sync import WeightSync
from opcd.tasks import load_task
from opcd.tasks.records import check_lengths
from opcd.tracking import Tracker

# Share of each step's responses sampled by the student (the rest by the teacher); gkd: algo.gkd_lambda;
# icl trains nothing (it is the teacher with its context, evaluated; the value is unused).
STUDENT_SAMPLES = {"opcd": 1.0, "opcd_nca": 1.0, "offpolicy_cd": 0.0, "sft": 0.0, "icl": 1.0}


class NonFiniteLossError(RuntimeError):
    pass


def count_nonfinite(streak: int, nonfinite: bool, step: int, limit: int) -> int:
    """The new count of consecutive skipped (NaN/inf) steps; raises once it reaches ``limit``.

    The learner already skipped the update, so nothing corrupt reaches the weights; raising here
    (before the step's checkpoint) means no checkpoint is written from a diverging run either.
    """
    if not nonfinite:
        return 0
    streak += 1
    print(f"[opcd] step {step}: non-finite loss, update skipped ({streak} in a row)", flush=True)
    if streak >= limit:
        raise NonFiniteLossError(f"{streak} consecutive non-finite losses at step {step}; lower algo.lr, "
                                 "check the data, or raise algo.max_nonfinite_steps")
    return streak


def render(tok, records, with_context: bool) -> list[list[int]]:
    return [encode_prompt(tok, r["prompt"], r["context"] if with_context else "") for r in records]


def respond(actors, task, tok, records: list[dict], prompts: list[list[int]], sampling: dict, seed: int | None = None,
            timeout: float | None = None, *, teacher: bool = False, room: list[int] | None = None,
            max_len: int = 0) -> list:
    """Responses to ``prompts`` (``records[i]`` rendered) from the student engines, or from the teacher's
    engine with ``teacher``: ``sampling['n']`` Samples per prompt, prompt-major. Multi-turn tasks play
    one episode per sample instead (``opcd.rollout.episodes``); ``room[i]`` tokens may follow prompt i
    (default: ``max_len - len(prompts[i])``)."""
    import ray

    def gen(ps, sp, s):
        if teacher:
            return ray.get(actors.teacher.sample.remote(ps, s, **sp), timeout=timeout)
        return generate_on(actors.workers, ps, sp, s, timeout)

    if task.make_env is None:
        return gen(prompts, sampling, seed)
    n = sampling.get("n", 1)
    room = room or [max_len - len(p) for p in prompts]
    rep = [i for i in range(len(prompts)) for _ in range(n)]
    # Each turn is seeded on its own, so an episode batch is a function of (weights, prompts, seed).
    return run_episodes(lambda ps, turn: gen(ps, {**sampling, "n": 1}, None if seed is None else seed + 7919 * turn),
                        tok, [records[i] for i in rep], [prompts[i] for i in rep], task.make_env, task.max_turns,
                        [room[i] for i in rep], sampling["max_tokens"])


def evaluate(actors, tok, task, max_tokens: int, max_len: int, timeout: float | None = None) -> dict[str, float]:
    """Greedy decoding through the rollout engines; accuracy per group and context kind, plus
    Harm / BothCorrect / Δlen over the prompts asked both with and without context (opcd.eval.metrics)."""
    if not task.eval:
        return {}
    samples = respond(actors, task, tok, task.eval, render(tok, task.eval, True),
                      {"temperature": 0.0, "max_tokens": max_tokens}, timeout=timeout, max_len=max_len)
    results = [Result(rec, task.verify(s.text, rec), s.policy_tokens)
               for rec, s in zip(task.eval, samples)]
    return {**accuracies(results), **paired(results)}


def agreement(actors, tok, task, top_k: int, max_tokens: int, max_len: int,
              timeout: float | None = None) -> dict[str, float]:
    """Teacher-student agreement on a fixed set: the student answers each context-bearing record of
    the distilled behaviour (group other than ``other``) greedily *without* its context; the teacher
    scores that answer *with* it; mean per-token KL(student || teacher) over the student's top-k (nats)."""
    import ray

    recs = [r for r in task.eval if r["context"] and r["metadata"].get("group") != "other"]
    if not recs:
        return {}
    with_ctx = render(tok, recs, True)
    samples = respond(actors, task, tok, recs, render(tok, recs, False),
                      {"temperature": 0.0, "max_tokens": max_tokens, "top_k_logprobs": top_k}, timeout=timeout,
                      room=[max_len - len(c) for c in with_ctx])
    T = max(len(s.response_ids) for s in samples)
    if T == 0:
        return {}
    support = pad_3d([s.topk_ids for s in samples], T, top_k, 0, torch.long)
    seqs = [c + s.response_ids for c, s in zip(with_ctx, samples)]
    lens = [len(s.response_ids) for s in samples]
    scores = ray.get(actors.teacher.score.remote(seqs, lens, support, top_k, 1.0), timeout=timeout)
    student = pad_3d([s.topk_logprobs for s in samples], T, top_k, -1e9, torch.float32)
    return {"eval/agreement_kl": topk_agreement_kl(student, scores["logprobs"][:, :T], response_mask(samples, T))}


@dataclass
class Prepared:
    """Everything the loop needs before any actor starts; building it surfaces every input error."""

    tok: object  # the student's tokenizer (the teacher's is checked to be identical)
    teacher_path: str  # teacher model directory
    task: object  # TaskData: train/eval records and the verifier
    train_recs: list[dict]  # training records that fit the model
    student_prompts: list[list[int]]  # what the student is asked (no context, except retain records)
    context_prompts: list[list[int]]  # what the teacher sees (with context)
    p_student: float  # probability that a step's responses come from the student (on-policy)


def prepare(cfg) -> Prepared:
    algo = cfg.algo
    tok = load_tokenizer(cfg.model.path)
    teacher_path = cfg.model.teacher_path or cfg.model.path
    if teacher_path != cfg.model.path:
        check_same_tokenizer(tok, load_tokenizer(teacher_path), cfg.model.path, teacher_path)
    if not algo.temperature > 0 or cfg.rollout.temperature < 0:
        raise ValueError(f"algo.temperature must be > 0 (got {algo.temperature}) and rollout.temperature >= 0 "
                         f"(got {cfg.rollout.temperature})")
    if algo.nca_beta < 0 or algo.nca_warmup_steps < 0:
        raise ValueError(f"algo.nca_beta and algo.nca_warmup_steps must be >= 0 (got {algo.nca_beta} and "
                         f"{algo.nca_warmup_steps}); nca_beta=0 turns the regulariser off")
    if algo.loss not in TEACHER_SUPPORT:
        raise ValueError(f"unknown algo.loss {algo.loss!r}; expected one of {sorted(TEACHER_SUPPORT)}")
    p_student = algo.gkd_lambda if algo.name == "gkd" else STUDENT_SAMPLES.get(algo.name)
    if p_student is None:
        raise ValueError(f"unknown algo.name {algo.name!r}; expected opcd, opcd_nca, offpolicy_cd, gkd, sft or icl")
    if cfg.rollout.overlap and cfg.placement.colocate:
        raise ValueError("rollout.overlap=true needs the engines awake while the learner trains, but "
                         "placement.colocate=true puts them to sleep; set one of them to false")
    if TEACHER_SUPPORT[algo.loss] == "student_topk" and p_student < 1.0:
        raise ValueError(f"algo.loss={algo.loss} needs student rollouts (the student's top-k), but algo "
                         f"{algo.name} samples from the teacher; use loss=forward_kl, jsd or nll")
    task = load_task(cfg.task)
    limit = cfg.model.max_model_len - cfg.rollout.max_tokens
    train_recs = check_lengths(task.train, [len(p) for p in render(tok, task.train, True)], limit,
                               cfg.task.too_long, "training")
    context_prompts = render(tok, train_recs, True)
    # The student never sees the context, except on retain records (metadata.retain), which anchor
    # behaviour that must survive distillation.
    student_prompts = [c if r["metadata"].get("retain") else p
                       for r, p, c in zip(train_recs, render(tok, train_recs, False), context_prompts)]
    return Prepared(tok, teacher_path, task, train_recs, student_prompts, context_prompts, p_student)


def step_seed(cfg, step: int) -> int:
    """Sampling seed of ``step`` (0-based): rollouts depend on (weights, prompts, seed) only, so a run
    resumed from a checkpoint samples exactly what the uninterrupted run would have."""
    return (cfg.rollout.seed * 100_003 + step * 101) % 2**31


def train(cfg, config_dict: dict) -> dict:
    """Run ``cfg.steps`` steps of ``cfg.algo``; returns the final evaluation metrics."""
    import ray

    out = Path(cfg.output_dir)
    prep = prepare(cfg)
    ckpt = find_resume_checkpoint(cfg.resume, out)
    state = load_state(ckpt, config_dict) if ckpt else None  # refuses a changed config before any actor starts
    # --- actors ---
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
    batch_size = cfg.prompts_per_step * cfg.rollout.n
    actors = start_actors(cfg, prep.teacher_path, batch_size)
    try:
        return run(cfg, config_dict, prep, actors, ckpt, state)
    finally:
        stop_actors(actors)  # frees the cluster's resources, also when Ray outlives this run


def run(cfg, config_dict: dict, prep: Prepared, actors, ckpt, state) -> dict:
    """The loop itself, on started actors, from a fresh start or from checkpoint ``ckpt`` (``state``)."""
    import ray
    from tqdm import tqdm

    out = Path(cfg.output_dir)
    algo, ro = cfg.algo, cfg.rollout
    tok, task, train_recs = prep.tok, prep.task, prep.train_recs
    student_prompts, context_prompts, p_student = prep.student_prompts, prep.context_prompts, prep.p_student
    # Tokens a (multi-turn) response may take so that both the student's and the teacher's view fit.
    room = [cfg.model.max_model_len - max(len(a), len(b)) for a, b in zip(student_prompts, context_prompts)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "actors.json").write_text(json.dumps(actors.pids))
    remove_partial(out)

    weights = WeightSync(cfg.sync, cfg.learner.device, actors.learners, actors.workers)
    # With rollout.overlap the prefetch thread may restart an engine and resync while the main thread
    # pushes: one push at a time, or two broadcasts would interleave on the same process group.
    push_lock = threading.Lock()

    def sync_all() -> dict:
        with push_lock:
            return weights.push()

    def resync() -> dict:  # after an engine restart: a fresh broadcast group, then the weights
        with push_lock:
            weights.reset()
            return weights.push()

    sup = Supervisor(actors, cfg.actor_timeout_s, cfg.max_actor_failures, resync)
    rng = random.Random(cfg.seed)  # data order and the on-/off-policy coin of GKD
    order: list[int] = []  # prompt indices left in the current epoch
    start, nonfinite_streak = 0, 0
    if state is not None:
        ray.get([lr.load_state.remote(str(ckpt / "deepspeed")) for lr in actors.learners])
        sup.call("weight sync", lambda _: sync_all())
        start, order, nonfinite_streak = state["step"], state["order"], state["nonfinite_streak"]
        rng.setstate((state["rng"][0], tuple(state["rng"][1]), state["rng"][2]))
        for log in ("metrics.jsonl", "prompts.jsonl"):
            truncate_jsonl(out / log, start)  # the crashed run's steps after the checkpoint are redone
        print(f"[opcd] resumed from {ckpt} at step {start} of {cfg.steps}", flush=True)
    tracker = Tracker(cfg, out, config_dict, run_id=state and state.get("run_id"))

    def run_eval() -> dict[str, float]:
        return sup.call("evaluation", lambda t: {
            **evaluate(actors, tok, task, ro.max_tokens, cfg.model.max_model_len, t),
            **agreement(actors, tok, task, algo.top_k, ro.max_tokens, cfg.model.max_model_len, t)})

    # The experience text in use (task.experience_file) travels with every checkpoint.
    experience = Path(cfg.task.experience_file).read_text() if cfg.task.experience_file else None

    def save(step: int) -> None:
        def write_model(tmp: Path) -> None:
            ray.get([lr.save_hf.remote(str(tmp), cfg.model.path) for lr in actors.learners])
            ray.get([lr.save_state.remote(str(tmp / "deepspeed")) for lr in actors.learners])

        # A prefetched next batch is not saved: the resumed run draws it again (same prompts, same seed).
        left, rng_state = pending[2] if pending else (order, rng.getstate())
        write_checkpoint(out, step, {"step": step, "order": left, "rng": rng_state, "run_id": tracker.run_id,
                                     "nonfinite_streak": nonfinite_streak, "experience": experience},
                         config_dict, write_model, cfg.keep_checkpoints)

    # Only the OPCD reverse KL needs the student's top-k from the engine; the rest need the sampled token's.
    student_topk = TEACHER_SUPPORT[algo.loss] == "student_topk"
    sampling = {"temperature": ro.temperature, "top_p": ro.top_p, "max_tokens": ro.max_tokens, "n": ro.n,
                "top_k_logprobs": algo.top_k if student_topk else 1}
    steps = 0 if algo.name == "icl" else cfg.steps  # icl: the in-context baseline is evaluated, not trained
    final: dict[str, float] = run_eval() if start >= steps else {}
    if state is None:
        tracker.log(final or run_eval(), step=0)

    def draw() -> tuple[list[int], bool]:
        """The next step's prompts (epoch-wise shuffled: none repeats before every one was used) and
        whether the student answers them (else the teacher, for off-policy baselines)."""
        nonlocal order
        while len(order) < cfg.prompts_per_step:
            perm = list(range(len(train_recs)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:cfg.prompts_per_step], order[cfg.prompts_per_step:]
        return idx, rng.random() < p_student

    def make_batch(step: int, idx: list[int], on_policy: bool, rolled=None) -> dict:
        """Phases 1-2 of ``step``: rollout, then teacher scoring; ``rolled`` (an Event) is set in between."""
        # 1. rollout: the student (without context) or, for off-policy baselines, the teacher (with it)
        t0 = time.perf_counter()
        prompts = student_prompts if on_policy else context_prompts
        try:
            samples = sup.call("rollout" if on_policy else "teacher sampling", lambda t: respond(
                actors, task, tok, [train_recs[i] for i in idx], [prompts[i] for i in idx], sampling,
                step_seed(cfg, step), t, teacher=not on_policy, room=[room[i] for i in idx]))
        finally:  # also on failure: the main thread waits for this, then meets the error in .result()
            if rolled is not None:
                rolled.set()
        t_roll = time.perf_counter() - t0
        rep = [i for i in idx for _ in range(ro.n)]
        # 2. teacher scores the same responses with the context prepended
        support = TEACHER_SUPPORT[algo.loss]
        if student_topk:
            T = max(len(s.response_ids) for s in samples)
            support = pad_3d([s.topk_ids for s in samples], T, algo.top_k, 0, torch.long)
        ctx_seqs = [context_prompts[i] + s.response_ids for i, s in zip(rep, samples)]
        scores = sup.call("teacher scoring", lambda t: ray.get(actors.teacher.score.remote(
            ctx_seqs, [len(s.response_ids) for s in samples], support, algo.top_k, algo.temperature), timeout=t))
        batch = build_learn_batch(samples, [student_prompts[i] for i in rep], [context_prompts[i] for i in rep],
                                  scores)
        tokens = sum(s.policy_tokens for s in samples)
        return {"idx": idx, "batch": batch, "metrics": {
            "rollout/seconds": t_roll, "rollout/tokens_per_s": tokens / t_roll,
            "rollout/response_len": tokens / len(samples), "rollout/on_policy": float(on_policy),
            "teacher/seconds": scores["seconds"], "teacher/tokens_per_s": sum(map(len, ctx_seqs)) / scores["seconds"]}}

    # rollout.overlap (one-step off-policy): step t+1's rollout and scoring run in a background thread
    # while the learner trains on step t, so they sample from the weights one update behind.
    pool = ThreadPoolExecutor(1, thread_name_prefix="opcd-prefetch") if ro.overlap else None
    pending = None  # (future of make_batch, Event set once its rollout is done, order + rng before its draw)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"opcd[{algo.name}]", unit="step")
    for step in bar:
        t_step = time.perf_counter()
        made = pending[0].result() if pending else make_batch(step, *draw())
        pending = None
        if pool is not None and step + 1 < steps:
            before = (list(order), rng.getstate())
            rolled = threading.Event()
            pending = (pool.submit(make_batch, step + 1, *draw(), rolled), rolled, before)
        # 3. learn: one optimizer step over the batch (each rank takes its shard)
        batch = made["batch"]
        if cfg.placement.colocate:  # the engines hand their GPU memory to the learner ranks beside them
            ray.get([w.sleep.remote() for w in actors.workers])
        stats = merge_rank_stats(sup.learner_call(lambda: ray.get([lr.train_step.remote(batch)
                                                                   for lr in actors.learners])))
        if cfg.placement.colocate:
            ray.get([w.wake_up.remote() for w in actors.workers])
        if pending:  # the prefetched rollout must not see this step's weights: exactly one step behind
            pending[1].wait()
        nonfinite_streak = count_nonfinite(nonfinite_streak, bool(stats["nonfinite"]), step + 1,
                                           algo.max_nonfinite_steps)
        # 4. sync the new weights into every engine
        sync = sup.call("weight sync", lambda _: sync_all()) if (step + 1) % cfg.sync_every == 0 else {}
        # 5. evaluate, log, checkpoint
        metrics = {**stats, **sync, **made["metrics"],
                   "learner/tokens_per_s": stats["learner/tokens"] / stats["learner/seconds"],
                   "faults/actor_failures": sup.failures, "step/seconds": time.perf_counter() - t_step}
        last = step + 1 == steps
        if last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            if not sync:
                metrics.update(sup.call("weight sync", lambda _: sync_all()))
            final = run_eval()
            metrics.update(final)
        tracker.log(metrics, step=step + 1)
        with (out / "prompts.jsonl").open("a") as f:  # the data order, auditable across resumes
            f.write(json.dumps({"step": step + 1, "prompts": made["idx"]}) + "\n")
        bar.set_postfix(loss=f"{stats.get('loss/total', float('nan')):.4f}",
                        **{k.split("/", 1)[1]: f"{v:.2f}" for k, v in final.items() if "distilled" in k})
        if last or (cfg.save_every and (step + 1) % cfg.save_every == 0):
            save(step + 1)
    if pool is not None:
        pool.shutdown()
    (out / "final_metrics.json").write_text(json.dumps(final, indent=2))
    tracker.finish()
    return final
