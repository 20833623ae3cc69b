"""Checkpoints that a crashed run resumes from.

A checkpoint is the directory ``<output_dir>/checkpoints/step_<N>/`` holding:

- the student as a plain HF safetensors model + tokenizer (what transformers, vLLM and
  ``python -m opcd.eval`` load);
- ``deepspeed/``: the learner engine's own checkpoint (weights, optimizer moments, step counters);
- ``trainer_state.json``: the step, the data-order position, the controller's RNG state, the
  non-finite streak, the experience text in use and the logger's run id;
- ``config.yaml``: the resolved config of the run that wrote it.

Everything is first written into ``.tmp-step_<N>`` and the ``COMPLETE`` marker is written last;
only then is the directory renamed. A crash at any moment therefore leaves either a complete
checkpoint or a ``.tmp-*`` directory that is ignored (and deleted by the next run).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

COMPLETE = "COMPLETE"
STATE = "trainer_state.json"
CONFIG = "config.yaml"
# Config keys whose change makes a checkpoint meaningless for resuming: other weights or tokenizer,
# another objective, other data or data order. Everything else (steps, eval/save cadence, logging,
# resources) may change between the crash and the resume.
RESUME_KEYS = ("model", "algo", "task", "seed", "prompts_per_step", "rollout.n", "rollout.seed")


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir) -> list[Path]:
    """Complete ``step_<N>`` checkpoints under ``output_dir``, oldest first."""
    root = checkpoint_root(output_dir)
    steps = [p for p in root.glob("step_*") if (p / COMPLETE).exists() and p.name[5:].isdigit()]
    return sorted(steps, key=lambda p: int(p.name[5:]))


def find_resume_checkpoint(resume: str, output_dir) -> Path | None:
    """The checkpoint to resume from: ``resume`` is ``none``, ``auto`` (newest complete one in
    ``output_dir``, or None when there is none yet) or a checkpoint directory."""
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / COMPLETE).exists():
        raise FileNotFoundError(f"resume={resume}: not a complete opcd checkpoint (no {COMPLETE} marker); "
                                f"pass resume=auto or a checkpoints/step_<N> directory")
    return path


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_differences(saved: dict, current: dict, keys=RESUME_KEYS) -> list[str]:
    """``["algo.lr: 0.0003 -> 0.001", ...]`` for every differing key under ``keys``."""
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if any(k == p or k.startswith(p + ".") for p in keys) and a.get(k) != b.get(k):
            diffs.append(f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}")
    return diffs


def load_state(ckpt: Path, current_config: dict) -> dict:
    """The trainer state of ``ckpt``; refuses when the config changed in a way that matters."""
    from omegaconf import OmegaConf

    saved = OmegaConf.to_container(OmegaConf.load(ckpt / CONFIG), resolve=True)
    diffs = config_differences(saved, current_config)
    if diffs:
        raise ValueError(f"cannot resume from {ckpt}: the config differs in " + "; ".join(diffs)
                         + ". Restore these values, or use a new output directory (or resume=none) to start over")
    return json.loads((ckpt / STATE).read_text())


def write_checkpoint(output_dir, step: int, state: dict, config: dict, write_model, keep: int) -> Path:
    """Write ``step_<step>`` atomically; ``write_model(tmp_dir)`` fills in the weights.

    ``keep`` > 0 keeps only the newest ``keep`` complete checkpoints.
    """
    from omegaconf import OmegaConf

    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp, final = root / f".tmp-step_{step}", root / f"step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp)
    (tmp / STATE).write_text(json.dumps(state))
    OmegaConf.save(OmegaConf.create(config), tmp / CONFIG)
    (tmp / COMPLETE).write_text(str(step))  # last: its presence certifies everything above
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep > 0:
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial(output_dir) -> None:
    """Delete ``.tmp-*`` leftovers of a checkpoint write that a crash interrupted."""
    for tmp in checkpoint_root(output_dir).glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop rows logged after ``last_step`` (work of the crashed run that the resume redoes)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if json.loads(r).get("step", 0) <= last_step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(r + "\n" for r in kept))
    tmp.replace(path)
