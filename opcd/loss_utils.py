"""What every loss in :mod:`opcd.losses` shares: aggregation over tokens, masking, temperature.

The conventions these helpers implement (shapes ``[B, T]`` / ``[B, T, V]``, masked positions
sanitised before any arithmetic, bf16/fp16 upcast, ``tau`` dividing logits) are stated in the
docstring of :mod:`opcd.losses`. Both ``opcd.losses`` and ``opcd.chunked_kl`` build on this module,
so neither has to import the other's internals (pure PyTorch; imports nothing else from opcd).
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

AGGREGATIONS = ("token_mean", "seq_mean")
Metrics = dict[str, float]
TeacherRows = Union[Tensor, Callable[[Tensor], Tensor]]


def check_mode(mode: str) -> None:
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def upcast(x: Tensor) -> Tensor:
    # log_softmax over a large vocab in bf16 loses ~3 significant digits; fp32 is the usual floor.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def scaled(logits: Tensor, temperature: float) -> Tensor:
    logits = upcast(logits)
    # Skip the division at tau == 1: it would allocate another [B, T, V] tensor for nothing.
    return logits if temperature == 1.0 else logits / temperature


def valid_mask(mask: Tensor) -> Tensor:
    return mask.bool() if mask.dtype == torch.bool else mask != 0


def clean(x: Tensor, valid: Tensor, fill) -> Tensor:
    """Replace masked positions (``valid`` broadcast over trailing dims) by ``fill``.

    Done on the *inputs*, not only on the per-token output: ``0 * inf`` is NaN, and a NaN created
    at a padded position would also poison the backward pass even if the output is masked.
    """
    while valid.dim() < x.dim():
        valid = valid.unsqueeze(-1)
    return torch.where(valid, x, fill)


def nonzero(x: Tensor) -> Tensor:
    # Denominator guard: an empty mask gives 0 / 1 = 0 instead of NaN (and a NaN-free backward).
    return torch.where(x != 0, x, torch.ones_like(x))


def to_float(x: Tensor) -> float:
    return float(x.detach())


def aggregate(per_token: Tensor, mask: Tensor, mode: str = "token_mean") -> Tensor:
    """Reduce a ``[B, T]`` per-token quantity to a 0-dim tensor.

    * ``token_mean``: ``sum(per_token * mask) / sum(mask)`` -- every real token weighs the same.
    * ``seq_mean``: mean, over sequences with at least one real token, of
      ``sum_t(per_token * mask) / sum_t(mask)`` -- every sequence weighs the same.

    Masked positions are selected away (``torch.where``), not multiplied by 0, so NaN/inf there
    cannot leak. An all-zero mask gives ``0`` (connected to the graph) rather than ``0/0 = NaN``.
    Raises ``ValueError`` for an unknown ``mode``.
    """
    check_mode(mode)
    if per_token.shape != mask.shape:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} differ")
    valid = valid_mask(mask)
    w = mask.to(per_token.dtype)  # 1 on real tokens; other nonzero values act as token weights
    summed = torch.where(valid, per_token * w, torch.zeros_like(per_token))
    if mode == "token_mean":
        return summed.sum() / nonzero(w.sum())
    has_tokens = valid.any(-1).to(per_token.dtype)
    per_seq = summed.sum(-1) / nonzero(w.sum(-1))
    return (per_seq * has_tokens).sum() / has_tokens.sum().clamp_min(1)
