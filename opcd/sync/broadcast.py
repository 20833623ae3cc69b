"""Bucketed broadcast weight sync: learner rank 0 -> every engine worker over one dedicated group.

The object-store path (``opcd.sync.push_weights``) copies the whole model to host memory and lets
every engine fetch it. On GPUs that is a device->host->device round trip per engine; here rank 0
packs its parameters into a few large flat buckets and broadcasts each one (NCCL on CUDA, gloo on
CPU) straight into the engines, which unpack and reload them in place. Buckets amortise the
per-collective latency of hundreds of small tensors while bounding the extra memory to one bucket.

The group is separate from DeepSpeed's and vLLM's own process groups (a standalone ProcessGroup on
its own TCPStore), so neither framework's collectives are disturbed. Functions prefixed ``engine_``
run inside vLLM workers through ``LLM.collective_rpc``; they are module-level so they pickle.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch

from opcd.engine import retie_embeddings


@dataclass(frozen=True)
class TensorSpec:
    name: str  # HF parameter name
    shape: tuple  # tensor shape
    dtype: str  # torch dtype name, e.g. "float32"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * getattr(torch, self.dtype).itemsize


def specs_of(named: list[tuple[str, torch.Tensor]]) -> list[TensorSpec]:
    return [TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in named]


def plan_buckets(specs: list[TensorSpec], bucket_bytes: int) -> list[list[int]]:
    """Group consecutive same-dtype tensors into buckets of at most ``bucket_bytes``.

    Returns lists of indices into ``specs``; a tensor larger than a bucket travels alone.
    """
    buckets: list[list[int]] = []
    size, dtype = 0, None
    for i, s in enumerate(specs):
        if not buckets or s.dtype != dtype or size + s.nbytes > bucket_bytes:
            buckets.append([])
            size, dtype = 0, s.dtype
        buckets[-1].append(i)
        size += s.nbytes
    return buckets


def pack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One flat tensor holding ``tensors`` back to back (same dtype and device)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unpack(flat: torch.Tensor, specs: list[TensorSpec]) -> list[tuple[str, torch.Tensor]]:
    """Inverse of :func:`pack`: views of ``flat`` with each spec's name and shape."""
    out, i = [], 0
    for s in specs:
        out.append((s.name, flat[i:i + s.numel].view(s.shape)))
        i += s.numel
    if i != flat.numel():
        raise ValueError(f"bucket holds {flat.numel()} elements, specs describe {i}")
    return out


def make_group(backend: str, host: str, port: int, rank: int, world: int, timeout_s: float):
    """A standalone process group (not torch.distributed's default one) of ``world`` members."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.PrefixStore("opcd-weight-sync", dist.TCPStore(host, port, world, is_master=rank == 0,
                                                               timeout=timeout))
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, world, timeout)
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world)
    raise ValueError(f"unknown sync.backend {backend!r}; expected gloo or nccl")


def broadcast(group, tensor: torch.Tensor) -> None:
    """In-place broadcast of ``tensor`` from rank 0 of ``group``."""
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait()


def send_buckets(group, named: list[tuple[str, torch.Tensor]], buckets: list[list[int]]) -> None:
    """Rank 0's side: broadcast every bucket of ``named``."""
    for b in buckets:
        broadcast(group, pack([named[i][1].detach() for i in b]))


def receive_buckets(group, specs: list[TensorSpec], buckets: list[list[int]],
                    device: torch.device | str = "cpu") -> list[tuple[str, torch.Tensor]]:
    """A receiver's side of :func:`send_buckets`: every tensor, named, on ``device``."""
    named: list[tuple[str, torch.Tensor]] = []
    for b in buckets:
        bs = [specs[i] for i in b]
        flat = torch.empty(sum(s.numel for s in bs), dtype=getattr(torch, bs[0].dtype), device=device)
        broadcast(group, flat)
        named += unpack(flat, bs)
    return named


def engine_join(worker, host: str, port: int, base_rank: int, world: int, backend: str, timeout_s: float) -> None:
    """(in a vLLM worker) Join the sync group as rank ``base_rank + worker.rank`` (its TP rank)."""
    worker.opcd_sync_group = make_group(backend, host, port, base_rank + getattr(worker, "rank", 0), world, timeout_s)


def engine_receive(worker, specs: list[TensorSpec], buckets: list[list[int]]) -> None:
    """(in a vLLM worker) Receive every bucket, then reload the weights in place."""
    device = next(worker.model_runner.get_model().parameters()).device
    named = receive_buckets(worker.opcd_sync_group, specs, buckets, device)
    worker.reload_weights(weights_iterator=iter(named))
    retie_embeddings(worker)
