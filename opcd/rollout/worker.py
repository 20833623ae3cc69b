"""Rollout workers: Ray actors that each hold one vLLM engine with the current student weights."""
from __future__ import annotations

import os
import time

from opcd.engine import Sample, make_llm, reload_weights, sample, seed_engine


class RolloutWorker:
    """One vLLM engine. ``generate`` samples; ``load_weights`` swaps weights in place."""

    def __init__(self, model_path: str, engine_kwargs: dict):
        self.llm = make_llm(model_path, **engine_kwargs)

    def generate(self, prompt_ids: list[list[int]], sampling: dict, seed: int | None = None) -> list[Sample]:
        """Samples for ``prompt_ids``; a ``seed`` makes them a function of (weights, prompts, seed)."""
        if seed is not None:
            seed_engine(self.llm, seed)
        return sample(self.llm, prompt_ids, **sampling)

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights to host, KV cache dropped) while a colocated learner trains."""
        if self.llm.llm_engine.vllm_config.model_config.enable_sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.llm.llm_engine.vllm_config.model_config.enable_sleep_mode:
            self.llm.wake_up()

    def load_weights(self, named_tensors) -> float:
        """Returns the seconds the in-place reload took."""
        t0 = time.perf_counter()
        reload_weights(self.llm, named_tensors)
        return time.perf_counter() - t0

    def engine_ranks(self) -> int:
        """How many processes hold this engine's weights (tensor-parallel workers)."""
        return self.llm.llm_engine.vllm_config.parallel_config.world_size

    def join_sync_group(self, host: str, port: int, base_rank: int, world: int, backend: str,
                        timeout_s: float) -> None:
        from opcd.sync.broadcast import engine_join

        self.llm.collective_rpc(engine_join, args=(host, port, base_rank, world, backend, timeout_s))

    def receive_weights(self, specs: list, buckets: list[list[int]]) -> float:
        """Bucketed-broadcast counterpart of ``load_weights``; returns the seconds it took."""
        from opcd.sync.broadcast import engine_receive

        t0 = time.perf_counter()
        self.llm.collective_rpc(engine_receive, args=(specs, buckets))
        self.llm.reset_prefix_cache()
        return time.perf_counter() - t0

    def score_prompts(self, seqs: list[list[int]], resp_lens: list[int]) -> list[list[float]]:
        """Engine log-probs of the last ``resp_lens[i]`` tokens of each sequence (prompt log-probs).

        Used to check weight sync: after a push these must equal the learner's own log-probs.
        """
        from vllm import SamplingParams

        outs = self.llm.generate([{"prompt_token_ids": s} for s in seqs],
                                 SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        res = []
        for s, n, o in zip(seqs, resp_lens, outs):
            plp = o.prompt_logprobs  # position 0 is None (nothing predicts the first token)
            res.append([plp[i][s[i]].logprob for i in range(len(s) - n, len(s))])
        return res

    def ping(self) -> int:
        return os.getpid()


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous, order-preserving split into ``parts`` chunks of near-equal size."""
    n, r = divmod(len(items), parts)
    out, i = [], 0
    for p in range(parts):
        j = i + n + (1 if p < r else 0)
        out.append(items[i:j])
        i = j
    return out


def generate_on(workers: list, prompt_ids: list[list[int]], sampling: dict, seed: int | None = None,
                timeout: float | None = None) -> list[Sample]:
    """Fan prompts out over ``workers`` (Ray actor handles) and gather samples in prompt order.

    With a ``seed``, worker i samples with seed ``seed + i``: the result depends only on the weights,
    the prompts and the seed, not on what the engines sampled before (this is what makes a resumed
    run repeat an uninterrupted one). ``timeout`` (s) raises ``ray.exceptions.GetTimeoutError``.
    """
    import ray

    chunks = split_evenly(prompt_ids, len(workers))
    refs = [w.generate.remote(c, sampling, None if seed is None else seed + i)
            for i, (w, c) in enumerate(zip(workers, chunks)) if c]
    return [s for part in ray.get(refs, timeout=timeout) for s in part]
