"""One rule for "met", as a pure function, and the intervals it is applied to.

The rule (written once for readers in ``benchmarks/README.md``, section "When a target is met"):

* a **rate** target (an accuracy, a rate difference) is met when the 95% interval of the measurement,
  taken over prompts, lies entirely on the target's side; missed when it lies entirely on the other
  side; otherwise the result is "within noise";
* a **ratio** target (a speed-up, a share of a step: noisy timings) is met when every one of at
  least 3 runs clears it, missed when none of at least 3 does, "within noise" when they disagree;
  with fewer than 3 runs it is not met, whatever the values ("too few runs");
* an **exact** target (allocated bytes: the same in every run) is met when every measured
  configuration clears it, missed otherwise.

Intervals are over *prompts* (``opcd.eval.stats``): samples of one prompt are not independent. Older
result files hold only pooled counts (k of n samples); for them :func:`rate_interval` takes Wilson's
interval at n = the number of prompts, which is never narrower than the interval over prompts (the
design effect of m correlated samples per prompt is at most m).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

from opcd.eval.stats import Z95

MIN_RUNS = 3  # runs a ratio needs before it can be called met
OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                                  "<": operator.lt}
SHOWN = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}
STATUSES = ("met", "within noise", "missed", "too few runs", "not measured")


@dataclass(frozen=True)
class Verdict:
    """``status``: one of :data:`STATUSES`; ``detail``: the numbers behind it, for the reader."""

    status: str
    detail: str = ""

    @property
    def label(self) -> str:
        """What a document prints: ``"met"``, ``"within noise"``, ``"missed"``, ``"not met (1 run: ...)"``."""
        if self.status == "too few runs":
            return f"not met ({self.detail})"
        return self.status

    def __str__(self) -> str:
        return self.label


def parse_target(target: str) -> tuple[str, float]:
    """``">= 0.9"`` -> ``(">=", 0.9)``."""
    for op in (">=", "<=", ">", "<"):  # two-character operators first
        if target.strip().startswith(op):
            return op, float(target.strip()[len(op):])
    raise ValueError(f"a target is '<op> <number>' with op in {sorted(OPS)}, got {target!r}")


def verdict(kind: str, values, target: str, fmt: Callable[[float], str] = "{:.3g}".format) -> Verdict:
    """The verdict on ``target`` (``"<op> <threshold>"``) of a measurement.

    kind ``"rate"``: ``values`` is the 95% interval ``(lo, hi)`` of the measured rate or rate difference;
    ``"ratio"``: the per-run values (one float per run); ``"exact"``: one deterministic value per
    measured configuration. ``values`` None or empty: "not measured". ``fmt`` formats values in the detail.
    """
    op, t = parse_target(target)
    ok = OPS[op]
    if values is None or (not isinstance(values, (int, float)) and len(values) == 0):
        return Verdict("not measured", "no measurement")
    if kind == "rate":
        lo, hi = values
        shown = f"95% interval [{fmt(lo)}, {fmt(hi)}] vs {SHOWN[op]} {fmt(t)}"
        if ok(lo, t) and ok(hi, t):
            return Verdict("met", shown)
        if not ok(lo, t) and not ok(hi, t):
            return Verdict("missed", shown)
        return Verdict("within noise", shown)
    vals = [float(v) for v in values]
    shown = ", ".join(fmt(v) for v in vals)
    clears = [ok(v, t) for v in vals]
    if kind == "exact":
        return Verdict("met" if all(clears) else "missed", f"{shown} vs {SHOWN[op]} {fmt(t)}")
    if kind != "ratio":
        raise ValueError(f"kind is 'rate', 'ratio' or 'exact', got {kind!r}")
    runs = f"{len(vals)} run{'s' if len(vals) != 1 else ''}: {shown}"
    if len(vals) < MIN_RUNS:
        return Verdict("too few runs", f"{runs}; target needs ≥ {MIN_RUNS} runs")
    if all(clears):
        return Verdict("met", runs)
    return Verdict("missed" if not any(clears) else "within noise", runs)


# --------------------------------------------------------------------------------------------------
# Intervals (95%), over prompts
# --------------------------------------------------------------------------------------------------
def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate ``p`` observed on ``n`` independent units (``(0, 1)`` if n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if p <= 0 else max(0.0, centre - half)), (1.0 if p >= 1 else min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """A measured rate with its 95% interval over prompts; ``how`` says how the interval was taken."""

    rate: float
    lo: float
    hi: float
    how: str = "Wilson over prompts"


def rate_interval(p: dict, prompts: int | None = None) -> Rate:
    """The interval over prompts of an evaluator rate ``{"rate", "k", "n", ...}`` (``opcd.eval.sysprompt``).

    Uses the recorded per-prompt interval (``prompt_lo``, ``prompt_hi``) when the result has one; else,
    with ``prompts`` < n (several samples per prompt, only pooled counts recorded), Wilson at n =
    ``prompts`` (conservative); else Wilson at n (one sample per prompt: the samples are the prompts).
    """
    if p.get("prompt_lo") is not None and p.get("prompt_hi") is not None:
        return Rate(p["rate"], p["prompt_lo"], p["prompt_hi"], "bootstrap over prompts")
    n = p["n"]
    if prompts is not None and prompts < n:
        return Rate(p["rate"], *wilson(p["rate"], prompts),
                    f"Wilson at n = {prompts} prompts, conservative: the run recorded pooled counts only")
    return Rate(p["rate"], *wilson(p["rate"], n))


def rate_of(value: float, n: int) -> Rate:
    """A rate measured on ``n`` prompts with one (greedy) answer each."""
    return Rate(value, *wilson(value, n))


def difference(a: Rate, b: Rate, c: float = 1.0) -> Rate:
    """``a - c * b`` with its 95% interval (MOVER; Newcombe's hybrid score interval at c = 1).

    Treats the two rates as independent. Measured on the same prompts they are positively correlated,
    so the paired interval would be narrower: this one is conservative.
    """
    d = a.rate - c * b.rate
    lo = d - math.sqrt((a.rate - a.lo) ** 2 + (c * (b.hi - b.rate)) ** 2)
    hi = d + math.sqrt((a.hi - a.rate) ** 2 + (c * (b.rate - b.lo)) ** 2)
    return Rate(d, lo, hi, "difference (MOVER, unpaired: conservative)")


def mean_of(rates: Sequence[Rate]) -> Rate:
    """The mean of independent rates (or differences) with its MOVER interval."""
    k = len(rates)
    m = sum(r.rate for r in rates) / k
    lo = m - math.sqrt(sum(((r.rate - r.lo) / k) ** 2 for r in rates))
    hi = m + math.sqrt(sum(((r.hi - r.rate) / k) ** 2 for r in rates))
    return Rate(m, lo, hi, "mean (MOVER)")


def infer_n(values: Sequence[float], limit: int = 10_000) -> int | None:
    """The smallest n for which every value is a whole count out of n (``[63/64, 1.0] -> 64``).

    For result files that store rates without their denominator. The true number of prompts is a
    multiple of it, so an interval taken at this n is never narrower than the true one. None when no
    n up to ``limit`` fits (values that are not counts).
    """
    n = 1
    for v in values:
        if v is None:
            continue
        f = Fraction(v).limit_denominator(limit)
        if abs(float(f) - v) > 1e-9:
            return None
        n = n * f.denominator // math.gcd(n, f.denominator)
        if n > limit:
            return None
    return n


@dataclass(frozen=True)
class Check:
    """One target and its verdict, as the targets table shows it."""

    benchmark: str  # what was measured
    target: str  # the target as stated when it was set
    measured: str  # the measurement, formatted
    verdict: Verdict
    note: str = ""  # a wrong or redefined target, an unfair comparison: said beside the verdict


def runs_of(d) -> list:
    """The runs a result file holds: ``d["runs"]`` when it records several, else ``[d]``."""
    return d["runs"] if isinstance(d, dict) and isinstance(d.get("runs"), list) else [d]
