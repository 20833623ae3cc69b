"""Teacher scoring: opcd's teacher actor vs a plain batched forward pass vs vLLM prompt log-probs.

    python benchmarks/bench_teacher.py [--model PATH] [--n 256] [--k 16]

All three produce top-k log-probs over every response position of n toy-world sequences
(context + prompt + response), with the same model and 2 torch threads:

* ``teacher_actor``: what the training loop calls, ``TeacherActor.score`` in its own Ray process, timed
  around ``ray.get`` (sending the sequences, the forward pass, returning the tensors);
* ``forward_pass``: ``opcd.teacher.scoring.score_responses`` in this process (log-softmax + top-k gather);
* ``vllm_prompt_logprobs``: vLLM's ``prompt_logprobs``, converted to the same tensor.

Prints tokens/s of each and the ratios (actor / forward pass: issue #5's >= 0.8x target; forward pass
/ vLLM: the measurement behind opcd's choice of the forward pass); writes JSON next to this file.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    from opcd.models.toy import DEFAULT_OUT

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(DEFAULT_OUT))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from vllm import SamplingParams

    from opcd.chat import encode_answer, encode_prompt
    from opcd.modeling import load_causal_lm, load_tokenizer
    from opcd.engine import make_llm
    from opcd.tasks.toy_world import generate
    from opcd.teacher.scoring import score_responses

    tok = load_tokenizer(args.model)
    recs = generate("test", n_per_rule=max(1, args.n // 24), seed=0)[:args.n]
    prompts = [encode_prompt(tok, r["prompt"], r["context"]) for r in recs]
    resp = [encode_answer(tok, r["answer"]) for r in recs]
    seqs = [p + a for p, a in zip(prompts, resp)]
    lens = [len(a) for a in resp]
    n_tokens = sum(map(len, seqs))

    llm = make_llm(args.model, "vllm_cpu", threads=2)  # sets torch threads to 2 before vLLM patches it
    model = load_causal_lm(args.model).eval()

    def run_hf():
        out = score_responses(model, seqs, lens, tok.pad_token_id, support="topk", k=args.k, micro_batch_size=64)
        return out["logprobs"]

    def run_vllm():
        outs = llm.generate([{"prompt_token_ids": s} for s in seqs],
                            SamplingParams(max_tokens=1, prompt_logprobs=args.k), use_tqdm=False)
        # Same product as the forward pass: a [B, T, k] tensor of top-k log-probs per response position.
        T = max(lens)
        res = torch.zeros(len(seqs), T, args.k)
        for b, (s, n, o) in enumerate(zip(seqs, lens, outs)):
            for t, pos in enumerate(range(len(s) - n, len(s))):
                top = sorted((d.rank, d.logprob) for d in o.prompt_logprobs[pos].values() if d.rank <= args.k)
                res[b, t, :len(top)] = torch.tensor([lp for _, lp in top])
        return res

    import ray

    from opcd.teacher.actor import TeacherActor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    actor = ray.remote(TeacherActor).options(num_cpus=1).remote(args.model, "float32", "cpu", 2, 64, {})

    def run_actor():
        return ray.get(actor.score.remote(seqs, lens, "topk", args.k, 1.0))["logprobs"]

    timings = {}
    for name, fn in [("teacher_actor", run_actor), ("forward_pass", run_hf), ("vllm_prompt_logprobs", run_vllm)]:
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = {"seconds": best, "tokens_per_s": n_tokens / best}
    ratio = timings["forward_pass"]["tokens_per_s"] / timings["vllm_prompt_logprobs"]["tokens_per_s"]
    print(f"{'method':<24}{'seconds':>10}{'tokens/s':>12}")
    for name, t in timings.items():
        print(f"{name:<24}{t['seconds']:>10.3f}{t['tokens_per_s']:>12.0f}")
    ray.shutdown()
    actor_ratio = timings["teacher_actor"]["tokens_per_s"] / timings["forward_pass"]["tokens_per_s"]
    print(f"teacher actor / plain forward pass throughput ratio: {actor_ratio:.2f}x (target >= 0.8x)")
    print(f"forward pass / vLLM prompt log-probs throughput ratio: {ratio:.2f}x  "
          f"({len(seqs)} sequences, {n_tokens} tokens, top-{args.k})")
    out = Path(__file__).with_name("results") / "teacher_scoring.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "n": len(seqs), "tokens": n_tokens, "k": args.k,
                               "timings": timings, "actor_over_forward": actor_ratio,
                               "forward_over_vllm": ratio}, indent=2))


if __name__ == "__main__":
    main()
