"""Hydra entry point: ``python -m opcd.train [experiment=...] [group=option ...] [key=value ...]``.

With no arguments it runs the default experiment (``conf/experiment/toy_opcd.yaml``): OPCD on the
shipped tiny model, distilling one toy-world rule's system prompt, with 2 vLLM rollout workers, a
teacher actor and a DeepSpeed learner as separate Ray actors.

Before anything starts: unknown config keys (``+algo.lrr=...``) and unusable model paths are refused
in one line; the run locks its output folder (``opcd.run_dir``: one run per folder) and refuses to
start a new run over an old one unless ``overwrite=true``. Ctrl-C and SIGTERM stop the run with one
line saying how to resume it; the actors and Ray are shut down on the way out.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from opcd import quiet
from opcd.config import register_configs

register_configs()


def group_sweep_jobs(cfg: DictConfig) -> None:
    """In a multirun, every job's wandb run joins one group named after the sweep directory and is
    named after its overrides (unless logger.group / logger.name were set explicitly)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    if cfg.logger.group is None:
        cfg.logger.group = os.path.basename(os.path.normpath(hc.sweep.dir))
    if cfg.logger.name is None:
        cfg.logger.name = f"{hc.job.num}_{hc.job.override_dirname}"[:128]


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that every ``finally``
    (actors stopped, Ray shut down, lock released) runs; a KeyboardInterrupt, so that no
    ``except Exception`` on the way (actor supervision, retries) swallows it."""


@contextmanager
def stop_signals(ray):
    """Turn SIGTERM into :class:`Stopped` for the duration of the run; yields a dict whose ``"how"``
    becomes ``"SIGTERM"`` when one arrived (inside ``ray.get`` Ray re-raises any interrupt as a plain
    KeyboardInterrupt, so the exception type alone cannot tell). A second SIGTERM ends a hung shutdown.

    ``ray.init`` installs its own SIGTERM handler (``sys.exit``, seen as a bare SystemExit(1) inside
    ``ray.get``), so while the run lasts ``ray.init`` is wrapped to put this one back after it.
    """
    received: dict[str, str] = {}

    def handler(signum, frame):
        received["how"] = "SIGTERM"
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Stopped("SIGTERM")

    real_init = ray.init

    def init(*args, **kwargs):
        out = real_init(*args, **kwargs)
        if "how" not in received:
            signal.signal(signal.SIGTERM, handler)
        return out

    previous = signal.signal(signal.SIGTERM, handler)
    ray.init = init
    try:
        yield received
    finally:
        ray.init = real_init
        signal.signal(signal.SIGTERM, previous)


def stopped_by(exc: BaseException, received: dict) -> str | None:
    """"Ctrl-C" or "SIGTERM" when ``exc`` is how a stop request arrived, else None."""
    if received.get("how") and isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return received["how"]
    return "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else None


def resume_command(output_dir, overrides: list[str]) -> str:
    """The command that continues this run: its own overrides, ``resume=auto`` and its folder."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in ("resume", "overwrite", "hydra.run.dir")]
    return shlex.join(["python", "-m", "opcd.train", *keep, "resume=auto", f"hydra.run.dir={output_dir}"])


def stop_message(how: str, output_dir, overrides: list[str]) -> str:
    """One line: the run stopped, and how to resume it (from which checkpoint, if any)."""
    from opcd.checkpoint import CheckpointError, newest_intact

    try:  # sizes only: instant even for a large checkpoint (resume verifies the checksums)
        ckpt = newest_intact(output_dir, checksums=False, report=lambda line: None)
    except CheckpointError:
        ckpt = None
    cmd = resume_command(output_dir, overrides)
    if ckpt is None:
        return f"opcd.train: stopped by {how} before any intact checkpoint; `{cmd}` starts it again from step 0"
    return f"opcd.train: stopped by {how}; resume from {ckpt} with: {cmd}"


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra
        return []


def check_startup(cfg: DictConfig) -> None:
    """Refusals that need nothing started: unknown keys, unusable model paths (one line each)."""
    from opcd.config_keys import check_known_keys
    from opcd.modeling import check_model_path

    check_known_keys(cfg)
    check_model_path(cfg.model.path, cfg.model.hub, "model.path")
    if cfg.model.teacher_path:
        check_model_path(cfg.model.teacher_path, cfg.model.hub, "model.teacher_path")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from opcd import run_dir
    from opcd.loop import NonFiniteLossError, train
    from opcd.recovery import ActorFailureError
    from opcd.tasks.records import DatasetError

    import ray

    errors = (FileNotFoundError, DatasetError, ValueError, ActorFailureError, NonFiniteLossError)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet.install()  # before ray.init: known-harmless third-party messages (opcd/quiet.py says why each)
    try:
        check_startup(cfg)
    except errors as e:
        sys.exit(f"opcd.train: error: {e}")
    # Inside a Ray task (e.g. a Hydra launcher running jobs on a cluster) Ray is already up and is
    # not ours to shut down; a Ray runtime this job started is, so that the next sweep job starts clean.
    ray_was_up = ray.is_initialized()
    group_sweep_jobs(cfg)
    print(OmegaConf.to_yaml(cfg))
    out = Path(cfg.output_dir)
    lock = None
    received: dict[str, str] = {}
    try:
        with stop_signals(ray) as received:
            lock = run_dir.acquire(out)
            run_dir.prepare(out, cfg.resume, cfg.overwrite)
            final = train(cfg, OmegaConf.to_container(cfg, resolve=True))
    except errors as e:
        sys.exit(f"opcd.train: error: {e}")
    except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C, or SIGTERM
        how = stopped_by(e, received)
        if how is None:
            raise
        print(stop_message(how, out, _task_overrides()), file=sys.stderr, flush=True)
        sys.exit(143 if how == "SIGTERM" else 130)
    finally:
        if ray.is_initialized() and not ray_was_up:
            ray.shutdown()
        if lock is not None:
            lock.release()
    print("final evaluation:", {k: round(v, 4) for k, v in final.items()})


if __name__ == "__main__":
    main()
