"""Statistics for evaluation reports: intervals over *prompts*, and paired tests between two runs.

Samples drawn for the same prompt are not independent (a prompt the model finds easy is easy for
every sample), so a rate's uncertainty is measured over prompts: the unit that is resampled or
counted is the prompt, whatever the number of samples per prompt. Two runs evaluated on the same
prompts are compared pairwise (McNemar, or a paired bootstrap over prompts), which is both valid and
far tighter than treating the runs as independent.

Pure functions of lists of per-prompt outcomes; no engine, no numpy state shared between calls.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (``(0, 1)`` when n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)  # exact ends (no 0.9999999999999999)


def prompt_rates(per_prompt: Sequence[Sequence[bool]]) -> list[float]:
    """Each prompt's success rate over its samples (``[[True, False], [True, True]]`` -> ``[0.5, 1.0]``)."""
    if any(len(h) == 0 for h in per_prompt):
        raise ValueError("every prompt needs at least one sample")
    return [sum(map(bool, h)) / len(h) for h in per_prompt]


def _boot_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot]`` means of ``values`` ([P] or [P, m] column-wise) over prompts drawn with replacement."""
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(axis=1)


def bootstrap_interval(rates: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-prompt ``rates``, resampling prompts.

    Deterministic for a given ``seed``. ``(0, 1)`` when there are no prompts.
    """
    if len(rates) == 0:
        return 0.0, 1.0
    means = _boot_means(np.asarray(rates, dtype=np.float64), n_boot, seed)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def prompt_interval(per_prompt: Sequence[Sequence[bool]], level: float = 0.95, n_boot: int = 10_000,
                    seed: int = 0) -> dict:
    """A success rate with its interval over prompts.

    Returns ``{"rate", "prompts", "samples" (in all), "lo", "hi", "method"}``: with one sample per prompt the
    outcomes are independent Bernoulli draws and the interval is Wilson's over prompts; with several,
    a percentile bootstrap of the mean per-prompt rate (the cluster bootstrap). ``rate`` is the mean
    per-prompt rate (None when there are no prompts).
    """
    rates = prompt_rates(per_prompt)
    sizes = {len(h) for h in per_prompt}
    if not rates:
        return {"rate": None, "prompts": 0, "samples": 0, "lo": 0.0, "hi": 1.0, "method": "none"}
    if sizes == {1}:
        z = NormalDist().inv_cdf(1 - (1 - level) / 2)
        lo, hi = wilson_interval(int(sum(rates)), len(rates), z)
        method = "wilson"
    else:
        lo, hi = bootstrap_interval(rates, level, n_boot, seed)
        method = "bootstrap"
    return {"rate": sum(rates) / len(rates), "prompts": len(rates), "samples": sum(map(len, per_prompt)),
            "lo": lo, "hi": hi, "method": method}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                     seed: int = 0) -> dict:
    """Difference of mean per-prompt rates ``mean(a) - mean(b)`` of two runs on the *same* prompts.

    ``a[i]`` and ``b[i]`` are prompt i's rates under each run; prompts are resampled jointly, so the
    interval accounts for the pairing. Returns ``{"diff", "lo", "hi", "p", "prompts"}``: ``lo, hi`` the
    two-sided percentile interval at ``level`` (``lo`` of level 0.90 is a one-sided 95% bound), ``p``
    the two-sided bootstrap p-value of "no difference" (twice the smaller tail share beyond 0).
    """
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same prompts: {len(a)} vs {len(b)} per-prompt rates")
    if len(a) == 0:
        return {"diff": None, "lo": None, "hi": None, "p": None, "prompts": 0}
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    means = _boot_means(d, n_boot, seed)
    al = (1 - level) / 2
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return {"diff": float(d.mean()), "lo": float(np.quantile(means, al)), "hi": float(np.quantile(means, 1 - al)),
            "p": p, "prompts": len(a)}


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    ``b``: prompts right in run A only, ``c``: right in run B only. Under "no difference" each of the
    ``b + c`` discordant prompts goes either way with probability 1/2, so
    p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]); 1 when there are no discordant prompts.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got {b}, {c})")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """McNemar's exact test of two runs' per-prompt verdicts (one sample per prompt, same prompts).

    Returns ``{"a_only", "b_only", "diff", "p", "prompts"}``; ``diff`` is rate(a) - rate(b).
    """
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same prompts: {len(a)} vs {len(b)} verdicts")
    a_only = sum(bool(x) and not bool(y) for x, y in zip(a, b))
    b_only = sum(bool(y) and not bool(x) for x, y in zip(a, b))
    return {"a_only": a_only, "b_only": b_only, "diff": (a_only - b_only) / len(a) if a else None,
            "p": mcnemar_exact(a_only, b_only), "prompts": len(a)}
