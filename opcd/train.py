"""Hydra entry point: ``python -m opcd.train [experiment=...] [group=option ...] [key=value ...]``.

With no arguments it runs the default experiment (``conf/experiment/toy_opcd.yaml``): OPCD on the
shipped tiny model, distilling one toy-world rule's system prompt, with 2 vLLM rollout workers, a
teacher actor and a DeepSpeed learner as separate Ray actors.
"""
from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

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


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from opcd.loop import NonFiniteLossError, train
    from opcd.recovery import ActorFailureError
    from opcd.tasks.records import DatasetError

    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Inside a Ray task (e.g. a Hydra launcher running jobs on a cluster) Ray is already up and is
    # not ours to shut down; a Ray runtime this job started is, so that the next sweep job starts clean.
    ray_was_up = ray.is_initialized()
    group_sweep_jobs(cfg)
    print(OmegaConf.to_yaml(cfg))
    try:
        final = train(cfg, OmegaConf.to_container(cfg, resolve=True))
    except (FileNotFoundError, DatasetError, ValueError, ActorFailureError, NonFiniteLossError) as e:
        sys.exit(f"opcd.train: error: {e}")
    finally:
        if ray.is_initialized() and not ray_was_up:
            ray.shutdown()
    print("final evaluation:", {k: round(v, 4) for k, v in final.items()})


if __name__ == "__main__":
    main()
