"""The checks of ``launch/gpu_check.py``: one function per CUDA path, each run in its own process.

Each check takes a :class:`Ctx` and returns a one-line detail (PASS), raises :class:`Skip` (SKIPPED,
with the reason) or raises anything else (FAIL). ``Ctx.device`` is ``"cuda"`` on a GPU machine; the
runner's ``--device cpu`` self-test runs the same code on CPU with gloo instead of NCCL and without
the CUDA-memory measurements, so the script can be exercised before a GPU is lent.

Models: the tiny random Llama of ``tests/conftest.py`` (character tokenizer, hidden 64, 1 layer,
2 heads), built in the process from the toy tooling: nothing is downloaded.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from pathlib import Path

K = 4  # top-k support of the tiny learner batch


class Skip(Exception):
    """The path cannot run here; the message is the reason printed after SKIPPED."""


@dataclass
class Ctx:
    device: str  # "cuda" (the real check) | "cpu" (the script's self-test)
    tmp: Path  # a scratch directory of this check's process

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def backend(self) -> str:
        return "nccl" if self.cuda else "gloo"


# ------------------------------------------------------------------------------------------ helpers
def _toy():
    """(build_char_tokenizer, build_model), from opcd.models.toy (new home) or opcd.tasks (old one)."""
    try:
        from opcd.models.toy.char_tokenizer import build_char_tokenizer
        from opcd.models.toy.pretrain import build_model
    except ImportError:
        from opcd.tasks.char_tokenizer import build_char_tokenizer
        from opcd.tasks.pretrain import build_model
    return build_char_tokenizer, build_model


def tiny_models(layers: int = 1):
    """(tokenizer, student, teacher): fp32 CPU models as tests/conftest.py and test_objective.py build them."""
    import torch

    build_char_tokenizer, build_model = _toy()
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    student = build_model(tok, hidden=64, layers=layers, heads=2)
    torch.manual_seed(1)  # a different random model: the KLs are clearly nonzero
    teacher = build_model(tok, hidden=32, layers=1, heads=2).eval()
    return tok, student, teacher


def tiny_model_dir(ctx: Ctx):
    """(path, tokenizer) of the student saved as an HF directory (what LearnerActor / vLLM load)."""
    tok, student, _ = tiny_models()
    d = ctx.tmp / "tiny-model"
    student.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d), tok


def _views(tok):
    from opcd.chat import encode_answer, encode_prompt

    recs = [("abc", "Reverse the string.", "cba"), ("hello", "Reverse the string.", "ol"),
            ("xy", "Examples:\nab -> ba", "yxyxy")]
    return ([encode_prompt(tok, p) for p, _, _ in recs], [encode_prompt(tok, p, c) for p, c, _ in recs],
            [encode_answer(tok, a) for _, _, a in recs])


def learn_batch(tok, student, teacher):
    """A 3-sequence LearnBatch through the real pipeline (as tests/learner/test_objective.py builds it):
    the student scores its own responses (behaviour log-probs, top-k), the teacher scores the
    with-context sequences at the student's top-k, build_learn_batch joins them. CPU, fp32."""
    from opcd.batch import build_learn_batch
    from opcd.engine import Sample
    from opcd.teacher.scoring import score_responses

    sp, cp, resps = _views(tok)
    lens, pad = [len(r) for r in resps], tok.pad_token_id
    own = score_responses(student, [p + r for p, r in zip(sp, resps)], lens, pad, support="topk", k=K)
    samples = [Sample(prompt_ids=p, response_ids=r, logprobs=own["token_logprobs"][i, :len(r)].tolist())
               for i, (p, r) in enumerate(zip(sp, resps))]
    scores = score_responses(teacher, [p + r for p, r in zip(cp, resps)], lens, pad, support=own["support_ids"], k=K)
    return build_learn_batch(samples, sp, cp, scores)


def _algo(**kw):
    from opcd.config import AlgoConfig

    return AlgoConfig(loss="topk_reverse_kl", top_k=K, lr=1e-3, grad_clip=1.0, **kw)


def _cos(a, b) -> float:
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def _rel_err(got, ref) -> float:
    """max |got - ref| / max |ref|: one number for a whole tensor, insensitive to tiny entries."""
    return float((got.double().cpu() - ref.double().cpu()).abs().max() / ref.double().abs().max().clamp_min(1e-30))


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(what)


