"""Weight sync: push the learner's current weights into every vLLM engine, in place.

The learner rank 0 materialises its HF-named weights once into Ray's object store; every worker
reads the same object (no per-worker copy on the driver) and reloads it with vLLM's
``reload_weights`` without restarting the engine.
"""
from __future__ import annotations

import time


def push_weights(learner, workers: list) -> dict[str, float]:
    """Sync ``learner`` (a LearnerActor handle) -> ``workers`` (RolloutWorker handles).

    Returns ``{"sync/seconds": wall time, "sync/engine_seconds": slowest in-engine reload}``.
    """
    import ray

    t0 = time.perf_counter()
    weights = learner.named_weights.remote()  # an ObjectRef: workers fetch it from the object store
    engine_s = ray.get([w.load_weights.remote(weights) for w in workers])
    return {"sync/seconds": time.perf_counter() - t0, "sync/engine_seconds": max(engine_s)}
