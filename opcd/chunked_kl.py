"""Memory-flat full-vocabulary reverse KL: never more than one chunk of ``[rows, V]`` logits alive.

``full_reverse_kl`` needs the student's ``[B, T, V]`` logits (and autograd keeps several tensors of
that size for the backward). Here the LM head is applied inside the loss, ``chunk_size`` positions
at a time, by a custom autograd function with the analytic gradient

    d KL(p || q) / d z_v = p_v * (log p_v - log q_v - KL) / tau      (z = logits, p = softmax(z / tau))

so the backward needs no saved activations of vocabulary size: it recomputes one chunk's logits
into a single buffer, turns that buffer *in place* into its gradient, row block by row block (the
temporaries are ``row_block x V``), and multiplies it into ``d hidden`` and ``d head``. Peak extra
memory is one chunk's logits plus small row-block temporaries, whatever ``T`` is
(``benchmarks/bench_loss.py`` measures it).

:func:`chunked_reverse_kl_from_hidden` does the same with the teacher given by its final hidden
states and LM head (what ``algo.teacher_transfer=hidden`` ships instead of ``[B, T, V]`` log-probs):
the teacher's chunk of log-probs is formed next to the student's, so two chunk buffers are alive.
"""
from __future__ import annotations

import torch
from torch import Tensor

from opcd.loss_utils import Metrics, TeacherRows, aggregate, check_mode, check_temperature, to_float, valid_mask

ROW_BLOCK = 32  # rows per in-place step inside a chunk: temporaries are ROW_BLOCK x V


def _teacher_rows(teacher: TeacherRows, rows: Tensor, dtype: torch.dtype) -> Tensor:
    """Teacher log-probs ``[len(rows), V]`` for flat positions ``rows`` (lazy callable or a tensor)."""
    with torch.no_grad():  # a lazy teacher (e.g. a matmul) must not build a graph of its own
        t = teacher(rows) if callable(teacher) else teacher.reshape(-1, teacher.shape[-1]).index_select(0, rows)
    return t.detach().to(dtype)


def _chunk_logprobs(h: Tensor, head: Tensor, temperature: float) -> Tensor:
    """Student log-probs of one chunk, ``[n, V]`` float32 (or wider), in one buffer.

    The log-softmax is taken in place, row block by row block: ``torch.logsumexp`` over the whole
    chunk would allocate chunk-sized temporaries.
    """
    dtype = torch.promote_types(h.dtype, torch.float32)
    with torch.autocast(h.device.type, enabled=False):  # an enclosing autocast would round z to bf16
        z = h.to(dtype) @ head.to(dtype).t()
    if temperature != 1.0:
        z.div_(temperature)
    for i in range(0, z.shape[0], ROW_BLOCK):
        blk = z[i:i + ROW_BLOCK]
        blk.sub_(torch.logsumexp(blk, dim=-1, keepdim=True))
    return z


def _chunk_kl(lp: Tensor, rows: Tensor, teacher: TeacherRows) -> Tensor:
    """Per-row KL ``[n]`` from one chunk's student log-probs ``lp [n, V]`` (row-block temporaries)."""
    kl = torch.empty(lp.shape[0], dtype=lp.dtype, device=lp.device)
    for i in range(0, lp.shape[0], ROW_BLOCK):
        blk = lp[i:i + ROW_BLOCK]
        q = _teacher_rows(teacher, rows[i:i + blk.shape[0]], blk.dtype)
        kl[i:i + blk.shape[0]] = (blk.exp() * (blk - q)).sum(-1)
    return kl


def _chunk_grad_(lp: Tensor, rows: Tensor, teacher: TeacherRows, grad_kl: Tensor, temperature: float) -> Tensor:
    """Turn one chunk's log-probs ``lp [n, V]`` *in place* into ``d loss / d logits``."""
    for i in range(0, lp.shape[0], ROW_BLOCK):
        blk = lp[i:i + ROW_BLOCK]
        diff = blk - _teacher_rows(teacher, rows[i:i + blk.shape[0]], blk.dtype)
        p = blk.exp_()  # blk now holds p
        kl = (p * diff).sum(-1, keepdim=True)
        blk.mul_(diff.sub_(kl)).mul_(grad_kl[i:i + blk.shape[0], None].to(blk.dtype) / temperature)
    return lp


class _HiddenTeacher:
    """Teacher log-probs formed from its final hidden states: ``log_softmax(h_t @ W_t.T / tau)``.

    Called with flat rows it returns their ``[n, V]`` log-probs (the ``TeacherRows`` protocol);
    :class:`_ChunkedReverseKL` instead asks for a whole chunk at once (:func:`_chunk_teacher`), so the
    teacher's head is read once per chunk, not once per row block.
    """

    def __init__(self, hidden: Tensor, head: Tensor, temperature: float):
        self.hidden, self.head, self.temperature = hidden.detach(), head.detach(), temperature  # [N, d], [V, d]

    def __call__(self, rows: Tensor) -> Tensor:
        with torch.no_grad():
            return _chunk_logprobs(self.hidden.index_select(0, rows.to(self.hidden.device)), self.head,
                                   self.temperature)


