"""Rollout: opcd's rollout phase (Ray actors + vLLM + result collection) vs vLLM ``generate`` directly.

    python benchmarks/bench_rollout.py [--n 256]

Same prompts (toy-world queries without context), same sampling (temperature 1, 32 tokens, top-16
log-probs) and the same total CPU threads (2): direct = one in-process engine with 2 threads;
opcd = ``generate_on`` over 2 RolloutWorker actors with 1 thread each, including conversion of
vLLM outputs into ``Sample`` objects and the transfer back to the driver. Reports response tokens/s
of each (best of 3 after a warm-up) and the ratio. Writes ``benchmarks/results/rollout.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def best_of(fn, repeats: int) -> tuple[float, int]:
    fn()
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = fn()
        best = min(best, time.perf_counter() - t0)
    return best, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256, help="prompts")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ray
    from omegaconf import OmegaConf
    from vllm import SamplingParams

    from opcd.chat import encode_prompt
    from opcd.config import TrainConfig
    from opcd.modeling import load_tokenizer
    from opcd.engine import engine_env, engine_kwargs, make_llm
    from opcd.rollout.worker import RolloutWorker, generate_on
    from opcd.models.toy import DEFAULT_OUT
    from opcd.tasks.toy_world import generate

    model = str(DEFAULT_OUT)
    tok = load_tokenizer(model)
    recs = generate("test", n_per_rule=args.n // 8, context_kinds=("none",), seed=0)[:args.n]
    prompts = [encode_prompt(tok, r["prompt"]) for r in recs]
    sampling = {"temperature": 1.0, "max_tokens": 32, "top_k_logprobs": 16}

    cfg = OmegaConf.structured(TrainConfig())
    ray.init(include_dashboard=False, log_to_driver=False)
    env = {"env_vars": engine_env("vllm_cpu", 1, 1)}
    kw = [engine_kwargs(cfg.model, cfg.rollout, seed_offset=i, top_k=16) for i in range(2)]
    workers = [ray.remote(RolloutWorker).options(num_cpus=0.5, runtime_env=env).remote(model, kw[i])
               for i in range(2)]
    ray.get([w.ping.remote() for w in workers])

    def via_opcd():
        return sum(len(s.response_ids) for s in generate_on(workers, prompts, sampling))

    t_opcd, tok_opcd = best_of(via_opcd, args.repeats)
    for w in workers:
        ray.kill(w)

    llm = make_llm(model, "vllm_cpu", threads=2)
    params = SamplingParams(temperature=1.0, max_tokens=32, logprobs=16)

    def direct():
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs)

    t_direct, tok_direct = best_of(direct, args.repeats)
    res = {"prompts": len(prompts), "opcd": {"seconds": t_opcd, "tokens": tok_opcd, "tokens_per_s": tok_opcd / t_opcd},
           "direct_vllm": {"seconds": t_direct, "tokens": tok_direct, "tokens_per_s": tok_direct / t_direct}}
    res["ratio"] = res["opcd"]["tokens_per_s"] / res["direct_vllm"]["tokens_per_s"]
    print(f"{'method':<28}{'seconds':>10}{'tokens':>8}{'tokens/s':>10}")
    for name in ("direct_vllm", "opcd"):
        r = res[name]
        print(f"{name:<28}{r['seconds']:>10.3f}{r['tokens']:>8}{r['tokens_per_s']:>10.0f}")
    print(f"opcd rollout / direct vLLM: {res['ratio']:.2f}x")
    out = Path(__file__).with_name("results") / "rollout.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
