"""The learner's objective: student forward pass(es) on a micro-batch, then the configured loss.

Pure function of (model, batch, algo config): testable without Ray or DeepSpeed.
"""
from __future__ import annotations

import torch

from opcd import losses
from opcd.algorithms import TEACHER_SUPPORT
from opcd.batch import LearnBatch
from opcd.modeling import response_logits



def nca_weight(beta: float, warmup_steps: int, step: int, after_step: int = 0) -> float:
    """The consistency regulariser's weight at optimizer ``step`` (1-based): 0 up to ``after_step``
    (``algo.nca_after_step``), then ``beta`` ramped linearly over ``warmup_steps``. Why a delay or a
    ramp: the paper form pulls p(.|c,x) towards the *current* p(.|x), which before distillation is the
    undistilled behaviour, so both let the distillation term move p(.|x) first. On SmolLM2 the ramp
    alone helped only partly (``benchmarks/reproduction_smollm2.md``)."""
    active = step - after_step
    if active <= 0:
        return 0.0
    return beta * min(1.0, active / warmup_steps) if warmup_steps > 0 else beta


def nca_term(model, mb: LearnBatch, algo, pad_id: int, logits: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The consistency regulariser in ``algo``'s variant (``opcd.consistency``) on micro-batch ``mb``.

    ``logits`` [B,T,V] are the student's on the no-context sequences (with their graph), ``mask`` their
    real tokens. The with-context forward runs with a graph only when the gradient goes through it
    (``nca_mode=paper``); ``sg_context`` needs it as a constant, so no activations are kept for it.
    Metrics: ``loss/consistency`` and its ``_first`` / ``_rest`` / ``_kept`` breakdown.
    """
    with torch.set_grad_enabled(algo.nca_mode == "paper" and torch.is_grad_enabled()):
        ctx_logits, _ = response_logits(model, mb.context_seqs, mb.resp_lens, pad_id)
    reg, m = losses.consistency_term(logits, ctx_logits, mask, mode=algo.nca_mode, positions=algo.nca_positions,
                                     support=algo.nca_support, top_k=algo.top_k, temperature=algo.temperature,
                                     aggregation=algo.aggregation)
    return reg, {"loss/consistency": m["kl"], "loss/consistency_first": m["first"],
                 "loss/consistency_rest": m["rest"], "loss/consistency_kept": m["kept"]}


def student_loss(model, mb: LearnBatch, algo, pad_id: int, step: int = 1,
                 teacher_head: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss (0-dim, grad to ``model``) and float metrics for one micro-batch at optimizer ``step``.

    The main term follows ``algo.loss``; when ``algo.nca_beta > 0`` the stop-gradient consistency
    term ``beta * KL(sg[p(.|x,y<t)] || p(.|c,x,y<t))`` (or the variant ``algo.nca_*`` selects,
    :func:`nca_term`) is added (beta from :func:`nca_weight`), which needs a second forward pass over
    the with-context sequences.

    When the teacher shipped hidden states (``mb.teacher_hidden``, ``algo.teacher_transfer=hidden``),
    its logits are formed here with ``teacher_head`` [V, d], the learner's frozen copy of its LM head.
    """
    dev = next(model.parameters()).device
    T, agg, name = algo.temperature, algo.aggregation, algo.loss
    teacher_lp = mb.teacher_logprobs.to(dev)  # already at temperature T (the teacher applied it)
    logits = None
    teacher_hidden = None if mb.teacher_hidden is None else mb.teacher_hidden.to(dev)
    if teacher_hidden is not None and teacher_head is None:
        raise ValueError("the batch carries teacher hidden states but the learner holds no copy of the teacher's "
                         "LM head (start the learner with teacher_head_path)")
    if teacher_hidden is not None and name == "jsd":  # jsd holds [B, T, V] student logits anyway
        teacher_lp = losses.teacher_logprobs_from_hidden(teacher_hidden, teacher_head, T)
    if name == "full_reverse_kl":
        # Memory-flat path: never materialise [B, T, V] student logits; the LM head is applied chunk
        # by chunk inside the loss (and recomputed in backward).
        hidden, mask = response_logits(model, mb.student_seqs, mb.resp_lens, pad_id, return_hidden=True)
        mask = mask & mb.mask.to(dev)
        if teacher_hidden is not None:  # the teacher's logits too, chunk by chunk, from its hidden states
            loss, m = losses.chunked_reverse_kl_from_hidden(hidden, model.get_output_embeddings().weight,
                                                            teacher_hidden, teacher_head, mask, temperature=T,
                                                            aggregation=agg)
        else:
            loss, m = losses.chunked_full_reverse_kl(hidden, model.get_output_embeddings().weight, teacher_lp, mask,
                                                     temperature=T, aggregation=agg)
    else:
        logits, mask = response_logits(model, mb.student_seqs, mb.resp_lens, pad_id)
        mask = mask & mb.mask.to(dev)
        if name == "topk_reverse_kl":
            loss, m = losses.topk_reverse_kl(logits, mb.support_ids.to(dev), teacher_lp, mask, temperature=T,
                                             renormalize=algo.renormalize_topk, aggregation=agg)
        elif name == "forward_kl":
            loss, m = losses.forward_kl(logits, mb.support_ids.to(dev), teacher_lp, mask, temperature=T,
                                        renormalize=algo.renormalize_topk, aggregation=agg)
        elif name == "jsd":
            # Teacher log-probs already carry T: scale only the student, then compare at T = 1.
            loss, m = losses.generalized_jsd(logits / T, teacher_lp, mask, beta=algo.jsd_beta, aggregation=agg)
        elif name == "sampled_reverse_kl":
            logp = torch.log_softmax(logits.float() / T, -1).gather(-1, mb.response_ids.to(dev)[..., None])[..., 0]
            loss, m = losses.sampled_reverse_kl(logp, mb.behaviour_logprobs.to(dev), mb.teacher_token_logprobs.to(dev),
                                                mask, aggregation=agg)
        elif name == "nll":
            loss, m = losses.nll(logits, mb.response_ids.to(dev), mask, aggregation=agg)
        else:
            raise ValueError(f"unknown algo.loss {name!r}; expected one of {sorted(TEACHER_SUPPORT)}")
    metrics = {f"loss/{k}": v for k, v in m.items()}
    beta = nca_weight(algo.nca_beta, algo.nca_warmup_steps, step, algo.nca_after_step)
    if beta > 0:
        if logits is None:  # full_reverse_kl kept only the hidden states: apply the head, no second forward
            logits = model.get_output_embeddings()(hidden)
        reg, m_nca = nca_term(model, mb, algo, pad_id, logits, mask)
        loss = loss + beta * reg
        metrics.update(m_nca)
        metrics["loss/nca_beta"] = beta
    metrics["loss/total"] = loss.item()
    return loss, metrics


def loss_units(mb: LearnBatch, aggregation: str) -> int:
    """What ``aggregation`` averages over in ``mb``: real tokens (token_mean) or non-empty sequences."""
    if aggregation == "token_mean":
        return int(mb.mask.sum())
    return int(mb.mask.any(-1).sum())


def micro_batch_weight(mb: LearnBatch, batch: LearnBatch, aggregation: str, world_size: int, gas: int) -> float:
    """Factor on a micro-batch's mean loss so the optimizer step follows the mean over the whole batch.

    DeepSpeed divides each micro-batch loss by ``gas`` and averages gradients over the ``world_size``
    ranks: with equal weights a micro-batch of 3 tokens would count as much as one of 300. Scaling
    by ``units(mb) * world_size * gas / units(batch)`` makes the update exactly the gradient of the
    global token (or sequence) mean, whatever the sharding -- so 1 rank and 2 ranks train alike.
    """
    total = loss_units(batch, aggregation)
    return loss_units(mb, aggregation) * world_size * gas / total if total else 0.0
