"""fp32 against bf16 on this machine: the measurement behind ``model.dtype=auto`` (opcd/hardware.py).

    python benchmarks/bench_dtype.py [--models toy,smollm2] [--phases engine,teacher,learner] [--repeats 5]

For each model and phase, one subprocess holds both an fp32 and a bf16 version and times them
alternately, ``--repeats`` times each after a warm-up, with 2 torch threads:

* ``engine``: two vLLM-CPU engines (``opcd.engine.make_llm``, in-process) generating 8 prompts x 64
  tokens (``ignore_eos``): generated tokens/s;
* ``teacher``: a no-grad forward pass (log-softmax included) over 4 sequences of 128 tokens, the
  weights loaded in the dtype: tokens/s;
* ``learner``: forward + backward over the same batch with fp32 weights, plain (fp32) or under
  ``torch.autocast("cpu", bfloat16)`` (what ``learner.precision=auto`` does on a bf16 CPU): tokens/s.

The machine may be shared with other jobs, whose load swings a single timing by several times. So
each row keeps every timing, and ``speedup`` (bf16 over fp32, > 1: bf16 faster) is the ratio of the
*best* rates (the runs least disturbed by others); ``speedup_median`` and the CPU time per token
(``cpu_ms_per_token``, process CPU seconds: less sensitive to waiting for a core) are kept beside it.
Writes ``benchmarks/results/dtype_choice.json`` with the CPU model, its bf16-relevant flags, the load
averages and the choice ``opcd.hardware.choose_dtype`` makes here; tests/test_hardware.py checks the
rule against it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "dtype_choice.json"
PROMPTS, NEW_TOKENS = 8, 64  # the engine job (issue 20's raw-engine comparison)
BATCH, SEQ = 4, 128  # the teacher / learner job
THREADS = 2
DTYPES = ("float32", "bfloat16")


def model_path(name: str) -> str:
    if name == "toy":
        from opcd.models.toy import DEFAULT_OUT

        return str(DEFAULT_OUT)
    if name == "smollm2":
        from opcd.models.smollm2 import DEFAULT_OUT

        return str(DEFAULT_OUT)
    return name


def alternate(step, repeats: int, tokens: int) -> dict:
    """Time ``step(dtype)`` for both dtypes, alternating (order flipped every round), after a warm-up.

    Returns ``{dtype: {"tokens_per_s": [...], "cpu_ms_per_token": [...]}}``.
    """
    out = {d: {"tokens_per_s": [], "cpu_ms_per_token": []} for d in DTYPES}
    for d in DTYPES:
        step(d)  # warm-up
    for i in range(repeats):
        for d in (DTYPES if i % 2 == 0 else DTYPES[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            n = step(d) or tokens
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out[d]["tokens_per_s"].append(round(n / wall, 2))
            out[d]["cpu_ms_per_token"].append(round(1000 * cpu / n, 3))
    return out


def child_engine(path: str, repeats: int) -> dict:
    from vllm import SamplingParams

    from opcd.engine import make_llm

    llms = {d: make_llm(path, "vllm_cpu", dtype=d, threads=THREADS, max_model_len=256) for d in DTYPES}
    prompts = [{"prompt_token_ids": [10 + (i * 7 + j) % 40 for j in range(16 + i)]} for i in range(PROMPTS)]
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True)

    def step(d: str) -> int:
        outs = llms[d].generate(prompts, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    return alternate(step, repeats, PROMPTS * NEW_TOKENS)


def child_torch(path: str, phase: str, repeats: int) -> dict:
    import torch

    from opcd.modeling import load_causal_lm

    torch.set_num_threads(THREADS)
    fp32 = load_causal_lm(path, "float32").train(phase == "learner")
    # The teacher loads its weights in the dtype; the learner keeps fp32 weights and autocasts.
    models = {"float32": fp32, "bfloat16": load_causal_lm(path, "bfloat16").eval() if phase == "teacher" else fp32}
    vocab = fp32.config.vocab_size
    ids = torch.randint(6, min(vocab, 60), (BATCH, SEQ), generator=torch.Generator().manual_seed(0))

    def step(d: str) -> None:
        model = models[d]
        if phase == "teacher":
            with torch.no_grad():
                model(input_ids=ids).logits.float().log_softmax(-1)
            return
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=d == "bfloat16"):
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)

    return alternate(step, repeats, BATCH * SEQ)


def run_child(phase: str, path: str, repeats: int) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "ERROR"}
    p = subprocess.run([sys.executable, __file__, "--child", phase, path, str(repeats)], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"bench child {phase} {path} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def summarise(name: str, phase: str, runs: dict) -> dict:
    best = {d: max(runs[d]["tokens_per_s"]) for d in DTYPES}
    med = {d: statistics.median(runs[d]["tokens_per_s"]) for d in DTYPES}
    cpu = {d: statistics.median(runs[d]["cpu_ms_per_token"]) for d in DTYPES}
    return {"model": name, "phase": phase,
            "fp32_best_tokens_per_s": best["float32"], "bf16_best_tokens_per_s": best["bfloat16"],
            "speedup": round(best["bfloat16"] / best["float32"], 3),
            "speedup_median": round(med["bfloat16"] / med["float32"], 3),
            "fp32_cpu_ms_per_token": cpu["float32"], "bf16_cpu_ms_per_token": cpu["bfloat16"],
            "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="toy,smollm2")
    ap.add_argument("--phases", default="engine,teacher,learner")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", nargs=3, metavar=("PHASE", "MODEL", "REPEATS"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.child:
        phase, path, repeats = args.child
        out = child_engine(path, int(repeats)) if phase == "engine" else child_torch(path, phase, int(repeats))
        print(json.dumps(out))
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks.common.machine import environment, loadavg
    from opcd.hardware import AMX, AVX512_BF16, choose_dtype, cpu_flags, cpu_model

    flags, rows, load0 = cpu_flags(), [], loadavg()

    def write() -> dict:
        result = {
            "what": f"fp32 vs bf16 per phase, {THREADS} torch threads, both dtypes in one process, {args.repeats} "
                    f"alternating timed runs each after a warm-up; engine: vLLM-CPU, {PROMPTS} prompts x "
                    f"{NEW_TOKENS} generated tokens; teacher: no-grad forward, weights in the dtype; learner: "
                    f"forward+backward, fp32 weights, bf16 = autocast; {BATCH} x {SEQ} tokens. speedup = best bf16 "
                    "rate / best fp32 rate (> 1: bf16 faster)",
            "machine": {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
                        "bf16_flags": sorted(f for f in flags if f in (*AMX, AVX512_BF16)),
                        "loadavg_1min_at_start": round(load0, 2), "loadavg_1min_at_end": round(loadavg(), 2),
                        "shared": "other jobs ran on this machine (see the load averages): single timings "
                                  "swing by several times; compare best rates, not one run"},
            "environment": environment(),
            "rows": rows,
            "auto_choice_here": {ph: choose_dtype("auto", ph, flags) for ph in ("engine", "teacher", "learner")},
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return result

    for name in args.models.split(","):
        for phase in args.phases.split(","):
            row = summarise(name, phase, run_child(phase, model_path(name), args.repeats))
            rows.append(row)
            print(f"{name:<9}{phase:<9} best fp32 {row['fp32_best_tokens_per_s']:>8.1f} tok/s  bf16 "
                  f"{row['bf16_best_tokens_per_s']:>8.1f} tok/s  bf16/fp32 {row['speedup']:.2f}x (median "
                  f"{row['speedup_median']:.2f}x; cpu ms/token fp32 {row['fp32_cpu_ms_per_token']:.2f}, bf16 "
                  f"{row['bf16_cpu_ms_per_token']:.2f})", flush=True)
            write()  # a long run on a busy machine loses nothing when stopped
    result = write()
    print(f"wrote {args.out}; auto here: {result['auto_choice_here']}")


if __name__ == "__main__":
    main()
