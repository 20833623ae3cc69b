"""Checkpoints that a crashed run resumes from, verified before they are trusted.

A checkpoint is the directory ``<output_dir>/checkpoints/step_<N>/`` holding:

- the student as a plain HF safetensors model + tokenizer (what transformers, vLLM and
  ``python -m opcd.eval`` load);
- ``deepspeed/``: the learner engine's own checkpoint (weights, optimizer moments, step counters);
- ``trainer_state.json``: the step, the data-order position, the controller's RNG state, the
  non-finite streak, the experience text in use and the logger's run id;
- ``config.yaml``: the resolved config of the run that wrote it;
- ``MANIFEST.json``: every file above with its size and SHA-256 (``opcd.manifest``), plus the step
  and the id of the run that wrote it.

Everything is first written into ``.tmp-step_<N>``; the manifest comes after every other file and
the ``COMPLETE`` marker last; only then is the directory renamed. A crash at any moment therefore
leaves either a complete checkpoint or a ``.tmp-*`` directory that is ignored (and deleted by the next
run). A complete checkpoint damaged later (a truncated copy, a deleted folder, flipped bytes) fails
:func:`verify_checkpoint`, and ``resume=auto`` falls back to the newest intact one.

Run ids: a fresh start gets a new id; a resume continues the id of the checkpoint it resumed from.
Pruning (``keep_checkpoints``) only ever deletes older checkpoints carrying the writing run's id, so
a checkpoint of another run in the same folder is never deleted, whatever its step.
"""
from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

from opcd import manifest

COMPLETE = "COMPLETE"
STATE = "trainer_state.json"
CONFIG = "config.yaml"
MANIFEST = manifest.MANIFEST
# Config keys whose change makes a checkpoint meaningless for resuming: other weights or tokenizer,
# another objective, other data or data order. Everything else (steps, eval/save cadence, logging,
# resources) may change between the crash and the resume.
RESUME_KEYS = ("model", "algo", "task", "seed", "prompts_per_step", "rollout.n", "rollout.seed")
# Run id of the run writing into each output folder from this process (resolved path -> id); set when
# the run picks its starting point (find_resume_checkpoint), read when it writes and prunes.
_RUN_IDS: dict[str, str] = {}


class CheckpointError(ValueError):
    """No usable checkpoint where one is required; the message is one line naming what is wrong."""


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def _step(p: Path) -> int:
    return int(p.name[5:])


def complete_checkpoints(output_dir) -> list[Path]:
    """``step_<N>`` checkpoints under ``output_dir`` marked COMPLETE, oldest first (not yet verified:
    see :func:`verify_checkpoint`)."""
    root = checkpoint_root(output_dir)
    steps = [p for p in root.glob("step_*") if p.name[5:].isdigit() and (p / COMPLETE).exists()]
    return sorted(steps, key=_step)


def verify_checkpoint(path, checksums: bool = True, model_only: bool = False) -> str | None:
    """None when ``path`` is an intact checkpoint, else one line saying what is wrong.

    ``checksums=False`` checks presence and sizes only (instant, even for a multi-GB checkpoint).
    ``model_only`` checks what loading the HF model needs, not the learner's ``deepspeed/`` state
    (which only a resume reads, and which may have been dropped to save space).
    """
    path = Path(path)
    if not path.is_dir():
        return "it does not exist"
    if not (path / COMPLETE).exists():
        return f"no {COMPLETE} marker (its write was interrupted)"
    return manifest.verify(path, checksums, skip_dirs=("deepspeed",) if model_only else ())


def run_id_of(ckpt) -> str | None:
    """The id of the run that wrote ``ckpt`` (None for a checkpoint without a readable manifest)."""
    try:
        return manifest.read(ckpt).get("run")
    except ValueError:
        return None


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _key(output_dir) -> str:
    return str(Path(output_dir).resolve())


def current_run_id(output_dir) -> str:
    """The id under which this process writes checkpoints into ``output_dir`` (created on first use)."""
    return _RUN_IDS.setdefault(_key(output_dir), _new_run_id())


