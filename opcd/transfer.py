"""What the teacher ships to the learner per response token, chosen by bytes, and the start-up checks.

A full-vocabulary loss (``full_reverse_kl``, ``jsd``) needs the teacher's distribution over all
``V`` tokens at every response position. Two ways to get it to the learner:

* ``logprobs``: the teacher ships ``[B, T, V]`` float32 log-probs: ``V x 4`` bytes per token
  (SmolLM2: 196,608 B; Qwen3-8B: 607,744 B, about a terabyte for a paper-scale step);
* ``hidden``: the teacher ships its final hidden states ``[B, T, d]`` (the input of its LM head,
  after the final norm), ``d x 2`` (bf16) or ``d x 4`` (fp32) bytes per token, and the learner
  applies a frozen copy of the teacher's LM head chunk by chunk inside the loss
  (``opcd.chunked_kl.chunked_reverse_kl_from_hidden``).

Top-k losses ship ``k x (4 + 8)`` bytes per token (float32 log-probs and int64 ids at the top-k).
Forming those from hidden states would still need the ids shipped back (8 bytes each), so it never
pays: the hidden path is implemented for full-vocabulary losses only, and for top-k losses the
plan only reports both sizes.

:func:`plan_transfer` is pure (numbers in, a :class:`TransferPlan` or a one-line ``ValueError``
out); :func:`transfer_plan` reads the two models' configs and calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from opcd.hardware import choose_dtype, cpu_flags

SETTINGS = ("auto", "logprobs", "hidden")
FULL, STUDENT_TOPK, TOPK = "full", "student_topk", "topk"  # opcd.algorithms.TEACHER_SUPPORT values
MIB = 2 ** 20
ID_BYTES, LOGPROB_BYTES = 8, 4  # int64 ids, float32 log-probs
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
# Config fields of architectures that change the logits after the LM head's matmul: the learner's
# copy of the head (a plain [V, d] weight) would not reproduce the teacher's logits.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@dataclass(frozen=True)
class ModelDims:
    """What the transfer plan needs to know of one model (from its config)."""

    vocab_size: int  # V: rows of the LM head (config.vocab_size, padding included)
    hidden_size: int  # d: the LM head's input width
    head_issue: str = ""  # why a plain [V, d] head would not reproduce the logits ("" = it would)


@dataclass(frozen=True)
class TransferPlan:
    """What the teacher ships per step, and why (``line`` is printed at start-up)."""

    mode: str  # logprobs | hidden
    bytes_per_token: int  # what the teacher ships per response token under ``mode``
    options: dict = field(default_factory=dict)  # candidate -> bytes per token (full_logprobs | topk_logprobs | hidden)
    tokens_per_step: int = 0  # B x T bound: prompts_per_step x rollout.n x longest response
    line: str = ""  # one line for the start-up log

    @property
    def mb_per_step(self) -> float:
        """MiB the teacher ships per step at most (``tokens_per_step`` x ``bytes_per_token``)."""
        return self.tokens_per_step * self.bytes_per_token / MIB


def dtype_bytes(dtype: str) -> int:
    try:
        return _DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown model.dtype {dtype!r}; expected float32 or bfloat16") from None


def teacher_dtype(cfg) -> str:
    """The dtype the teacher scores in: ``model.dtype``, or for ``auto`` what ``opcd.hardware`` picks on
    this (the driver's) machine -- the teacher actor picks on its own, the same on a uniform cluster."""
    return choose_dtype(cfg.model.dtype, "teacher", cpu_flags(), cuda=cfg.learner.device == "cuda")


def bytes_per_token(vocab_size: int, hidden_size: int, top_k: int, hidden_dtype_bytes: int) -> dict[str, int]:
    """Teacher bytes per response token of each way of shipping its distribution (pure).

    ``full_logprobs``: V float32; ``topk_logprobs``: k float32 log-probs + k int64 ids;
    ``hidden``: d floats of the teacher's dtype. (The [T] token log-probs, 4 bytes, ship in every mode.)
    """
    return {"full_logprobs": vocab_size * LOGPROB_BYTES, "topk_logprobs": top_k * (LOGPROB_BYTES + ID_BYTES),
            "hidden": hidden_size * hidden_dtype_bytes}


def plan_transfer(*, loss: str, teacher_returns: str, setting: str, top_k: int, student: ModelDims,
                  teacher: ModelDims, hidden_dtype_bytes: int, tokens_per_step: int,
                  max_transfer_mb: float) -> TransferPlan:
    """Choose what the teacher ships and refuse bad input, each with a one-line ``ValueError``.

    Args:
        loss: ``algo.loss`` (for the messages). teacher_returns: ``AlgoSpec.teacher_returns``
            (``full`` | ``student_topk`` | ``topk``). setting: ``algo.teacher_transfer``.
        top_k: ``algo.top_k``: log-probs per position asked of the engines (the rollout's top-k
            support and the evaluation's agreement KL, whatever the loss).
        student, teacher: the two models' dims. hidden_dtype_bytes: 2 (bf16) or 4 (fp32).
        tokens_per_step: B x T, the most response positions one step can score.
        max_transfer_mb: refuse a ``[B, T, V]`` log-prob transfer above this many MiB per step.

    Refused: an unknown setting; a top-k outside ``1..V`` (vLLM returns at most V log-probs per
    position: ``max_logprobs`` is raised to ``top_k`` by ``opcd.engine.engine_kwargs``, but no
    engine can rank more tokens than the vocabulary has); a vocabulary mismatch a KL cannot bridge;
    ``hidden`` for a top-k loss or a teacher whose logits are not ``hidden @ head.T``; a
    ``[B, T, V]`` transfer over ``max_transfer_mb``.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown algo.teacher_transfer {setting!r}; expected one of {', '.join(SETTINGS)}")
    V, Vt, d = student.vocab_size, teacher.vocab_size, teacher.hidden_size
    if not 1 <= top_k <= V:
        raise ValueError(f"algo.top_k={top_k} is outside 1..{V}: the engines return at most the vocabulary size "
                         f"(V={V}) of log-probs per position; set algo.top_k to at most {V}")
    full = teacher_returns == FULL
    if full and Vt != V:
        raise ValueError(f"algo.loss={loss} compares full distributions, but the student's vocabulary has {V} "
                         f"entries and the teacher's {Vt}; pick a teacher with the same vocab_size")
    if teacher_returns == STUDENT_TOPK and Vt < V:
        raise ValueError(f"algo.loss={loss} scores the student's top-k ids with the teacher, but the student's "
                         f"vocabulary ({V}) is larger than the teacher's ({Vt}); pick a teacher with the same vocab_size")
    sizes = bytes_per_token(V, d, top_k, hidden_dtype_bytes)
    shipped = "full_logprobs" if full else "topk_logprobs"
    if setting == "hidden" and not full:
        raise ValueError(f"algo.teacher_transfer=hidden is implemented for full-vocabulary losses (full_reverse_kl, "
                         f"jsd); algo.loss={loss} ships {sizes[shipped]} B/token of top-k log-probs; "
                         "set algo.teacher_transfer=auto or logprobs")
    if setting == "hidden" and teacher.head_issue:
        raise ValueError(f"algo.teacher_transfer=hidden needs teacher logits = hidden @ lm_head.T, but "
                         f"{teacher.head_issue}; set algo.teacher_transfer=logprobs")
    hidden_ok = full and not teacher.head_issue
    if setting == "auto":
        mode = "hidden" if hidden_ok and sizes["hidden"] < sizes["full_logprobs"] else "logprobs"
    else:
        mode = setting
    plan_bytes = sizes["hidden"] if mode == "hidden" else sizes[shipped]
    mb = tokens_per_step * plan_bytes / MIB
    if full and mode == "logprobs" and mb > max_transfer_mb:
        alt = (f"set algo.teacher_transfer=hidden ({sizes['hidden']} B/token, "
               f"{tokens_per_step * sizes['hidden'] / MIB:.1f} MiB per step) or " if hidden_ok else "")
        raise ValueError(f"the teacher would ship [B, T, V] float32 log-probs of {mb:.1f} MiB per step "
                         f"({tokens_per_step} tokens x V={V} x 4 B), over teacher.max_transfer_mb={max_transfer_mb:g}; "
                         f"{alt}raise teacher.max_transfer_mb, or lower prompts_per_step / rollout.max_tokens")
    others = ", ".join(f"{k} {sizes[k]} B" for k in (shipped, "hidden"))
    line = (f"[opcd] teacher transfer: {mode} ({plan_bytes} B/token, {mb:.1f} MiB per step at most; "
            f"algo.loss={loss}, algo.teacher_transfer={setting}; candidates: {others})")
    return TransferPlan(mode, plan_bytes, sizes, tokens_per_step, line)


def model_dims(path: str) -> ModelDims:
    """V, d and any logit transform after the LM head, from a model's config (local dir or hub id)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    issues = [f"{a}={getattr(text, a)}" for a in _LOGIT_TRANSFORMS if getattr(text, a, None) not in (None, 1, 1.0)]
    issue = f"{path} ({text.model_type}) sets {', '.join(issues)}" if issues else ""
    return ModelDims(int(text.vocab_size), int(text.hidden_size), issue)


def response_tokens_bound(cfg) -> int:
    """The most response positions one step can have: B x T (multi-turn episodes may fill the window)."""
    B = cfg.prompts_per_step * cfg.rollout.n
    T = cfg.model.max_model_len if getattr(cfg.task, "max_turns", None) else cfg.rollout.max_tokens
    return B * min(T, cfg.model.max_model_len)


def transfer_plan(cfg, spec, teacher_path: str) -> TransferPlan:
    """The run's :class:`TransferPlan` (``spec``: its ``opcd.algorithms.AlgoSpec``); one-line errors."""
    student = model_dims(cfg.model.path)
    teacher = student if teacher_path == cfg.model.path else model_dims(teacher_path)
    return plan_transfer(loss=spec.loss, teacher_returns=spec.teacher_returns, setting=cfg.algo.teacher_transfer,
                         top_k=spec.top_k, student=student, teacher=teacher,
                         hidden_dtype_bytes=dtype_bytes(teacher_dtype(cfg)),
                         tokens_per_step=response_tokens_bound(cfg),
                         max_transfer_mb=cfg.teacher.max_transfer_mb)
