"""Loss functions for context distillation (pure PyTorch; no Ray / vLLM).

Conventions shared by every function:

* ``B`` batch, ``T`` response positions, ``V`` vocabulary, ``k`` top-k, ``H`` hidden size.
* Logits / log-probs at position ``t`` predict response token ``t`` (the caller has already shifted).
* ``mask`` is a float or bool ``[B, T]`` tensor, nonzero (normally 1) on real response tokens;
  float values act as token weights in :func:`aggregate`. Masked positions
  may hold garbage (pad ids such as -100, ``-inf`` log-probs): they are sanitised before any
  arithmetic, so they can produce neither NaN values nor NaN gradients.
* Every loss returns ``(loss, metrics)``: ``loss`` is a 0-dim tensor, ``metrics`` a dict of detached
  python floats. Units are nats per token (or per-token averages per sequence for ``seq_mean``).
* ``temperature`` ``tau > 0`` divides *logits* before the softmax, on both sides. A teacher given
  as log-probs (from the teacher engine) is assumed to be at ``tau`` already and is never rescaled
  here (re-tempering log-probs ``l`` would mean ``log_softmax(l / tau)`` over the available support,
  which for a top-k slice is only an approximation -- so the teacher engine applies ``tau``).
* The teacher side is always a constant: it is detached, so no gradient reaches it.
* bf16/fp16 inputs are upcast to fp32 before ``log_softmax``; float64 stays float64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from opcd.chunked_kl import chunked_full_reverse_kl  # memory-flat full KL (custom autograd); part of this API
from opcd.chunked_kl import chunked_reverse_kl_from_hidden, teacher_logprobs_from_hidden  # teacher as hidden states
from opcd.consistency import anchored_kl, consistency_term  # the regulariser's variants (algo.nca_*)
from opcd.loss_utils import (AGGREGATIONS, Metrics, aggregate, check_mode, check_temperature, clean, scaled, to_float,
                             upcast, valid_mask)

__all__ = [
    "AGGREGATIONS", "aggregate", "topk_reverse_kl", "full_reverse_kl", "chunked_full_reverse_kl",
    "chunked_reverse_kl_from_hidden", "teacher_logprobs_from_hidden",
    "sampled_reverse_kl", "forward_kl", "generalized_jsd", "nll", "consistency_regularizer", "consistency_term",
]

# --------------------------------------------------------------------------- OPCD (top-k)
def topk_reverse_kl(student_logits: Tensor, topk_ids: Tensor, teacher_topk_logprobs: Tensor,
                    mask: Tensor, temperature: float = 1.0, renormalize: bool = False,
                    aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """On-policy context distillation loss: reverse KL restricted to the student's top-k support.

    Per token, with ``S`` = the k ids in ``topk_ids[b, t]`` and ``p_s = softmax(student_logits/tau)``::

        kl_t = sum_{v in S} p_s(v) * (log p_s(v) - log p_t(v))

    If ``renormalize``, both ``log p_s`` and ``log p_t`` are first renormalised over ``S``
    (``l - logsumexp_S(l)``), making ``kl_t`` a true KL between two distributions on ``S`` (>= 0).
    Without it, ``kl_t`` is the truncated sum of the full-vocab KL (can be slightly negative).

    Shapes: ``student_logits`` [B,T,V] (grad flows), ``topk_ids`` [B,T,k] long (the student's top-k
    from the rollout), ``teacher_topk_logprobs`` [B,T,k] = teacher log-probs at those ids, computed
    by the teacher over its full vocab *already at temperature tau*; tau is therefore applied to the
    student only. Returns nats/token aggregated by ``aggregation``; metric ``"kl"``.
    """
    check_mode(aggregation)
    check_temperature(temperature)
    valid = valid_mask(mask)
    ids = clean(topk_ids, valid, 0)  # pad ids such as -100 would make gather fail
    t_lp = clean(upcast(teacher_topk_logprobs.detach()), valid, 0.0)
    z = scaled(student_logits, temperature)
    s_lp = z.gather(-1, ids)
    if renormalize:
        # The full-vocab normaliser cancels after renormalising over S, so skip the [B,T,V] logsumexp.
        s_lp = s_lp - s_lp.logsumexp(-1, keepdim=True)
        t_lp = t_lp - t_lp.logsumexp(-1, keepdim=True)
    else:
        # gather-then-subtract avoids materialising a full [B,T,V] log_softmax output.
        s_lp = s_lp - z.logsumexp(-1, keepdim=True)
    per_token = (s_lp.exp() * (s_lp - t_lp)).sum(-1)
    loss = aggregate(per_token, mask, aggregation)
    return loss, {"kl": to_float(loss)}


# --------------------------------------------------------------------------- full-vocab reverse KL
def _row_reverse_kl(student_lp: Tensor, teacher_lp: Tensor) -> Tensor:
    return (student_lp.exp() * (student_lp - teacher_lp)).sum(-1)


def full_reverse_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                    temperature: float = 1.0,
                    aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """Full-vocabulary reverse KL, per token ``KL(p_s || p_t) = sum_v p_s(v) (log p_s(v) - log p_t(v))``
    with ``p = softmax(logits / tau)`` on both sides. ``student_logits``, ``teacher_logits``: [B,T,V]
    (teacher detached). Returns nats/token aggregated by ``aggregation``; metric ``"kl"``.
    """
    check_mode(aggregation)
    check_temperature(temperature)
    s_lp = F.log_softmax(scaled(student_logits, temperature), dim=-1)
    t_lp = F.log_softmax(scaled(teacher_logits.detach(), temperature), dim=-1)
    loss = aggregate(_row_reverse_kl(s_lp, t_lp), mask, aggregation)
    return loss, {"kl": to_float(loss)}


# --------------------------------------------------------------------------- sampled-token reverse KL
def sampled_reverse_kl(student_logprobs: Tensor, behaviour_logprobs: Tensor,
                       teacher_logprobs: Tensor, mask: Tensor, clip_ratio: float | None = 10.0,
                       aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """REINFORCE-style reverse KL from the sampled tokens only (no vocab-sized tensors).

    All inputs are [B, T] log-probs of the *sampled* token: ``student_logprobs`` (current policy,
    grad flows), ``behaviour_logprobs`` (rollout engine, detached), ``teacher_logprobs`` (detached).
    Per token::

        rho   = exp(logp_s - logp_b)                  (importance weight rollout -> current policy)
        rho_c = rho * sg(min(1, clip_ratio / rho))    (value min(rho, clip), still d rho_c = rho_c d logp_s)
        loss  = rho_c * sg(logp_s - logp_t)

    so ``grad = rho_c * (logp_s - logp_t) * grad logp_s``. Since ``E_p[grad log p] = 0``, with
    ``rho_c = rho`` this is an unbiased single-sample estimate of ``grad KL(p_s || p_t)`` at that
    position (per-token KL; the effect on later tokens' distribution is not credited). The clip is a
    *truncated importance weight*: unlike ``torch.clamp`` it keeps a nonzero gradient on clipped
    tokens, only bounding its scale (variance control). ``clip_ratio=None`` disables it.

    The loss value equals the sampled KL estimate only on-policy (``rho = 1``); use the metrics.
    Metrics (aggregated like the loss): ``"kl"`` mean of ``logp_s - logp_t`` (nats/token, a sampled
    estimate of the reverse KL), ``"ratio"`` mean of the unclipped ``rho``, ``"clip_frac"`` share of
    tokens with ``rho > clip_ratio``.
    """
    check_mode(aggregation)
    if clip_ratio is not None and not clip_ratio > 0:
        raise ValueError(f"clip_ratio must be > 0 or None, got {clip_ratio!r}")
    valid = valid_mask(mask)
    lp_s = upcast(student_logprobs)
    # At padded positions pretend behaviour == teacher == student: rho = 1, zero advantage, no NaN.
    lp_b = clean(upcast(behaviour_logprobs.detach()), valid, lp_s.detach())
    lp_t = clean(upcast(teacher_logprobs.detach()), valid, lp_s.detach())
    log_rho = lp_s - lp_b
    if clip_ratio is not None:
        # Clip in log space (exp never overflows); the subtracted excess is a constant, so the
        # gradient of log_rho_c is still d logp_s.
        excess = log_rho.detach() - math.log(clip_ratio)
        log_rho_c = log_rho - excess.clamp_min(0.0)
    else:
        log_rho_c = log_rho
    rho_c = log_rho_c.exp()
    diff = (lp_s - lp_t).detach()
    loss = aggregate(rho_c * diff, mask, aggregation)
    with torch.no_grad():
        clipped = (log_rho_c < log_rho).to(diff.dtype)
        metrics = {"kl": to_float(aggregate(diff, mask, aggregation)),
                   "ratio": to_float(aggregate(log_rho.exp(), mask, aggregation)),
                   "clip_frac": to_float(aggregate(clipped, mask, aggregation))}
    return loss, metrics


# --------------------------------------------------------------------------- baselines
def forward_kl(student_logits: Tensor, teacher_topk_ids: Tensor, teacher_topk_logprobs: Tensor,
               mask: Tensor, temperature: float = 1.0, renormalize: bool = True,
               aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """Off-policy context-distillation baseline: forward KL on the teacher's top-k support ``S``::

        kl_t = sum_{v in S} p_t(v) * (log p_t(v) - log p_s(v)),   log p_s = log_softmax(student_logits / tau)

    The student stays a full-vocab distribution gathered at ``S``. If ``renormalize``, the teacher's
    top-k probs are renormalised to sum to 1 over ``S`` (the missing teacher mass is dropped, not
    assigned). Teacher log-probs are already at temperature ``tau`` and are not rescaled. Teacher
    entries equal to ``-inf`` (engine returned fewer than k) contribute 0 (``0 log 0 = 0``).

    Shapes: ``student_logits`` [B,T,V], ``teacher_topk_ids`` [B,T,k] long,
    ``teacher_topk_logprobs`` [B,T,k]. Returns nats/token; metric ``"kl"``.
    """
    check_mode(aggregation)
    check_temperature(temperature)
    valid = valid_mask(mask)
    ids = clean(teacher_topk_ids, valid, 0)
    t_lp = clean(upcast(teacher_topk_logprobs.detach()), valid, 0.0)
    if renormalize:
        t_lp = t_lp - t_lp.logsumexp(-1, keepdim=True)
    z = scaled(student_logits, temperature)
    s_lp = z.gather(-1, ids) - z.logsumexp(-1, keepdim=True)
    live = torch.isfinite(t_lp)
    t_safe = torch.where(live, t_lp, torch.zeros_like(t_lp))
    terms = torch.where(live, t_safe.exp() * (t_safe - s_lp), torch.zeros_like(s_lp))
    loss = aggregate(terms.sum(-1), mask, aggregation)
    return loss, {"kl": to_float(loss)}


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                    beta: float = 0.5, temperature: float = 1.0,
                    aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """GKD's generalized Jensen-Shannon divergence (Agarwal et al. 2024, Eq. 1), matching TRL's
    ``GKDTrainer.generalized_jsd_loss`` (trl 1.16, ``trl/experimental/gkd/gkd_trainer.py``) exactly,
    endpoints included. With ``p_s, p_t = softmax(logits / tau)`` and ``m = (1-beta) p_s + beta p_t``::

        0 < beta < 1:  JSD_beta = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)
        beta == 0:     KL(p_t || p_s)   forward KL (TRL: kl_div(student_lp, teacher_lp))
        beta == 1:     KL(p_s || p_t)   reverse KL (TRL: kl_div(teacher_lp, student_lp))

    The endpoints are special cases, not limits: the mixture formula itself tends to 0 as
    ``beta -> 0`` or ``1``. Per-token values are summed over V then aggregated; TRL's default
    ``reduction="batchmean"`` with ``labels`` divides the masked sum by the number of unmasked
    tokens, i.e. our ``token_mean`` (without labels it divides by ``B`` instead). Shapes [B,T,V];
    the teacher is detached. Metric ``"jsd"``.
    """
    check_mode(aggregation)
    check_temperature(temperature)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    s_lp = F.log_softmax(scaled(student_logits, temperature), dim=-1)
    t_lp = F.log_softmax(scaled(teacher_logits.detach(), temperature), dim=-1)

    def kl(target_lp: Tensor, input_lp: Tensor) -> Tensor:
        # = F.kl_div(input_lp, target_lp, log_target=True) summed over V = KL(target || input)
        return (target_lp.exp() * (target_lp - input_lp)).sum(-1)

    if beta == 0:
        per_token = kl(t_lp, s_lp)
    elif beta == 1:
        per_token = kl(s_lp, t_lp)
    else:
        b = torch.tensor(beta, dtype=s_lp.dtype, device=s_lp.device)
        # log m computed in log space (as TRL does): log((1-b) p_s + b p_t) without underflow.
        m_lp = torch.logsumexp(torch.stack([s_lp + torch.log1p(-b), t_lp + torch.log(b)]), dim=0)
        per_token = b * kl(t_lp, m_lp) + (1 - b) * kl(s_lp, m_lp)
    loss = aggregate(per_token, mask, aggregation)
    return loss, {"jsd": to_float(loss)}


def nll(student_logits: Tensor, target_ids: Tensor, mask: Tensor,
        aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """Cross-entropy on given tokens (SFT, or sequence-level KD on teacher samples)::

        nll_t = -log softmax(student_logits[b, t])[target_ids[b, t]]

    ``student_logits`` [B,T,V], ``target_ids`` [B,T] long (pad ids such as -100 allowed where
    ``mask`` is 0). Returns nats/token; metric ``"nll"``.
    """
    check_mode(aggregation)
    ids = clean(target_ids, valid_mask(mask), 0).unsqueeze(-1)
    z = upcast(student_logits)
    per_token = (z.logsumexp(-1, keepdim=True) - z.gather(-1, ids)).squeeze(-1)
    loss = aggregate(per_token, mask, aggregation)
    return loss, {"nll": to_float(loss)}


def consistency_regularizer(noctx_logits: Tensor, ctx_logits: Tensor, mask: Tensor,
                            temperature: float = 1.0,
                            aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """Stop-gradient consistency regulariser ("When Context Returns")::

        R_t = KL( sg[p_s(. | x, y<t)] || p_s(. | c, x, y<t) )
            = sum_v p_noctx(v) (log p_noctx(v) - log p_ctx(v)),   p = softmax(logits / tau)

    It keeps the distilled student's *with-context* predictions consistent with its no-context
    ones, so re-supplying the context at test time does not hurt. ``noctx_logits`` is detached
    here, so the gradient reaches only ``ctx_logits``. Both [B,T,V], aligned on the same response
    tokens. The caller scales by its coefficient beta. Returns nats/token; metric ``"kl"``.
    This is ``consistency_term``'s default variant (``opcd.consistency``: mode paper, every position,
    full vocabulary) without its per-position metrics.
    """
    check_mode(aggregation)
    loss = aggregate(anchored_kl(noctx_logits, ctx_logits, temperature), mask, aggregation)
    return loss, {"kl": to_float(loss)}