def _chunk_teacher(teacher: TeacherRows, rows: Tensor) -> tuple[TeacherRows, Tensor]:
    """(teacher, rows) for one chunk's row blocks: a hidden-state teacher forms the chunk's ``[n, V]``
    log-probs once (one matmul per chunk, like the student's); its row blocks are then views of that
    buffer (local rows ``0..n-1`` are contiguous), not copies."""
    if isinstance(teacher, _HiddenTeacher):
        chunk = teacher(rows)
        return (lambda r: chunk[int(r[0]):int(r[0]) + r.numel()]), torch.arange(rows.numel(), device=rows.device)
    return teacher, rows


class _ChunkedReverseKL(torch.autograd.Function):
    """Per-row ``KL(p_s || p_t)``: ``forward(h [N,H], head [V,H], rows [N], teacher, tau, chunk) -> [N]``.

    One function for all chunks, so the backward accumulates ``d head`` in one buffer (``addmm_``)
    instead of autograd summing a fresh ``[V, H]`` gradient per chunk. Each chunk's buffer lives
    only inside one helper call, so it is freed before the next chunk's is built.
    """

    @staticmethod
    def forward(ctx, h, head, rows, teacher, temperature, chunk_size):
        kl = []
        for c in range(0, h.shape[0], chunk_size):
            t, local = _chunk_teacher(teacher, rows[c:c + chunk_size])
            kl.append(_chunk_kl(_chunk_logprobs(h[c:c + chunk_size], head, temperature), local, t))
            del t  # a hidden-state teacher's [n, V] chunk: freed before the next one is built
        ctx.save_for_backward(h, head, rows)
        ctx.teacher, ctx.temperature, ctx.chunk_size = teacher, temperature, chunk_size
        return torch.cat(kl) if kl else h.new_zeros(0, dtype=torch.promote_types(h.dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad_kl):
        h, head, rows = ctx.saved_tensors
        wide, n = torch.promote_types(h.dtype, torch.float32), ctx.chunk_size
        with torch.profiler.record_function("opcd::leaf_grads"):  # lets the benchmark tell them apart
            grad_h = torch.empty(h.shape, dtype=wide, device=h.device) if ctx.needs_input_grad[0] else None
            grad_head = torch.zeros(head.shape, dtype=wide, device=head.device) if ctx.needs_input_grad[1] else None
        head_w = head.to(wide)
        for c in range(0, h.shape[0], n):
            hc = h[c:c + n].to(wide)
            teacher, local = _chunk_teacher(ctx.teacher, rows[c:c + n])
            g = _chunk_grad_(_chunk_logprobs(hc, head, ctx.temperature), local, teacher, grad_kl[c:c + n],
                             ctx.temperature)
            del teacher  # a hidden-state teacher's [n, V] chunk: freed before the next one is built
            if grad_h is not None:
                torch.mm(g, head_w, out=grad_h[c:c + n])
            if grad_head is not None:
                grad_head.addmm_(g.t(), hc)
            del g  # before the next chunk's buffer is built
        return (None if grad_h is None else grad_h.to(h.dtype), None if grad_head is None else grad_head.to(head.dtype),
                None, None, None, None)


def chunked_full_reverse_kl(student_hidden: Tensor, student_head: Tensor,
                            teacher_logprobs: TeacherRows, mask: Tensor, temperature: float = 1.0,
                            chunk_size: int = 1024,
                            aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """Same value and gradients as ``full_reverse_kl``, without ever holding the student's
    ``[B*T, V]`` logits: peak extra memory is one ``[chunk_size, V]`` buffer whatever ``T`` is.

    The ``N = B*T`` positions are flattened, only masked-in rows are kept, and they are processed
    ``chunk_size`` rows at a time (logits ``hidden_chunk @ student_head.T / tau``). Gradients flow to
    both ``student_hidden`` and ``student_head``.

    Args:
        student_hidden: [B, T, H] final hidden states (after the final norm), grad flows.
        student_head: [V, H] LM-head weight (``lm_head.weight``), grad flows.
        teacher_logprobs: either a [B, T, V] tensor of teacher log-probs over the full vocab, already
            at temperature ``tau`` (not rescaled here), or a callable ``f(rows) -> [n, V]`` where
            ``rows`` is a long tensor of flat indices ``b * T + t``; this lets a caller produce
            teacher rows lazily (e.g. ``log_softmax(teacher_hidden.view(-1,H)[rows] @ W_t.T / tau)``).
            The callable runs under ``no_grad``, in row blocks of at most ``chunk_size`` rows, once
            in the forward and **again in the backward**, so it must be deterministic and cheap.
        mask: [B, T]. temperature: applied to the student only. chunk_size: rows per chunk (>= 1).

    Returns nats/token aggregated by ``aggregation``; metric ``"kl"``.
    """
    check_mode(aggregation)
    check_temperature(temperature)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    B, T, H = student_hidden.shape
    n_rows = B * T
    rows = valid_mask(mask).reshape(-1).nonzero().squeeze(1)
    flat_hidden = student_hidden.reshape(n_rows, H)
    need_grad = torch.is_grad_enabled() and (student_hidden.requires_grad or student_head.requires_grad)
    # [n, H] masked-in rows (no copy when every row is in), saved for the backward
    h = flat_hidden if rows.numel() == n_rows else flat_hidden.index_select(0, rows)
    per_row = _ChunkedReverseKL.apply(h, student_head, rows, teacher_logprobs, temperature, chunk_size)
    # Scatter back to [B, T] (zeros at masked positions) so aggregation is shared with the others.
    per_token = torch.zeros(n_rows, dtype=per_row.dtype, device=per_row.device)
    per_token = per_token.index_copy(0, rows, per_row).view(B, T)
    if rows.numel() == 0 and need_grad:
        # Keep the graph connected for an all-masked batch (backward must still work).
        per_token = per_token + 0.0 * (student_hidden.sum() + student_head.sum())
    loss = aggregate(per_token, mask, aggregation)
    return loss, {"kl": to_float(loss)}


def chunked_reverse_kl_from_hidden(student_hidden: Tensor, student_head: Tensor, teacher_hidden: Tensor,
                                   teacher_head: Tensor, mask: Tensor, temperature: float = 1.0,
                                   chunk_size: int = 1024,
                                   aggregation: str = "token_mean") -> tuple[Tensor, Metrics]:
    """``chunked_full_reverse_kl`` with the teacher given by its final hidden states and LM head.

    The teacher's log-probs ``log_softmax(teacher_hidden @ teacher_head.T / tau)`` are formed chunk
    by chunk inside the loss, next to the student's (and again in the backward), so neither side's
    ``[B*T, V]`` is ever held: peak extra memory is two ``[chunk_size, V]`` buffers whatever ``T`` is.
    Same value and gradients as ``full_reverse_kl(student logits, teacher logits)``; no gradient
    reaches the teacher.

    Args:
        student_hidden: [B, T, H] student final hidden states (after the final norm), grad flows.
        student_head: [V, H] student LM-head weight, grad flows.
        teacher_hidden: [B, T, d] teacher final hidden states (the input of its LM head), any float
            dtype (bf16 is upcast per chunk); rows at masked positions are never read.
        teacher_head: [V, d] teacher LM-head weight (frozen; fp32 avoids a per-chunk upcast).
        mask, temperature (both sides), chunk_size, aggregation: as ``chunked_full_reverse_kl``.
    """
    B, T, _ = student_hidden.shape
    V, d = teacher_head.shape
    if teacher_hidden.shape != (B, T, d):
        raise ValueError(f"teacher hidden states {tuple(teacher_hidden.shape)} do not fit the student's [B, T] = "
                         f"[{B}, {T}] and the teacher head's width d={d} (teacher_head {tuple(teacher_head.shape)})")
    if V != student_head.shape[0]:
        raise ValueError(f"teacher head has {V} vocabulary rows, the student's {student_head.shape[0]}: "
                         "a full-vocabulary KL needs one vocabulary")
    teacher = _HiddenTeacher(teacher_hidden.reshape(B * T, d), teacher_head, temperature)
    return chunked_full_reverse_kl(student_hidden, student_head, teacher, mask, temperature=temperature,
                                   chunk_size=chunk_size, aggregation=aggregation)


def teacher_logprobs_from_hidden(teacher_hidden: Tensor, teacher_head: Tensor, temperature: float = 1.0) -> Tensor:
    """The teacher's full log-probs ``[B, T, V]`` (fp32, no grad) from its hidden states ``[B, T, d]``
    and head ``[V, d]``, at ``temperature``: for losses that hold ``[B, T, V]`` anyway (``jsd``)."""
    check_temperature(temperature)
    with torch.no_grad(), torch.autocast(teacher_hidden.device.type, enabled=False):  # fp32, even under autocast
        z = teacher_hidden.to(torch.float32) @ teacher_head.to(torch.float32).t()
        return torch.log_softmax(z if temperature == 1.0 else z / temperature, dim=-1)
