"""Per-step and per-phase timing of one head-to-head run record (pure: tested on synthetic rows).

A run record is what ``benchmarks.common.runs.train_run`` returns: ``t_start`` / ``t_end`` (epoch s),
``rows`` (TRL: the worker's ``timing.jsonl`` events; opcd: its ``metrics.jsonl``), ``step_stamps``
(opcd: when each step's metrics row appeared) and ``checkpoints``.
"""
from __future__ import annotations

from benchmarks.common.trl_sdft import is_trl


def steady(xs: list[float]) -> list[float]:
    """Drop the first (warm-up) step when there are more than two."""
    return xs[1:] if len(xs) > 2 else xs


def mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def phase(seconds: list[float], tokens: list[float]) -> dict:
    """``{"s_per_step", "tokens_per_s"}`` of one phase over the steady steps."""
    seconds, tokens = steady(seconds), steady(tokens)
    tot = sum(seconds)
    return {"s_per_step": mean(seconds), "tokens_per_s": sum(tokens) / tot if tot > 0 else None}


def _trl_phases(steps: list[dict]) -> dict:
    """TRL's phases from the worker's step events. With vLLM generation the weight push into the
    engine happens inside generation: ``sync_s`` is taken out of the rollout into its own phase."""
    sync = [r.get("sync_s", 0.0) for r in steps]
    phases = {"rollout": phase([r.get("rollout_s", 0.0) - s for r, s in zip(steps, sync)],
                               [r.get("rollout_tokens", 0) for r in steps]),
              "teacher": phase([r.get("teacher_s", 0.0) for r in steps], [r.get("teacher_tokens", 0) for r in steps])}
    learner = [r["seconds"] - r.get("rollout_s", 0.0) - r.get("teacher_s", 0.0) for r in steps]
    phases["learner"] = phase(learner, [r.get("rollout_tokens", 0) for r in steps])
    if any("sync_s" in r for r in steps):
        phases["sync"] = phase(sync, [0.0 for _ in steps])
    return phases


def timing_summary(method: str, rec: dict) -> dict:
    """s/step (mean over steps 2..N, and the median), per-phase s/step and tokens/s, start-up
    (launch to the first step) and wall time (launch to exit) of one run record, in seconds."""
    t0 = rec["t_start"]
    if is_trl(method):
        steps = [r for r in rec["rows"] if r["event"] == "step"]
        begin = next((r["time"] for r in rec["rows"] if r["event"] == "train_begin"), t0)
        step_s = [r["seconds"] for r in steps]
        phases = _trl_phases(steps)
        startup = begin - t0
    else:
        steps = [r for r in rec["rows"] if r.get("step", 0) >= 1 and "step/seconds" in r]
        step_s = [r["step/seconds"] for r in steps]
        phases = {
            "rollout": phase([r["rollout/seconds"] for r in steps],
                             [r["rollout/seconds"] * r["rollout/tokens_per_s"] for r in steps]),
            "teacher": phase([r["teacher/seconds"] for r in steps],
                             [r["teacher/seconds"] * r["teacher/tokens_per_s"] for r in steps]),
            "learner": phase([r["learner/seconds"] for r in steps], [r["learner/tokens"] for r in steps]),
            "sync": phase([r.get("sync/seconds", 0.0) for r in steps], [0.0 for _ in steps]),
        }
        first = rec.get("step_stamps", {}).get("1")
        startup = (first - step_s[0] - t0) if first and step_s else None
    return {"steps": len(step_s), "s_per_step": mean(steady(step_s)), "median_s_per_step":
            sorted(step_s)[len(step_s) // 2] if step_s else None, "train_s": sum(step_s),
            "startup_s": startup, "wall_s": rec["t_end"] - t0, "phases": phases}


def fastest_trl(methods: dict[str, dict], key: str = "s_per_step") -> str | None:
    """The TRL configuration among ``methods`` (``{method: {"timing": {...}}}``) with the lowest
    ``timing[key]``: opcd is reported against TRL's strongest configuration. None without one."""
    trl = [m for m in methods if is_trl(m)]
    timed = [(methods[m]["timing"].get(key), m) for m in trl if methods[m]["timing"].get(key)]
    return min(timed)[1] if timed else (trl[0] if trl else None)  # untimed: the first one
