"""Weight sync: time of a full learner -> engines push against model bytes, at two model sizes.

    python benchmarks/bench_sync.py

For the shipped toy model (1.06M parameters) and a wider random Llama of the same vocabulary
(~25M parameters), it starts the real actors (one DeepSpeed learner, two vLLM rollout workers),
pushes the weights 5 times with ``opcd.sync.push_weights`` and reports the median wall time, the
slowest engine's in-place reload, and bytes/s. Writes ``benchmarks/results/sync.json``.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path


def measure(model_path: str, repeats: int = 5) -> dict:
    from omegaconf import OmegaConf

    from opcd.actors import start_actors
    from opcd.config import TrainConfig
    from opcd.modeling import load_causal_lm
    from opcd.sync import push_weights

    cfg = OmegaConf.structured(TrainConfig())
    cfg.model.path = model_path
    actors = start_actors(cfg, model_path, batch_size=8)
    n_bytes = sum(p.numel() * p.element_size() for p in load_causal_lm(model_path).parameters())
    push_weights(actors.learners[0], actors.workers)  # warm-up
    runs = [push_weights(actors.learners[0], actors.workers) for _ in range(repeats)]
    wall = statistics.median(r["sync/seconds"] for r in runs)
    engine = statistics.median(r["sync/engine_seconds"] for r in runs)
    import ray

    for a in [*actors.workers, actors.teacher, *actors.learners]:
        ray.kill(a)
    return {"model": model_path, "bytes": n_bytes, "seconds": wall, "engine_seconds": engine,
            "MB_per_s": n_bytes / wall / 1e6, "workers": len(actors.workers)}


def main() -> None:
    import ray
    import torch

    from opcd.tasks.char_tokenizer import build_char_tokenizer
    from opcd.tasks.pretrain import DEFAULT_OUT, build_model

    big = Path(tempfile.mkdtemp()) / "wide-llama"
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_model(tok, hidden=512, layers=8, heads=8)  # ~25M parameters
    model.save_pretrained(big)
    tok.save_pretrained(big)

    ray.init(include_dashboard=False, log_to_driver=False)
    rows = [measure(str(DEFAULT_OUT)), measure(str(big))]
    print(f"{'model':<12}{'MB':>8}{'sync s':>10}{'engine s':>10}{'MB/s':>10}")
    for name, r in zip(["toy (1.1M)", "wide (25M)"], rows):
        print(f"{name:<12}{r['bytes'] / 1e6:>8.1f}{r['seconds']:>10.4f}{r['engine_seconds']:>10.4f}{r['MB_per_s']:>10.0f}")
    out = Path(__file__).with_name("results") / "sync.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
