"""The consistency regulariser ("When Context Returns") and its variants, as pure PyTorch functions.

The paper's summary (``shared/seeds/003_…``) defines it only in words:

    "They propose a lightweight consistency regularizer using stop-gradient anchoring and forward KL
    divergence to achieve 'context removability' [...] The method's lightweight nature—requiring only
    one additional forward pass—makes adoption straightforward without computational burden."

"Forward KL with a stop-gradient anchor" is ``KL(sg[anchor] || trained)``: the anchor is the target
distribution (first argument, no gradient), the trained distribution the second. Which side is the
anchor, the summary does not say; two readings are implemented (``algo.nca_mode``):

==============  ==============================================  ==========================================
mode            per-token term ``R_t``                          gradient reaches / extra cost
==============  ==============================================  ==========================================
``paper``       ``KL(sg[p(.|x,y<t)] || p(.|c,x,y<t))``           the with-context forward: a second forward
                (opcd's form since the start; the default)       *and* backward pass over ``[c; x; y]``
``sg_context``  ``KL(sg[p(.|c,x,y<t)] || p(.|x,y<t))``           the no-context forward (already computed
                                                                 for distillation): one extra forward pass
                                                                 under ``no_grad``, no extra backward
==============  ==============================================  ==========================================

``sg_context`` is the form for which "only one additional forward pass" is literally true. It pulls the
*no-context* student towards what the student currently does *with* the context (a self-distillation
target that moves as the student learns), instead of pulling the with-context behaviour towards the
no-context one. The with-context predictions then move only through the shared weights, not by a
gradient that asks the context to stop mattering, which is the hypothesised cause of the collapse
measured on SmolLM2 (``benchmarks/reproduction_smollm2.md``: French with the prompt 76.7% -> 20%).

Independent switches (``opcd.config.AlgoConfig``):

* ``nca_positions``: ``all`` response positions, or only where the two views ``agree``:
  ``argmax_v p(v|x,y<t) == argmax_v p(v|c,x,y<t)`` (the student's own greedy next token is the same with
  and without the context). Why the with-context *student* and not the teacher: it is the distribution the
  term acts on, it is available for every loss (the teacher ships only top-k log-probs for OPCD), and at
  step 0 it *is* the teacher (the teacher is the frozen initial student). Where the views disagree, the
  context is still doing work the distillation term has not yet moved into p(.|x) (the reply's language
  at its first tokens); there the regulariser would pull the with-context prediction to the undistilled
  one, so it is left out. Where they agree it only smooths the rest of the distribution. As distillation
  proceeds, more positions agree: the term widens by itself. Dropped positions contribute 0 and keep
  their weight in the denominator, so the kept ones are not re-weighted.
* ``nca_support``: the ``full`` vocabulary, or the no-context student's ``topk`` tokens (``algo.top_k``,
  taken from the current logits, detached), with both distributions renormalised over those k tokens so
  the term stays a KL (>= 0) on the tokens that carry the mass.
* ``nca_after_step`` (``nca_weight`` in ``opcd.learner.objective``): the term is off until that optimizer
  step, a deterministic stand-in for "after the distillation term has converged" (an EMA-of-KL threshold
  would make the switch depend on loop state that checkpoints would then have to carry).

Not implemented: the regulariser on *teacher* rollouts (``y ~ p_T(.|c,x)``). It needs a second
generation per step by the teacher, two more sequence views in ``opcd.batch.LearnBatch`` and their
routing through ``opcd.phases`` (a loop change across three modules), for a term that would then see
text the student does not produce.

Where the term pushes is logged per position bucket (``position_buckets``): its mean value over the first
``FIRST_TOKENS`` response tokens and over the later ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from opcd.loss_utils import Metrics, aggregate, check_mode, check_temperature, scaled, to_float, valid_mask

# Option values, each with its meaning (opcd.config.AlgoConfig documents the fields).
NCA_MODES = {
    "paper": "KL(sg[p(.|x)] || p(.|c,x)): gradient through the with-context forward",
    "sg_context": "KL(sg[p(.|c,x)] || p(.|x)): gradient through the no-context forward only",
}
NCA_POSITIONS = {
    "all": "every response position",
    "agree": "positions where argmax p(.|x) == argmax p(.|c,x)",
}
NCA_SUPPORTS = {
    "full": "the whole vocabulary",
    "topk": "the no-context student's top-k tokens, both sides renormalised",
}
FIRST_TOKENS = 4  # response positions counted as "first" in the consistency_first / _rest metrics


def check_nca_options(algo) -> None:
    """Refuse unknown ``algo.nca_*`` values (and a negative ``nca_after_step``) with the accepted ones."""
    for field, table in (("nca_mode", NCA_MODES), ("nca_positions", NCA_POSITIONS), ("nca_support", NCA_SUPPORTS)):
        value = getattr(algo, field)
        if value not in table:
            raise ValueError(f"unknown algo.{field} {value!r}; expected one of {', '.join(table)}")
    if algo.nca_after_step < 0:
        raise ValueError(f"algo.nca_after_step must be >= 0 (got {algo.nca_after_step})")


def topk_support(logits: Tensor, k: int) -> Tensor:
    """``[B, T, k]`` long: the ids of the ``k`` largest ``logits`` at each position (no gradient)."""
    if k < 1:
        raise ValueError(f"top-k support needs k >= 1, got {k}")
    return logits.detach().topk(min(k, logits.shape[-1]), dim=-1).indices


def agree_positions(noctx_logits: Tensor, ctx_logits: Tensor) -> Tensor:
    """``[B, T]`` bool: positions where both views' greedy next token is the same (ties: lowest id)."""
    return noctx_logits.detach().argmax(-1) == ctx_logits.detach().argmax(-1)


