"""Weight sync: push the learner's current weights into every vLLM engine, in place.

Two transports, chosen by ``sync.method`` (``auto``: broadcast on CUDA, object store on CPU):

- ``object_store``: rank 0 materialises its HF-named weights once into Ray's object store; every
  worker reads the same object (no per-worker copy on the driver) and reloads it with vLLM's
  ``reload_weights`` without restarting the engine.
- ``broadcast``: rank 0 broadcasts flat buckets of its parameters over a dedicated process group
  (NCCL or gloo) straight into every engine worker (``opcd.sync.broadcast``).
"""
from __future__ import annotations

import time


def push_weights(learner, workers: list) -> dict[str, float]:
    """Object-store sync ``learner`` (a LearnerActor handle) -> ``workers`` (RolloutWorker handles).

    Returns ``{"sync/seconds": wall time, "sync/engine_seconds": slowest in-engine reload}``.
    """
    import ray

    t0 = time.perf_counter()
    weights = learner.named_weights.remote()  # an ObjectRef: workers fetch it from the object store
    engine_s = ray.get([w.load_weights.remote(weights) for w in workers])
    return {"sync/seconds": time.perf_counter() - t0, "sync/engine_seconds": max(engine_s)}


def resolve_sync(sync_cfg, device: str) -> tuple[str, str]:
    """(method, backend) after resolving ``auto`` for the learner ``device``."""
    method = sync_cfg.method if sync_cfg.method != "auto" else ("broadcast" if device == "cuda" else "object_store")
    backend = sync_cfg.backend if sync_cfg.backend != "auto" else ("nccl" if device == "cuda" else "gloo")
    if method not in ("object_store", "broadcast"):
        raise ValueError(f"unknown sync.method {sync_cfg.method!r}; expected auto, object_store or broadcast")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"unknown sync.backend {sync_cfg.backend!r}; expected auto, gloo or nccl")
    return method, backend


class WeightSync:
    """The loop's sync, whichever transport the config chose. ``reset()`` after an engine restart."""

    def __init__(self, sync_cfg, device: str, learners: list, workers: list):
        self.method, self.backend = resolve_sync(sync_cfg, device)
        self.bucket_bytes = int(sync_cfg.bucket_mb * 2**20)
        self.timeout_s = sync_cfg.timeout_s
        self.learners, self.workers = learners, workers
        self.specs = self.buckets = None  # broadcast: what travels, formed on first push
        print(f"[opcd] weight sync: {self.method}" + (f" over {self.backend}, {sync_cfg.bucket_mb:g} MiB buckets"
                                                      if self.method == "broadcast" else ""), flush=True)

    def reset(self) -> None:
        self.specs = self.buckets = None  # the group lost a member: form a new one on the next push

    def push(self) -> dict[str, float]:
        if self.method == "object_store":
            return push_weights(self.learners[0], self.workers)
        import ray

        t0 = time.perf_counter()
        if self.specs is None:
            self._form_group()
        sends = [lr.broadcast_weights.remote(self.buckets) for lr in self.learners]
        engine_s = ray.get([w.receive_weights.remote(self.specs, self.buckets) for w in self.workers])
        ray.get(sends)
        return {"sync/seconds": time.perf_counter() - t0, "sync/engine_seconds": max(engine_s),
                "sync/buckets": float(len(self.buckets))}

    def _form_group(self) -> None:
        import ray

        from opcd.sync.broadcast import plan_buckets

        self.specs = ray.get([lr.weight_specs.remote() for lr in self.learners])[0]
        self.buckets = plan_buckets(self.specs, self.bucket_bytes)
        ranks = ray.get([w.engine_ranks.remote() for w in self.workers])
        world = 1 + sum(ranks)
        host, port = ray.get(self.learners[0].rendezvous.remote())
        base = [1 + sum(ranks[:i]) for i in range(len(ranks))]
        ray.get([*(lr.join_sync_group.remote(host, port, world, self.backend, self.timeout_s) for lr in self.learners),
                 *(w.join_sync_group.remote(host, port, b, world, self.backend, self.timeout_s)
                   for w, b in zip(self.workers, base))])
