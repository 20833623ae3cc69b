"""The one evaluator: render each record with its context, generate, verify, aggregate.

Every evaluation in opcd goes through here: the training loop's (``generate`` = its rollout actors),
``python -m opcd.eval`` (a local vLLM engine over toy-world records, ``opcd.eval.toy``) and the
system-prompt evaluator (``opcd.eval.sysprompt``). They differ only in the ``generate`` function
they pass and in how they present the per-sample results.

A record is ``{"prompt", "context", "metadata", ...}``; it is rendered through the model's chat
template with its context as the system message, so a record whose context is ``""`` is the
no-context view of its prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from opcd.chat import encode_prompt
from opcd.eval.metrics import Result, accuracies, paired

if TYPE_CHECKING:
    from opcd.engine import Sample


@dataclass
class EvalSettings:
    """How answers are drawn. The defaults are the training loop's greedy evaluation."""

    max_tokens: int = 32  # new tokens per answer
    temperature: float = 0.0  # 0 = greedy decoding; > 0 samples
    top_p: float = 1.0  # nucleus threshold when sampling
    samples: int = 1  # answers per prompt (prompt-major); > 1 only differs from 1 when sampling
    seed: int | None = None  # sampling seed re-applied before every generate call (None: the engine's stream)

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.samples < 1:
            raise ValueError(f"eval max_tokens and samples must be >= 1 (got {self.max_tokens} and {self.samples})")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"eval temperature must be >= 0 and top_p in (0, 1] (got {self.temperature} and "
                             f"{self.top_p})")

    def sampling(self) -> dict:
        """Keyword arguments of the engine's ``sample`` (and of the rollout workers' ``generate``)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "n": self.samples}


# (records, their rendered prompt ids, sampling kwargs) -> sampling["n"] Samples per prompt, prompt-major.
# The records travel along so that multi-turn tasks can play one episode per sample.
Generate = Callable[[list[dict], list[list[int]], dict], list["Sample"]]
Verify = Callable[[str, dict], bool]  # (response text, record) -> correct?


def render(tok, records: list[dict]) -> list[list[int]]:
    """Prompt ids of every record with its own context (none when ``record["context"]`` is empty)."""
    return [encode_prompt(tok, r["prompt"], r["context"]) for r in records]


def generate_answers(generate: Generate, tok, records: list[dict], settings: EvalSettings) -> list[Sample]:
    """``settings.samples`` answers per record, prompt-major (answer k belongs to record k // samples)."""
    answers = generate(records, render(tok, records), settings.sampling())
    if len(answers) != len(records) * settings.samples:
        raise RuntimeError(f"the generate function returned {len(answers)} answers for {len(records)} records x "
                           f"{settings.samples} samples")
    return answers


def verify_answers(records: list[dict], answers: list[Sample], verify: Verify, samples: int = 1) -> list[Result]:
    """One Result per answer, judged against its own record (answer k against record k // samples)."""
    if len(answers) != len(records) * samples:
        raise ValueError(f"{len(answers)} answers for {len(records)} records x {samples} samples")
    return [Result(records[k // samples], bool(verify(a.text, records[k // samples])), a.policy_tokens,
                   sample=k % samples, text=a.text) for k, a in enumerate(answers)]


def summarize(results: list[Result]) -> dict[str, float]:
    """The loop's evaluation metrics: accuracy per group and context kind, then Harm / BothCorrect / Δlen
    over the prompts asked both with and without context (``opcd.eval.metrics``; keys ``eval/...``)."""
    return {**accuracies(results), **paired(results)}


def evaluate_results(generate: Generate, tok, records: list[dict], verify: Verify,
                     settings: EvalSettings) -> list[Result]:
    """Render, generate and verify: one Result per answer, prompt-major (``metrics.per_prompt`` groups them)."""
    return verify_answers(records, generate_answers(generate, tok, records, settings), verify, settings.samples)


def evaluate_records(generate: Generate, tok, records: list[dict], verify: Verify,
                     settings: EvalSettings) -> dict[str, float]:
    """Evaluate ``records`` and return ``summarize``'s metrics (``{}`` when there are no records)."""
    if not records:
        return {}
    return summarize(evaluate_results(generate, tok, records, verify, settings))


def agreement_records(records: list[dict]) -> list[dict]:
    """The fixed set of the teacher-student agreement metric: records of the distilled behaviour that
    carry a context (group other than ``other``)."""
    return [r for r in records if r["context"] and r["metadata"].get("group") != "other"]


def local_generate(llm, seed: int | None = None, use_tqdm: bool = False) -> Generate:
    """A ``Generate`` on an in-process vLLM engine; with ``seed``, the engine's sampling RNG is reset
    before every call, so each call's answers depend only on (weights, prompts, seed)."""
    from opcd.engine import sample, seed_engine

    def generate(records: list[dict], prompt_ids: list[list[int]], sampling: dict) -> list[Sample]:
        if seed is not None:
            seed_engine(llm, seed)
        return sample(llm, prompt_ids, **sampling, use_tqdm=use_tqdm)

    return generate


def write_report(out, settings, results: dict) -> None:
    """Write an evaluation CLI's JSON (its settings dataclass and its results) to ``out``; prints the path."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": asdict(settings), "results": results}, indent=2))
    print(f"wrote {out}")
