"""Metric logging: wandb (offline by default) plus a JSONL file in the run directory.

``logger.kind=wandb logger.mode=offline`` (default) writes a local wandb run that ``wandb sync``
can upload later; ``logger.mode=online`` streams; ``logger=none`` disables wandb (the JSONL file
is always written, so runs stay comparable without any service).
"""
from __future__ import annotations

import json
import time
from pathlib import Path


class Tracker:
    def __init__(self, cfg, output_dir: Path, config_dict: dict, run_id: str | None = None):
        self.path = output_dir / "metrics.jsonl"
        self.t0 = time.monotonic()
        output_dir.mkdir(parents=True, exist_ok=True)
        self.run = None
        lc = cfg.logger
        if lc.kind == "wandb":
            import wandb

            self.run = wandb.init(project=lc.project, group=lc.group, mode=lc.mode, dir=str(output_dir),
                                  name=lc.name or f"{cfg.experiment}-{time.strftime('%m%d-%H%M%S')}",
                                  config=config_dict, reinit="finish_previous",
                                  id=run_id, resume="allow" if run_id else None)  # a resumed run continues its wandb run
        elif lc.kind != "none":
            raise ValueError(f"unknown logger.kind {lc.kind!r}; expected wandb or none")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, metrics: dict, step: int) -> None:
        with self.path.open("a") as f:
            # Wall time since this process started logging: curves against time, not only steps.
            f.write(json.dumps({"step": step, **metrics, "time/elapsed_s": time.monotonic() - self.t0}) + "\n")
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
