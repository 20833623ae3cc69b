"""The teacher as a Ray actor: a frozen model that scores (and, for off-policy baselines, samples)."""
from __future__ import annotations

import os
import time

import torch

from opcd.hardware import local_dtype
from opcd.modeling import load_causal_lm, load_tokenizer
from opcd.teacher.scoring import score_responses


class TeacherActor:
    """Holds the frozen teacher. Scores with a forward pass; samples through a lazily built vLLM engine."""

    def __init__(self, model_path: str, dtype: str, device: str, threads: int, micro_batch_size: int,
                 engine_kwargs: dict, transfer: str = "logprobs"):
        if device == "cpu":
            torch.set_num_threads(threads)
        self.model_path = model_path
        self.dtype = local_dtype(dtype, "teacher", cuda=device == "cuda")  # auto: this machine's choice
        self.model = load_causal_lm(model_path, self.dtype, device).eval().requires_grad_(False)
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.micro_batch_size = micro_batch_size
        self.engine_kwargs = engine_kwargs
        self.transfer = transfer  # opcd.transfer.TransferPlan.mode: hidden ships [B, T, d] for full-vocabulary losses
        self._llm = None

    def score(self, seqs, resp_lens, support, k: int, temperature: float) -> dict:
        t0 = time.perf_counter()
        if self.transfer == "hidden" and isinstance(support, str) and support == "full":
            support = "hidden"  # the learner forms the [B, T, V] log-probs from these, chunk by chunk
        out = score_responses(self.model, seqs, resp_lens, self.pad_id, support=support, k=k,
                              temperature=temperature, micro_batch_size=self.micro_batch_size)
        out["seconds"] = time.perf_counter() - t0
        return out

    def sample(self, prompt_ids, seed: int | None = None, **sampling):
        """Teacher-generated responses (with context) for off-policy CD, SFT and GKD."""
        from opcd.engine import make_llm, sample, seed_engine

        if self._llm is None:
            self._llm = make_llm(self.model_path, **self.engine_kwargs)
        if seed is not None:
            seed_engine(self._llm, seed)
        return sample(self._llm, prompt_ids, **sampling)

    def ping(self) -> int:
        return os.getpid()