# ------------------------------------------------------------------------ 1-2: DeepSpeed bf16 steps
# Tolerances of the bf16 ZeRO step against the fp32 CPU step, which starts from the same weights
# (the checkpoint rounded to bf16, exactly DeepSpeed's fp32 master copy):
# * loss: bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation); a 1-layer
#   forward compounds a few such roundings, so 2% relative (+ 2e-3 nats absolute, for a near-zero KL)
#   is a ~10x margin (an fp32-vs-bf16 CPU run of this batch differs by 0.03%).
# * update: the first AdamW step moves each weight by lr * g / (|g| + eps), i.e. lr * sign(g): bf16
#   gradients change it only where they flip the sign of a gradient within rounding of zero. A cosine
#   >= 0.95 between the fp32 master-weight updates allows ~2.5% of the update mass to flip (the
#   CPU bf16 run flips 0.2%); a wrong gradient (wrong loss, lost micro-batch, stale weights) gives ~0.
LOSS_RTOL, LOSS_ATOL, UPDATE_COS = 2e-2, 2e-3, 0.95


def _fp32_masters(engine) -> list:
    from deepspeed.utils import safe_get_full_fp32_param

    return [safe_get_full_fp32_param(p).detach().float().cpu().clone() for p in engine.module.parameters()]


def _reference_step(model_dir: str, mb, algo, pad_id: int):
    """(loss, flat update) of one fp32 CPU step from the bf16-rounded checkpoint: torch AdamW after
    global-norm clipping, as DeepSpeed's config (opcd.learner.actor.deepspeed_config) asks."""
    import torch

    from opcd.learner.objective import student_loss
    from opcd.modeling import load_causal_lm

    model = load_causal_lm(model_dir, "float32")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    before = [p.detach().clone() for p in model.parameters()]
    loss, _ = student_loss(model, mb, algo, pad_id)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), algo.grad_clip)
    opt = torch.optim.AdamW(model.parameters(), lr=algo.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=algo.weight_decay)
    opt.step()
    return float(loss), before, torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])


def zero_step(ctx: Ctx, stage: int) -> str:
    """One bf16 optimizer step of opcd's LearnerActor (deepspeed_config + student_loss) under ZeRO-``stage``."""
    import torch

    from opcd.config import LearnerConfig
    from opcd.learner.actor import LearnerActor
    from opcd.net import free_port

    model_dir, tok = tiny_model_dir(ctx)
    _, student, teacher = tiny_models()
    mb = learn_batch(tok, student, teacher)
    algo = _algo()
    learner = LearnerConfig(backend=ctx.backend, device=ctx.device, zero_stage=stage, precision="bf16",
                            micro_batch_size=len(mb), threads=2)
    actor = LearnerActor(model_dir, learner, algo, "bfloat16", len(mb), 0, 1, "127.0.0.1", free_port(), seed=0)
    dev = next(actor.engine.module.parameters()).device
    _need(dev.type == ctx.device, f"DeepSpeed put the model on {dev}, expected {ctx.device}")
    shipped0 = actor.named_weights()  # what a weight sync would send (gathered under ZeRO-3)
    master0 = _fp32_masters(actor.engine)
    metrics = actor.train_step(mb)
    shipped1, master1 = actor.named_weights(), _fp32_masters(actor.engine)

    loss_ref, ref0, update_ref = _reference_step(model_dir, mb, algo, tok.pad_token_id)
    _need(all(torch.equal(m, r) for m, r in zip(master0, ref0)),
          "DeepSpeed's fp32 master weights do not start at the bf16-rounded checkpoint")
    loss = metrics["loss/total"]
    _need(math.isfinite(loss) and metrics["nonfinite"] == 0.0, f"non-finite step: {metrics}")
    _need(abs(loss - loss_ref) <= LOSS_ATOL + LOSS_RTOL * abs(loss_ref),
          f"loss {loss:.6f} vs fp32 CPU {loss_ref:.6f} (tolerance {LOSS_RTOL:g} rel + {LOSS_ATOL:g})")
    update = torch.cat([(m1 - m0).flatten() for m0, m1 in zip(master0, master1)])
    cos = _cos(update, update_ref)
    _need(cos >= UPDATE_COS, f"fp32 master update cosine {cos:.4f} < {UPDATE_COS} against the fp32 CPU step")
    moved = [n for (n, a), (_, b) in zip(shipped0, shipped1) if not torch.equal(a, b)]
    matrices = [n for n, t in shipped0 if t.dim() >= 2]
    _need(set(matrices) <= set(moved), f"weight matrices unchanged after the step: {sorted(set(matrices) - set(moved))}")
    return (f"ZeRO-{stage} bf16 on {dev}: loss {loss:.5f} vs fp32 CPU {loss_ref:.5f}; fp32 master update cosine "
            f"{cos:.4f} (>= {UPDATE_COS}); {len(moved)}/{len(shipped0)} gathered bf16 tensors changed")


