"""The loss checks of ``launch/gpu_check.py``: the chunked full-vocabulary reverse KL and the teacher
hidden-state path, against CPU and the naive loss, and their CUDA memory in T. Same contract as
``gpu_check_paths`` (return a detail, raise ``Skip`` or fail)."""
from __future__ import annotations

import inspect

from gpu_check_paths import Ctx, Skip, _need, _rel_err


# ------------------------------------------------------------------------- 5-6: chunked losses
def _kl_inputs(device: str, B: int, T: int, H: int, V: int, seed: int = 0, teacher_hidden: int = 0):
    """Random student hidden [B,T,H] and head [V,H] (leaves), a mask with padding, and either teacher
    log-probs [B,T,V] or (with ``teacher_hidden``) teacher hidden states and head."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=device)  # noqa: E731
    h = (randn(B, T, H) / H ** 0.5).requires_grad_()
    w = randn(V, H).requires_grad_()
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[-1, T - T // 5:] = False  # a shorter last sequence
    if teacher_hidden:
        return h, w, mask, (randn(B, T, teacher_hidden) / teacher_hidden ** 0.5, randn(V, teacher_hidden))
    return h, w, mask, torch.log_softmax(randn(B, T, V) * 2, -1)


def _loss_and_grads(fn, h, w, *args, **kw):
    h.grad = w.grad = None
    loss, _ = fn(h, w, *args, **kw)
    loss.backward()
    return loss.item(), h.grad.detach().cpu(), w.grad.detach().cpu()


def _peak_extra_bytes(fn) -> int:
    """Peak CUDA memory allocated by ``fn()`` beyond what was allocated before it."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# Memory flat in T: measured at N1 = 2 x 1024 and N2 = 2 x 4096 positions with V = 32768. A loss that
# kept a [N, V] float32 tensor would grow by >= 4V bytes (128 KiB) per position; the chunked loss may
# grow only by per-position vectors of size H (its hidden-state gradient), so the bound is V bytes
# per position (4x below one logits row, 32x above 4H). The naive full-vocabulary loss is measured
# the same way and must exceed 4V per position: proof that the measurement sees such a tensor.
MEM_T, MEM_B, MEM_H, MEM_V, MEM_CHUNK = (1024, 4096), 2, 256, 32768, 1024


def _growth_per_position(make_loss) -> tuple[float, list[int]]:
    peaks = []
    for T in MEM_T:
        run = make_loss(T)  # inputs are allocated here, before the measurement starts
        peaks.append(_peak_extra_bytes(run))
        del run
    return (peaks[1] - peaks[0]) / (MEM_B * (MEM_T[1] - MEM_T[0])), peaks


def chunked_kl(ctx: Ctx) -> str:
    """chunked_full_reverse_kl on the device: value and both gradients equal the CPU ones and the
    naive full_reverse_kl's (fp32: 1e-4 relative, reduction order only); CUDA memory flat in T."""
    from opcd import losses

    tau, chunk = 0.7, 128
    h, w, mask, teacher = _kl_inputs("cpu", 2, 300, 64, 4096)
    ref = _loss_and_grads(losses.chunked_full_reverse_kl, h, w, teacher, mask, temperature=tau, chunk_size=chunk)
    hd, wd = (t.detach().to(ctx.device).requires_grad_() for t in (h, w))
    got = _loss_and_grads(losses.chunked_full_reverse_kl, hd, wd, teacher.to(ctx.device), mask.to(ctx.device),
                          temperature=tau, chunk_size=chunk)
    # full_reverse_kl takes teacher logits and divides them by tau: tau * log-probs gives the same log-probs
    naive = _loss_and_grads(lambda a, b, *r, **k: losses.full_reverse_kl(a @ b.t(), *r, **k), hd, wd,
                            teacher.to(ctx.device) * tau, mask.to(ctx.device), temperature=tau)
    for name, other in (("CPU", ref), ("full_reverse_kl", naive)):
        errs = [abs(got[0] - other[0]) / abs(other[0]), _rel_err(got[1], other[1]), _rel_err(got[2], other[2])]
        _need(max(errs) <= 1e-4, f"against {name}: loss/grad_hidden/grad_head rel err {errs} (> 1e-4)")
    detail = f"loss {got[0]:.5f} = CPU {ref[0]:.5f} = full_reverse_kl; grads match (1e-4)"
    if not ctx.cuda:
        return detail + "; memory not measured (CPU self-test)"

    def chunked_at(T):
        a, b, m, t = _kl_inputs(ctx.device, MEM_B, T, MEM_H, MEM_V)
        return lambda: losses.chunked_full_reverse_kl(a, b, t, m, chunk_size=MEM_CHUNK)[0].backward()

    def naive_at(T):
        a, b, m, t = _kl_inputs(ctx.device, MEM_B, T, MEM_H, MEM_V)
        return lambda: losses.full_reverse_kl(a @ b.t(), t, m)[0].backward()

    return detail + "; " + _flat_memory(chunked_at, naive_at)


