"""Bucketed broadcast sync, pure parts: bucket planning, pack/unpack, and a real 3-process gloo group."""
import multiprocessing as mp

import pytest
import torch
from omegaconf import OmegaConf

from opcd.config import SyncConfig
from opcd.sync import resolve_sync
from opcd.sync.broadcast import (TensorSpec, make_group, pack, plan_buckets, receive_buckets, send_buckets,
                                 specs_of, unpack)


def _named():
    g = torch.Generator().manual_seed(0)
    return [("a", torch.randn(3, 4, generator=g)), ("b", torch.randn(5, generator=g)),
            ("c", torch.randn(2, 2, generator=g).to(torch.bfloat16)), ("d", torch.randn(100, generator=g))]


def test_buckets_respect_size_and_dtype():
    specs = specs_of(_named())
    assert specs[0] == TensorSpec("a", (3, 4), "float32") and specs[2].dtype == "bfloat16"
    assert specs[0].nbytes == 48 and specs[2].nbytes == 8
    # 48 + 20 bytes fit in 80; the bf16 tensor starts a new bucket; 400 bytes exceed any bucket: alone.
    assert plan_buckets(specs, 80) == [[0, 1], [2], [3]]
    assert plan_buckets(specs, 10**9) == [[0, 1], [2], [3]]  # dtype changes still split
    assert plan_buckets(specs, 1) == [[0], [1], [2], [3]]


def test_pack_unpack_roundtrip():
    named = _named()[:2]
    flat = pack([t for _, t in named])
    assert flat.shape == (17,)
    for (n, t), (m, u) in zip(named, unpack(flat, specs_of(named))):
        assert n == m and torch.equal(t, u)
    with pytest.raises(ValueError, match="bucket holds 17 elements, specs describe 12"):
        unpack(flat, specs_of(named[:1]))


def test_auto_picks_broadcast_nccl_on_cuda_and_object_store_on_cpu():
    auto = OmegaConf.structured(SyncConfig())
    assert resolve_sync(auto, "cpu") == ("object_store", "gloo")
    assert resolve_sync(auto, "cuda") == ("broadcast", "nccl")
    with pytest.raises(ValueError, match="unknown sync.method 'fast'"):
        resolve_sync(OmegaConf.structured(SyncConfig(method="fast")), "cpu")


def _member(rank, world, port, q):
    named = _named()
    specs = specs_of(named)
    buckets = plan_buckets(specs, 64)
    group = make_group("gloo", "127.0.0.1", port, rank, world, 30)
    if rank == 0:
        send_buckets(group, named, buckets)
        q.put((rank, True))
        return
    got = receive_buckets(group, specs, buckets)  # what engine_receive does, without an engine
    q.put((rank, all(torch.equal(t, u) for (_, t), (_, u) in zip(named, got)) and len(got) == len(named)))


def test_gloo_group_delivers_every_bucket_to_every_member():
    from opcd.net import free_port

    ctx = mp.get_context("spawn")
    q, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_member, args=(r, 3, port, q)) for r in range(3)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results == {0: True, 1: True, 2: True}
