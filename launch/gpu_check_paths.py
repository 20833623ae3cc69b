"""The learner and teacher checks of ``launch/gpu_check.py``, and what every check shares.

One function per CUDA path, each run in its own process.

Each check takes a :class:`Ctx` and returns a one-line detail (PASS), raises :class:`Skip` (SKIPPED,
with the reason) or raises anything else (FAIL). ``Ctx.device`` is ``"cuda"`` on a GPU machine; the
runner's ``--device cpu`` self-test runs the same code on CPU with gloo instead of NCCL and without
the CUDA-memory measurements, so the script can be exercised before a GPU is lent.

Models: the tiny random Llama of ``tests/conftest.py`` (character tokenizer, hidden 64, 1 layer,
2 heads), built in the process from the toy tooling: nothing is downloaded.
"""
from __future__ import annotations

import copy
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
#   The cosine cannot see the step's size, hence the norm ratio: every element moves by about lr
#   whatever its gradient's precision (flips change signs, not sizes), so 5% allows elements whose
#   |g| is near Adam's eps; a wrong learning rate or a skipped step is off by far more.
LOSS_RTOL, LOSS_ATOL, UPDATE_COS, UPDATE_NORM_RTOL = 2e-2, 2e-3, 0.95, 0.05


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
    return loss.item(), before, torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])


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
    cos, ratio = _cos(update, update_ref), float(update.norm() / update_ref.norm())
    _need(cos >= UPDATE_COS, f"fp32 master update cosine {cos:.4f} < {UPDATE_COS} against the fp32 CPU step")
    _need(abs(ratio - 1) <= UPDATE_NORM_RTOL, f"fp32 master update norm {ratio:.4f} x the fp32 CPU step's "
                                              f"(tolerance {UPDATE_NORM_RTOL:g})")
    moved = [n for (n, a), (_, b) in zip(shipped0, shipped1) if not torch.equal(a, b)]
    matrices = [n for n, t in shipped0 if t.dim() >= 2]
    _need(set(matrices) <= set(moved), f"weight matrices unchanged after the step: {sorted(set(matrices) - set(moved))}")
    return (f"ZeRO-{stage} bf16 on {dev}: loss {loss:.5f} vs fp32 CPU {loss_ref:.5f}; fp32 master update cosine "
            f"{cos:.4f} (>= {UPDATE_COS}), norm ratio {ratio:.4f}; {len(moved)}/{len(shipped0)} gathered bf16 tensors changed")


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
