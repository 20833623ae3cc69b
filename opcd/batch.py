"""The data that flows between phases: rollout -> teacher score -> learner.

Kept as arrays/tensors so it crosses Ray's object store cheaply and stays testable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def pad_3d(rows, T: int, k: int, fill: float, dtype) -> torch.Tensor:
    """Rows of [t <= T, k' <= k] arrays (or nested lists) -> tensor [B, T, k], ``fill`` where absent.

    One slice copy per row (no per-token Python work): rollout top-k arrive as numpy arrays.
    """
    out = torch.full((len(rows), T, k), fill, dtype=dtype)
    # Copy through a numpy view of ``out``: arrays from Ray's object store are read-only, and
    # torch.from_numpy on them warns (UserWarning: non-writable array) although nothing writes to them.
    view = out.numpy()
    for b, r in enumerate(rows):
        a = np.asarray(r, view.dtype)
        if a.size:
            a = a.reshape(len(a), -1)[:T, :k]
            view[b, :a.shape[0], :a.shape[1]] = a
    return out


def pad_2d(rows, T: int, fill: float, dtype) -> torch.Tensor:
    """Rows of [t <= T] arrays or lists -> tensor [B, T], ``fill`` where absent."""
    out = torch.full((len(rows), T), fill, dtype=dtype)
    view = out.numpy()  # as in pad_3d: read-only rows are copied without torch.from_numpy's warning
    for b, r in enumerate(rows):
        a = np.asarray(r, view.dtype).reshape(-1)[:T]
        view[b, :len(a)] = a
    return out


@dataclass
class LearnBatch:
    """One optimizer step's worth of sequences. B sequences, T = longest response."""

    student_seqs: list[list[int]]  # prompt WITHOUT context + response, token ids
    context_seqs: list[list[int]]  # prompt WITH context + the same response (teacher view; NCA)
    resp_lens: list[int]  # response tokens per sequence
    response_ids: torch.Tensor  # [B, T] long, the response tokens (pad 0)
    mask: torch.Tensor  # [B, T] bool, response tokens to learn from (real, and not an environment turn)
    support_ids: torch.Tensor  # [B, T, k] long, token ids the KL is computed over
    teacher_logprobs: torch.Tensor  # [B, T, k] teacher log-probs (nats) at support_ids, at algo temperature
    behaviour_logprobs: torch.Tensor  # [B, T] sampling policy's log-prob of each response token
    teacher_token_logprobs: torch.Tensor  # [B, T] teacher log-prob of each response token
    teacher_hidden: torch.Tensor | None = None  # [B, T, d] teacher final hidden states (algo.teacher_transfer=hidden), else None

    def __len__(self) -> int:
        return len(self.student_seqs)

    def slice(self, i: int, j: int) -> "LearnBatch":
        """Sequences i..j-1 (a micro-batch), trimmed to their own longest response."""
        T = max(max(self.resp_lens[i:j], default=0), 1)
        return LearnBatch(self.student_seqs[i:j], self.context_seqs[i:j], self.resp_lens[i:j],
                          self.response_ids[i:j, :T], self.mask[i:j, :T], self.support_ids[i:j, :T],
                          self.teacher_logprobs[i:j, :T], self.behaviour_logprobs[i:j, :T],
                          self.teacher_token_logprobs[i:j, :T],
                          None if self.teacher_hidden is None else self.teacher_hidden[i:j, :T])


def response_mask(samples, T: int) -> torch.Tensor:
    """[B, T] bool: the positions of each sample's response the losses learn from (its own tokens;
    for multi-turn episodes not the environment's turns, see ``Sample.loss_mask``)."""
    return pad_2d([s.loss_mask if s.loss_mask is not None else [1] * len(s.response_ids) for s in samples],
                  T, 0, torch.bool)


def build_learn_batch(samples, student_prompts: list[list[int]], context_prompts: list[list[int]],
                      scores: dict[str, torch.Tensor]) -> LearnBatch:
    """Join sampled responses with both prompt views and the teacher's scores.

    ``samples[i]`` answers prompt i (``student_prompts[i]`` is its no-context rendering,
    ``context_prompts[i]`` the with-context one); ``scores`` come from ``score_responses`` on the
    with-context sequences.
    """
    resp = [s.response_ids for s in samples]
    lens = [len(r) for r in resp]
    T = scores["logprobs"].shape[1]
    return LearnBatch(
        student_seqs=[p + r for p, r in zip(student_prompts, resp)],
        context_seqs=[p + r for p, r in zip(context_prompts, resp)],
        resp_lens=lens,
        response_ids=pad_2d(resp, T, 0, torch.long),
        mask=response_mask(samples, T),
        support_ids=scores["support_ids"],
        teacher_logprobs=scores["logprobs"],
        behaviour_logprobs=pad_2d([s.logprobs for s in samples], T, 0.0, torch.float32),
        teacher_token_logprobs=scores["token_logprobs"],
        teacher_hidden=scores.get("hidden"),
    )
