"""Context-removability metrics: the same test prompts answered with and without the context.

Pure functions over per-record results, so they are testable without any engine:

- ``Acc_x``: accuracy without the context (the distilled behaviour);
- ``Acc_{x,c}``: accuracy with it (what the context still has to do after distillation);
- ``Harm``: P(wrong with the context | right without it) -- the "context returns" failure;
- ``BothCorrect``: P(right with and without);
- ``Δlen``: relative change in response length when the context is added;
- teacher-student agreement: mean per-token KL(student || teacher) on a fixed set.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NONE = "none"  # the context kind of a record shown without any context


@dataclass
class Result:
    record: dict  # the evaluated record (metadata: group, context_kind, rule, ...)
    correct: bool  # verifier verdict on the response
    length: int  # response length in tokens (the policy's own tokens for a multi-turn episode)
    sample: int = 0  # which of the record's samples this is (0 .. samples-1; prompt-major order)
    text: str = ""  # the response text the verifier judged


def pair_key(record: dict) -> tuple:
    """Records that ask the same question in one group (whatever their context) share this key."""
    m = record["metadata"]
    return m.get("group", "all"), m.get("rule", ""), record["prompt"]


def accuracies(results: list[Result], prefix: str = "eval") -> dict[str, float]:
    """``{prefix}/{group}/{context_kind}``: accuracy per group and context kind (Acc_x is kind ``none``)."""
    groups: dict[str, list[bool]] = {}
    for r in results:
        m = r.record["metadata"]
        groups.setdefault(f"{prefix}/{m.get('group', 'all')}/{m.get('context_kind', 'any')}", []).append(r.correct)
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def paired(results: list[Result], prefix: str = "eval") -> dict[str, float]:
    """Harm, BothCorrect and Δlen for every (group, context kind) that has no-context partners.

    Keys ``{prefix}/{group}/harm_{kind}``, ``.../both_correct_{kind}``, ``.../delta_len_{kind}``.
    Harm is over the pairs answered right without the context (absent when there are none). With
    several samples per prompt, sample j with the context is paired with sample j without it.
    """
    without = {(pair_key(r.record), r.sample): r for r in results if r.record["metadata"].get("context_kind") == NONE}
    pairs: dict[tuple[str, str], list[tuple[Result, Result]]] = {}
    for r in results:
        kind = r.record["metadata"].get("context_kind")
        partner = without.get((pair_key(r.record), r.sample))
        if kind != NONE and partner is not None:
            pairs.setdefault((pair_key(r.record)[0], kind), []).append((partner, r))
    out = {}
    for (group, kind), ps in sorted(pairs.items()):
        base = f"{prefix}/{group}"
        right_without = [w for x, w in ps if x.correct]
        if right_without:
            out[f"{base}/harm_{kind}"] = sum(not w.correct for w in right_without) / len(right_without)
        out[f"{base}/both_correct_{kind}"] = sum(x.correct and w.correct for x, w in ps) / len(ps)
        len_x = sum(x.length for x, _ in ps) / len(ps)
        len_w = sum(w.length for _, w in ps) / len(ps)
        if len_x > 0:
            out[f"{base}/delta_len_{kind}"] = len_w / len_x - 1.0
    return out


def per_prompt(results: list[Result]) -> list[list[bool]]:
    """Verdicts grouped by prompt: ``[[sample 0, sample 1, ...] per record]`` from prompt-major results
    (a record's group starts at its sample 0). The unit for intervals over prompts (opcd.eval.stats)."""
    groups: list[list[bool]] = []
    for r in results:
        if r.sample == 0 or not groups:
            groups.append([])
        groups[-1].append(r.correct)
    return groups


def topk_agreement_kl(student_topk_logprobs: torch.Tensor, teacher_topk_logprobs: torch.Tensor,
                      mask: torch.Tensor) -> float:
    """Mean per-token KL(student || teacher) over the student's top-k tokens, renormalised on both sides.

    Args: ``[N, T, k]`` log-probs of the same k token ids (student's top-k) under each model, and a
    ``[N, T]`` mask of real response tokens. Returns nats per token (0 when the mask is empty).
    """
    s = torch.log_softmax(student_topk_logprobs.double(), -1)
    t = torch.log_softmax(teacher_topk_logprobs.double(), -1)
    kl = (s.exp() * (s - t)).sum(-1)
    m = mask.bool()
    return float(kl[m].mean()) if m.any() else 0.0
