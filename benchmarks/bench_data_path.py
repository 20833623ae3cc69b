"""The rollout's data path: what asking vLLM for the student's top-k costs, through to learner-ready tensors.

    python -m benchmarks.bench_data_path [--prompts 16] [--tokens 1024] [--ks 16 256]

SmolLM2-135M-Instruct on one in-process vLLM-CPU engine, ``--prompts`` prompts x ``--tokens`` new
tokens each (``ignore_eos``: every response has its full length), temperature 1, the engine seeded
before every call so every variant samples the same tokens. For each k it times:

- ``after``: opcd's path now -- vLLM's flat log-prob layout, no detokenising of the k candidates,
  one vectorised conversion per response (``opcd.engine.flat_topk``), row-wise padding into
  [B, T, k] tensors (``opcd.batch.pad_3d``);
- ``before``: the path opcd had -- per-position ``{id: Logprob}`` dicts with decoded strings, a
  Python sort per position, lists, and padding one token at a time;

against the same generation with no log-probs at all (k = 0). ``k256_over_k0`` is the issue's
target (<= 1.10). It also reports the conversion's microseconds per token, its peak Python/numpy
allocation (tracemalloc), the pickled size and time of the batch as Ray would ship it, and the
teacher's bytes per token for the SmolLM2 presets. Writes ``benchmarks/results/data_path.json``.
"""
from __future__ import annotations

import argparse
import os
import pickle
import time
import tracemalloc
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "data_path.json"
PROMPTS = ["Tell me a long story about a lighthouse keeper.", "Explain how rainbows form, in detail.",
           "Write a letter to a friend about your holiday.", "Describe the history of the bicycle.",
           "What should I pack for a week of hiking?", "Give me a recipe for vegetable soup.",
           "Explain the rules of chess to a beginner.", "Write a poem about the sea, then explain it.",
           "How do airplanes stay in the air?", "Describe a day in the life of a baker.",
           "What are the benefits of learning a second language?", "Summarise the plot of a mystery novel you invent.",
           "Explain photosynthesis to a ten-year-old.", "Write a product review for a new umbrella.",
           "Plan a birthday party for a seven-year-old.", "Describe the city of the future."]


def legacy_pad_3d(rows, T: int, k: int, fill: float, dtype):
    """opcd's padding before this change: nested lists, one small tensor per token."""
    import torch

    out = torch.full((len(rows), T, k), fill, dtype=dtype)
    for b, r in enumerate(rows):
        for t, v in enumerate(r):
            out[b, t, :len(v)] = torch.tensor(v, dtype=dtype)
    return out


def learner_ready(samples, k: int, legacy: bool):
    """The rollout's contribution to a learner batch: [B, T, k] top-k ids and log-probs, [B, T] log-probs."""
    import torch

    from opcd.batch import pad_2d, pad_3d

    T = max(len(s.response_ids) for s in samples)
    if legacy:  # the old Sample held nested lists
        ids = [s.topk_ids.tolist() for s in samples]
        lps = [s.topk_logprobs.tolist() for s in samples]
        return legacy_pad_3d(ids, T, k, 0, torch.long), legacy_pad_3d(lps, T, k, -1e9, torch.float32)
    return (pad_3d([s.topk_ids for s in samples], T, k, 0, torch.long),
            pad_3d([s.topk_logprobs for s in samples], T, k, -1e9, torch.float32),
            pad_2d([s.logprobs for s in samples], T, 0.0, torch.float32))


def run_variant(llm, prompts, tokens: int, k: int, flat: bool) -> dict:
    """Generation + conversion + padding for one variant; times each part."""
    from opcd.engine import sample, seed_engine

    seed_engine(llm, 0)
    tracemalloc.start()
    t0 = time.perf_counter()
    samples = sample(llm, prompts, temperature=1.0, max_tokens=tokens, top_k_logprobs=k, ignore_eos=True, flat=flat)
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    if k:
        learner_ready(samples, k, legacy=not flat)
    t_pad = time.perf_counter() - t1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_tok = sum(len(s.response_ids) for s in samples)
    shipped = samples if flat else [dict(ids=s.response_ids, lp=s.logprobs.tolist(), top=s.topk_ids.tolist(),
                                         tlp=s.topk_logprobs.tolist()) for s in samples]
    t2 = time.perf_counter()
    blob = pickle.dumps(shipped, protocol=5)
    pickle.loads(blob)
    t_ser = time.perf_counter() - t2
    return {"k": k, "path": "after" if flat else "before", "tokens": n_tok, "generate_s": t_gen, "pad_s": t_pad,
            "total_s": t_gen + t_pad, "peak_alloc_mb": peak / 2**20, "pickled_mb": len(blob) / 2**20,
            "pickle_roundtrip_s": t_ser}


def teacher_bytes() -> dict:
    """Teacher transfer per response token for the SmolLM2 runs: log-probs at the student's top-k
    (k x (4 + 8) bytes: float32 + int64 id), full-vocabulary log-probs (V x 4), hidden states (d x 4)."""
    V, d = 49152, 576
    return {"topk16_logprobs": 16 * 12, "topk256_logprobs": 256 * 12, "full_vocab_logprobs": V * 4,
            "hidden_states_fp32": d * 4, "hidden_states_bf16": d * 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--ks", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    from benchmarks.common.machine import environment
    from benchmarks.common.report import write_json
    from opcd.chat import encode_prompt
    from opcd.engine import make_llm
    from opcd.modeling import load_tokenizer
    from opcd.models.smollm2 import DEFAULT_OUT

    model = str(DEFAULT_OUT)
    if not Path(model, "config.json").exists():
        raise SystemExit(f"bench_data_path: no converted SmolLM2 at {model}; run `python -m opcd.models.smollm2` first")
    tok = load_tokenizer(model)
    prompts = [encode_prompt(tok, p) for p in (PROMPTS * 4)[:args.prompts]]
    llm = make_llm(model, "vllm_cpu", threads=args.threads, max_model_len=max(map(len, prompts)) + args.tokens + 8,
                   max_logprobs=max(args.ks), kv_cache_gb=2)
    run_variant(llm, prompts[:2], 16, 0, True)  # warm-up
    rows = [run_variant(llm, prompts, args.tokens, 0, True)]
    for k in args.ks:
        for flat in (True, False):
            rows.append(run_variant(llm, prompts, args.tokens, k, flat))
            print({key: round(v, 3) if isinstance(v, float) else v for key, v in rows[-1].items()}, flush=True)
    base = rows[0]["total_s"]
    summary = {}
    for r in rows[1:]:
        tag = f"k{r['k']}_over_k0" + ("" if r["path"] == "after" else "_before")
        summary[tag] = r["total_s"] / base
        # the conversion: everything the path adds beyond generating the tokens, per response token
        summary[f"k{r['k']}_{r['path']}_us_per_token"] = 1e6 * (r["total_s"] - base) / r["tokens"]
    out = {"setup": {"model": "SmolLM2-135M-Instruct", "engine": "vllm-cpu, in-process, float32", **vars(args),
                     "out": str(args.out)},
           "machine": environment(), "rows": rows, "summary": summary, "target": {"k256_over_k0": 1.10},
           "teacher_bytes_per_token": teacher_bytes()}
    out["summary"]["met_k256"] = summary.get("k256_over_k0", 99) <= 1.10
    write_json(args.out, out)
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    main()