def newest_intact(output_dir, checksums: bool = True, report=None) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint`; each damaged newer one is reported
    in one line (``report``) and skipped. None when there is no checkpoint at all; CheckpointError when
    there are some and none is intact."""
    report = report or (lambda line: print(line, flush=True))
    found = complete_checkpoints(output_dir)
    damaged: list[tuple[Path, str]] = []
    for ckpt in reversed(found):
        why = verify_checkpoint(ckpt, checksums)
        if why is None:
            for bad, reason in damaged:
                report(f"[opcd] skipping damaged checkpoint {bad}: {reason}")
            return ckpt
        damaged.append((ckpt, why))
    if found:
        newest, why = damaged[0]
        raise CheckpointError(f"none of the {len(found)} checkpoint(s) in {checkpoint_root(output_dir)} is intact "
                              f"(newest, {newest.name}: {why}); start a new run in "
                              "another folder (hydra.run.dir=<new folder>) or here with resume=none overwrite=true "
                              "(moves them to previous-<time>/)")
    return None


def find_resume_checkpoint(resume: str, output_dir) -> Path | None:
    """The checkpoint to resume from: ``resume`` is ``none``, ``auto`` (newest intact one in
    ``output_dir``, or None when there is none yet) or a checkpoint directory (which must be intact).

    Also fixes the run id the coming checkpoints are written under: the resumed checkpoint's, or a new one.
    """
    ckpt = None
    if resume == "auto":
        ckpt = newest_intact(output_dir)
    elif resume not in ("none", "", None):
        ckpt = Path(resume)
        if not (ckpt / COMPLETE).exists():
            raise FileNotFoundError(f"resume={resume}: not a complete opcd checkpoint (no {COMPLETE} marker); "
                                    f"pass resume=auto or a checkpoints/step_<N> directory")
        why = verify_checkpoint(ckpt)
        if why is not None:
            raise CheckpointError(f"resume={resume}: damaged checkpoint: {why}; pass resume=auto (the newest "
                                  "intact one) or another checkpoints/step_<N> directory")
    _RUN_IDS[_key(output_dir)] = (run_id_of(ckpt) if ckpt else None) or _new_run_id()
    return ckpt


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
        # The way out must not touch this run: a new run goes to another folder, or moves this one aside.
        raise ValueError(f"cannot resume from {ckpt}: the config differs in " + "; ".join(diffs)
                         + ". Restore these values to resume; to start a new run instead, use another folder "
                         "(hydra.run.dir=<new folder>) or resume=none overwrite=true here (moves this run to "
                         "previous-<time>/, nothing is deleted)")
    return json.loads((ckpt / STATE).read_text())


def write_checkpoint(output_dir, step: int, state: dict, config: dict, write_model, keep: int) -> Path:
    """Write ``step_<step>`` atomically; ``write_model(tmp_dir)`` fills in the weights.

    ``keep`` > 0 keeps only the newest ``keep`` checkpoints of this run (older steps of the same run id
    are deleted; other runs' checkpoints are never touched).
    """
    from omegaconf import OmegaConf

    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    run = current_run_id(output_dir)
    tmp, final = root / f".tmp-step_{step}", root / f"step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp)
    (tmp / STATE).write_text(json.dumps(state))
    OmegaConf.save(OmegaConf.create(config), tmp / CONFIG)
    manifest.write(tmp, {"step": step, "run": run}, skip=(COMPLETE,))  # after every other file: it lists them all
    (tmp / COMPLETE).write_text(str(step))  # last: its presence certifies everything above
    if final.exists():
        if run_id_of(final) == run:
            shutil.rmtree(final)  # this run's own earlier attempt at this step (resumed from before it)
        else:  # another run's: kept under a name that resume and pruning ignore
            aside = root / f"step_{step}.other-run-{run_id_of(final) or 'unknown'}-{time.strftime('%Y%m%d-%H%M%S')}"
            final.rename(aside)
            print(f"[opcd] {final} belonged to another run; moved it to {aside}", flush=True)
    tmp.rename(final)
    if keep > 0:
        mine = [c for c in complete_checkpoints(output_dir) if _step(c) <= step and run_id_of(c) == run]
        for old in mine[:-keep]:
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