def anchored_kl(anchor_logits: Tensor, trained_logits: Tensor, temperature: float = 1.0,
                support: Tensor | None = None) -> Tensor:
    """Per-position forward KL ``KL(sg[p_a] || p_m) = sum_v p_a(v) (log p_a(v) - log p_m(v))``, ``[B, T]``.

    ``p = softmax(logits / tau)``; ``anchor_logits`` is detached here, so only ``trained_logits`` gets a
    gradient. With ``support`` ([B, T, k] ids), both sides are gathered at those ids and renormalised
    over them (a KL between two distributions on the k ids). Inputs [B, T, V].
    """
    check_temperature(temperature)
    a = scaled(anchor_logits.detach(), temperature)
    m = scaled(trained_logits, temperature)
    if support is not None:  # the full-vocabulary normaliser cancels after renormalising over the support
        a, m = a.gather(-1, support), m.gather(-1, support)
    a_lp, m_lp = F.log_softmax(a, dim=-1), F.log_softmax(m, dim=-1)
    return (a_lp.exp() * (a_lp - m_lp)).sum(-1)


def position_buckets(per_token: Tensor, mask: Tensor, first: int = FIRST_TOKENS) -> tuple[float, float]:
    """Mean of a ``[B, T]`` per-token value over real tokens at response positions ``< first`` and ``>= first``
    (0.0 for an empty bucket). Token means, whatever the loss's aggregation: they say *where* it acts."""
    valid = valid_mask(mask)
    early = torch.arange(per_token.shape[1], device=per_token.device) < first
    out = []
    for bucket in (valid & early, valid & ~early):
        n = int(bucket.sum())
        out.append(float(per_token.detach()[bucket].sum()) / n if n else 0.0)
    return out[0], out[1]


def consistency_term(noctx_logits: Tensor, ctx_logits: Tensor, mask: Tensor, *, mode: str = "paper",
                     positions: str = "all", support: str = "full", top_k: int = 16, temperature: float = 1.0,
                     aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """The consistency regulariser in the configured variant (see the module docstring).

    ``noctx_logits`` [B,T,V] = the student on ``[x; y]``, ``ctx_logits`` [B,T,V] = the student on
    ``[c; x; y]``, aligned on the same response tokens; ``mask`` [B,T] real tokens. Returns the loss
    (nats/token aggregated by ``aggregation``; the caller multiplies by beta) and metrics: ``kl`` (the
    loss), ``first`` / ``rest`` (``position_buckets`` of the applied per-token term) and ``kept`` (share of
    real tokens the term is applied at: 1 for ``positions=all``).
    """
    check_mode(aggregation)
    for value, table, field in ((mode, NCA_MODES, "mode"), (positions, NCA_POSITIONS, "positions"),
                                (support, NCA_SUPPORTS, "support")):
        if value not in table:
            raise ValueError(f"unknown nca {field} {value!r}; expected one of {', '.join(table)}")
    ids = topk_support(noctx_logits, top_k) if support == "topk" else None
    if mode == "paper":
        per_token = anchored_kl(noctx_logits, ctx_logits, temperature, ids)
    else:
        per_token = anchored_kl(ctx_logits, noctx_logits, temperature, ids)
    valid = valid_mask(mask)
    keep = agree_positions(noctx_logits, ctx_logits) if positions == "agree" else torch.ones_like(valid)
    applied = torch.where(keep, per_token, torch.zeros_like(per_token))
    loss = aggregate(applied, mask, aggregation)
    first, rest = position_buckets(applied, mask)
    n_real = int(valid.sum())
    kept = float((keep & valid).sum()) / n_real if n_real else 0.0
    return loss, {"kl": to_float(loss), "first": first, "rest": rest, "kept": kept}


__all__ = ["NCA_MODES", "NCA_POSITIONS", "NCA_SUPPORTS", "FIRST_TOKENS", "check_nca_options", "topk_support",
           "agree_positions", "anchored_kl", "position_buckets", "consistency_term"]
