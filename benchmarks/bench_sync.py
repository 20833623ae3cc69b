"""Weight sync: time of a full learner -> engines push against model bytes, at two model sizes.

    python benchmarks/bench_sync.py

For the shipped toy model (1.06M parameters) and a wider random Llama of the same vocabulary
(~25M parameters), it starts the real actors (one DeepSpeed learner, two vLLM rollout workers),
pushes the weights 5 times with each transport of ``opcd.sync.WeightSync`` (Ray object store;
bucketed broadcast over gloo) and reports the median wall time, the slowest engine's in-place
reload, and bytes/s. Writes ``benchmarks/results/sync.json``.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path


def measure(model_path: str, method: str, repeats: int = 5) -> dict:
    from omegaconf import OmegaConf

    from opcd.actors import start_actors, stop_actors
    from opcd.config import TrainConfig
    from opcd.modeling import load_causal_lm
    from opcd.sync import WeightSync

    cfg = OmegaConf.structured(TrainConfig())
    cfg.model.path, cfg.sync.method = model_path, method
    actors = start_actors(cfg, model_path, batch_size=8)
    try:
        n_bytes = sum(p.numel() * p.element_size() for p in load_causal_lm(model_path).parameters())
        sync = WeightSync(cfg.sync, "cpu", actors.learners, actors.workers)
        sync.push()  # warm-up (and, for broadcast, forming the group)
        runs = [sync.push() for _ in range(repeats)]
    finally:
        stop_actors(actors)
    wall = statistics.median(r["sync/seconds"] for r in runs)
    engine = statistics.median(r["sync/engine_seconds"] for r in runs)
    return {"model": model_path, "method": method, "bytes": n_bytes, "seconds": wall, "engine_seconds": engine,
            "MB_per_s": n_bytes / wall / 1e6, "workers": len(actors.workers)}


def main() -> None:
    import ray
    import torch

    from opcd.models.toy.char_tokenizer import build_char_tokenizer
    from opcd.models.toy.pretrain import DEFAULT_OUT, build_model

    big = Path(tempfile.mkdtemp()) / "wide-llama"
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_model(tok, hidden=512, layers=8, heads=8)  # ~25M parameters
    model.save_pretrained(big)
    tok.save_pretrained(big)

    ray.init(include_dashboard=False, log_to_driver=False)
    names = {str(DEFAULT_OUT): "toy (1.1M)", str(big): "wide (25M)"}
    rows = [measure(path, method) for path in names for method in ("object_store", "broadcast")]
    print(f"{'model':<12}{'method':>14}{'MB':>8}{'sync s':>10}{'engine s':>10}{'MB/s':>10}")
    for r in rows:
        print(f"{names[r['model']]:<12}{r['method']:>14}{r['bytes'] / 1e6:>8.1f}{r['seconds']:>10.4f}"
              f"{r['engine_seconds']:>10.4f}{r['MB_per_s']:>10.0f}")
    out = Path(__file__).with_name("results") / "sync.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