def _flat_memory(chunked_at, naive_at) -> str:
    grow, peaks = _growth_per_position(chunked_at)
    grow_naive, peaks_naive = _growth_per_position(naive_at)
    mib = lambda b: f"{b / 2**20:.0f}"
    _need(grow_naive >= 4 * MEM_V, f"the naive loss grew only {grow_naive:.0f} B/position: the measurement is blind")
    _need(grow <= MEM_V, f"peak memory grows {grow:.0f} B per position (> {MEM_V}): not flat in T "
                         f"(peaks {mib(peaks[0])} -> {mib(peaks[1])} MiB)")
    return (f"peak extra CUDA memory T={MEM_T[0]}->{MEM_T[1]}: {mib(peaks[0])}->{mib(peaks[1])} MiB "
            f"({grow:.0f} B/position <= {MEM_V}; naive {mib(peaks_naive[0])}->{mib(peaks_naive[1])} MiB)")


def _hidden_fn():
    import opcd.chunked_kl

    fn = getattr(opcd.chunked_kl, "chunked_reverse_kl_from_hidden", None)
    if fn is None:
        raise Skip("not implemented in this checkout (no opcd.chunked_kl.chunked_reverse_kl_from_hidden)")
    return fn


def _call_hidden(fn, h, w, teacher, mask, **kw):
    """fn(student_hidden, student_head, teacher_hidden, teacher_head, mask, **kw) with the keywords its
    signature has; a signature that does not fit fails with the signature in the message."""
    sig = inspect.signature(fn)
    kw = {k: v for k, v in kw.items() if k in sig.parameters}
    try:
        return fn(h, w, teacher[0], teacher[1], mask, **kw)
    except TypeError as e:
        raise TypeError(f"{e}; called as (student_hidden, student_head, teacher_hidden, teacher_head, mask, "
                        f"**{sorted(kw)}) but the signature is {sig}") from e


def hidden_state_kl(ctx: Ctx) -> str:
    """The teacher hidden-state path: the learner forms the teacher's logits chunk by chunk from its
    final hidden states and frozen head. Equal (1e-4) to the full-vocabulary chunked loss fed the
    teacher's log-probs, on the device and against CPU; CUDA memory flat in T."""
    import torch

    from opcd import losses

    fn = _hidden_fn()
    tau, chunk = 0.7, 128
    h, w, mask, (th, tw) = _kl_inputs("cpu", 2, 300, 64, 4096, teacher_hidden=48)
    full_lp = torch.log_softmax((th @ tw.t()) / tau, -1)
    ref = _loss_and_grads(losses.chunked_full_reverse_kl, h, w, full_lp, mask, temperature=tau, chunk_size=chunk)
    cpu = _loss_and_grads(lambda *a, **k: _call_hidden(fn, *a, **k), h, w, (th, tw), mask, temperature=tau,
                          chunk_size=chunk)
    hd, wd = (t.detach().to(ctx.device).requires_grad_() for t in (h, w))
    got = _loss_and_grads(lambda *a, **k: _call_hidden(fn, *a, **k), hd, wd, (th.to(ctx.device), tw.to(ctx.device)),
                          mask.to(ctx.device), temperature=tau, chunk_size=chunk)
    for name, a, b in (("CPU hidden vs full-vocabulary", cpu, ref), (f"{ctx.device} vs CPU", got, cpu)):
        errs = [abs(a[0] - b[0]) / abs(b[0]), _rel_err(a[1], b[1]), _rel_err(a[2], b[2])]
        _need(max(errs) <= 1e-4, f"{name}: loss/grad_hidden/grad_head rel err {errs} (> 1e-4)")
    detail = f"loss {got[0]:.5f} = full-vocabulary {ref[0]:.5f}; grads match (1e-4)"
    if not ctx.cuda:
        return detail + "; memory not measured (CPU self-test)"

    def hidden_at(T):
        a, b, m, t = _kl_inputs(ctx.device, MEM_B, T, MEM_H, MEM_V, teacher_hidden=MEM_H)
        return lambda: _call_hidden(fn, a, b, t, m, chunk_size=MEM_CHUNK)[0].backward()

    def naive_at(T):
        a, b, m, (t, tw_) = _kl_inputs(ctx.device, MEM_B, T, MEM_H, MEM_V, teacher_hidden=MEM_H)
        return lambda: losses.full_reverse_kl(a @ b.t(), t @ tw_.t(), m)[0].backward()

    return detail + "; " + _flat_memory(hidden_at, naive_at)