def zero2_bf16_step(ctx: Ctx) -> str:
    return zero_step(ctx, 2)


def zero3_bf16_step(ctx: Ctx) -> str:
    return zero_step(ctx, 3)


# ------------------------------------------------------------------------ 3: gradient checkpointing
def gradient_checkpointing(ctx: Ctx) -> str:
    """fp32 loss and gradients with and without HF gradient checkpointing (as LearnerActor enables it).

    Recomputing a layer repeats the same fp32 arithmetic; only non-deterministic reduction order
    (atomics in attention's backward) can differ, a few ulps of sums: 1e-5 of the largest gradient
    is a wide margin, while a lost or double-counted gradient differs by O(1).
    """
    import torch

    from opcd.learner.objective import student_loss

    tok, student, teacher = tiny_models(layers=2)
    mb = learn_batch(tok, student, teacher)
    model = copy.deepcopy(student).to(ctx.device).train()
    calls = [0]
    for layer in model.model.layers:
        # a pre-hook: the non-reentrant recompute stops early, before a layer's forward would return
        layer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        calls[0] = 0
        loss, _ = student_loss(model, mb, _algo(), tok.pad_token_id)
        loss.backward()
        return loss.item(), [p.grad.detach().clone() for p in model.parameters()], calls[0]

    loss_a, grads_a, calls_a = loss_and_grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loss_b, grads_b, calls_b = loss_and_grads()
    n = len(model.model.layers)
    _need(calls_a == n and calls_b == 2 * n,
          f"decoder-layer forwards: {calls_a} without, {calls_b} with checkpointing (expected {n} and {2 * n})")
    _need(abs(loss_a - loss_b) <= 1e-6 * abs(loss_a) + 1e-8, f"loss {loss_b!r} with vs {loss_a!r} without")
    err = max(_rel_err(b, a) for a, b in zip(grads_a, grads_b))
    _need(err <= 1e-5, f"gradients differ by {err:.2e} of their largest entry (> 1e-5)")
    return f"{n} layers recomputed on {ctx.device} (forwards {calls_a} -> {calls_b}); loss equal, grad rel err {err:.1e} (<= 1e-5)"


# ------------------------------------------------------------------------------ 4: teacher scoring
def teacher_scoring(ctx: Ctx) -> str:
    """score_responses on the device against CPU, fp32 (1e-4 nats: reduction order only) and bf16.

    bf16 weights round every activation to 8 significant bits; on this near-uniform random model
    the CPU bf16 scores differ from fp32 by 0.002 nats, so 0.05 nats is a 25x margin.
    """
    import torch

    from opcd.teacher.scoring import score_responses

    tok, student, teacher = tiny_models()
    _, cp, resps = _views(tok)
    seqs, lens, pad = [p + r for p, r in zip(cp, resps)], [len(r) for r in resps], tok.pad_token_id
    dev_teacher = copy.deepcopy(teacher).to(ctx.device)
    worst = {}
    support = score_responses(student, seqs, lens, pad, support="topk", k=K)["support_ids"]
    for name, sup in (("topk", "topk"), ("student_topk", support), ("full", "full")):
        ref = score_responses(teacher, seqs, lens, pad, support=sup, k=K, micro_batch_size=2)
        got = score_responses(dev_teacher, seqs, lens, pad, support=sup, k=K, micro_batch_size=2)
        _need(all(t.device.type == "cpu" for t in got.values()), "scores must come back on CPU")
        # top-k values are compared sorted: near-ties may swap ids, never values
        err = max(float((got[k] - ref[k]).abs().max()) for k in ("logprobs", "token_logprobs"))
        _need(err <= 1e-4, f"support={name}: device scores differ from CPU by {err:.2e} nats (> 1e-4)")
        worst[name] = err
    bf16 = score_responses(copy.deepcopy(teacher).to(ctx.device, torch.bfloat16), seqs, lens, pad, support="full")
    ref = score_responses(teacher, seqs, lens, pad, support="full")
    err16 = float((bf16["logprobs"] - ref["logprobs"]).abs().max())
    _need(err16 <= 0.05, f"bf16 teacher on {ctx.device} differs from fp32 CPU by {err16:.3f} nats (> 0.05)")
    return (f"fp32 max |diff| {max(worst.values()):.1e} nats over topk/student_topk/full (<= 1e-4); "
            f"bf16 {err16:.3f} nats (<= 0.05)")


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
    import torch

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
