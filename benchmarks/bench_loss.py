"""Full-vocabulary reverse KL: naive [B,T,V] logits vs the chunked loss, time and peak memory.

    python benchmarks/bench_loss.py [--sizes 8192:256,1024,4096 32768:256,512,1024] [--repeats 3]

Methods, all forward + backward from the same inputs (B=1, hidden H=256, fp32, mask all ones):

* ``naive``   -- ``full_reverse_kl(hidden @ head.T, teacher_hidden @ teacher_head.T, mask)``: student
  *and* teacher logits are materialised as [B,T,V] inside the measured region (the teacher ones
  under ``no_grad``), because the chunked method also builds its teacher rows itself.
* ``chunked`` -- ``chunked_full_reverse_kl(hidden, head, teacher_rows, mask, chunk_size=256)`` with
  a lazy teacher ``rows -> log_softmax(teacher_hidden.view(-1,H)[rows] @ teacher_head.T)``.
* ``topk``    -- ``topk_reverse_kl(hidden @ head.T, ids, teacher_topk_logprobs, mask)`` with k=256
  (reference). ``ids`` / teacher log-probs [B,T,k] come from the rollout, so they are inputs,
  built chunk-wise beforehand (never a full [T,V] tensor outside the measured region).

Timing: best of ``--repeats`` wall-clock runs of forward + backward (the profiled run below is
not one of them).

Peak extra memory (the number to trust): each (method, T, V) runs in a *fresh* worker process
(multiprocessing forkserver, torch preloaded, so a child costs milliseconds rather than a torch
import). After the inputs are allocated, one forward + backward runs under
``torch.profiler.profile(activities=[CPU], profile_memory=True)``. The profiler records every
allocation and free of the CPU tensor allocator (size, address, time, and the op / autograd node
that made it). Replaying them in time order gives the live-bytes timeline relative to "inputs
allocated"; its maximum is the peak extra memory. The same replay gives the set of tensors live at
that peak, grouped by the op that allocated them (printed for the chunked method). The peak
includes whatever part of the input gradients (d hidden [T,H], d head [V,H], or their per-chunk
partial sums) already exists at that moment -- any method must produce them and a training step
keeps them; ``excl. grads`` subtracts the live tensors made by those gradient nodes (see
``GRAD_NODES``), leaving the loss's own working memory.

Cross-check: the worker also reports the RSS increase over its first, unprofiled run: peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before; ``ru_maxrss`` if the kernel
refuses) minus RSS before, after a tiny warm-up so BLAS / thread-pool start-up is excluded (the
profiler's own start-up would add 100+ MiB, hence a separate run). With glibc's default malloc
this is *not* the tensor peak: freed blocks under 32 MiB are later served from glibc's heap, which
it keeps, so RSS can sit well above the live bytes (chunked V=8192, whose chunks are 8 MiB), or
below them where freed heap is reused. ``--mmap-threshold 131072`` pins glibc's mmap threshold so
every large block goes back to the OS on free; then RSS and the profiler agree to a few MiB (it
slows the timings, so it is off by default). The profiler number is the one to quote.

``ratio`` = peak extra / one chunk's logits (``chunk_size * V * 4`` bytes). The project target
for ``chunked`` is <= 1.5x whatever T, judged without the leaf gradients (d hidden, d head: outputs
every method produces); naive should grow linearly with T, chunked stay flat.
Correctness: chunked and naive loss values must agree to rel 1e-4 at every size; gradients are
compared at T = 2.5 chunks. Writes ``benchmarks/results/loss.json``; exits 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if not __package__:  # `python benchmarks/bench_loss.py`: the repo root on the path for `benchmarks.common`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common.memory import peak_rss, profile_peak, rss_baseline  # noqa: E402
from opcd.losses import chunked_full_reverse_kl, full_reverse_kl, topk_reverse_kl  # noqa: E402

H = 256
K = 256
SEED = 0
METHODS = ("naive", "chunked", "topk")
MIB = 2 ** 20
# Autograd nodes whose outputs are (partial sums of) d hidden / d head, the leaf gradients any
# method must produce: the matmul's backward, the engine's accumulation of per-chunk head grads
# (under TBackward0), the scatter of per-chunk hidden grads, AccumulateGrad.
GRAD_NODES = ("MmBackward0", "TBackward0", "IndexSelectBackward0", "UnsafeViewBackward0",
              "ViewBackward0", "ReshapeAliasBackward0", "AccumulateGrad",
              "leaf_grads")  # opcd.chunked_kl allocates d hidden / d head under record_function("opcd::leaf_grads")
LOSS_RTOL = 1e-4
DEFAULT_SIZES = ["8192:256,1024,4096", "32768:256,512,1024"]


# --------------------------------------------------------------------------- inputs and methods
class Case:
    """Inputs for one (T, V) and a ``run()`` doing forward + backward of one method."""

    def __init__(self, method: str, T: int, V: int, chunk_size: int):
        g = torch.Generator().manual_seed(SEED)
        self.method, self.T, self.V, self.chunk_size = method, T, V, chunk_size
        # logits ~ N(0, 2^2); the teacher is a perturbed student, so the KL is small but nonzero.
        self.hidden = torch.randn(1, T, H, generator=g).requires_grad_()
        self.head = (torch.randn(V, H, generator=g) * (2 / H ** 0.5)).requires_grad_()
        self.t_hidden = self.hidden.detach() + 0.3 * torch.randn(1, T, H, generator=g)
        self.t_head = self.head.detach() + 0.05 * torch.randn(V, H, generator=g)
        self.t_flat = self.t_hidden.view(T, H)
        self.mask = torch.ones(1, T)
        if method == "topk":
            # The student's top-k ids (from the rollout) and teacher log-probs there, built
            # chunk-wise so no [T, V] tensor ever exists outside the measured region.
            ids, t_lp = [], []
            with torch.no_grad():
                for s in range(0, T, chunk_size):
                    rows = torch.arange(s, min(T, s + chunk_size))
                    z = self.hidden.detach().view(T, H)[rows] @ self.head.detach().t()
                    i = z.topk(K, dim=-1).indices
                    ids.append(i)
                    t_lp.append(self.teacher_rows(rows).gather(-1, i))
            self.ids = torch.cat(ids).view(1, T, K)
            self.t_topk_lp = torch.cat(t_lp).view(1, T, K)

    def teacher_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.t_flat.index_select(0, rows) @ self.t_head.t(), dim=-1)

    def reset(self) -> None:
        self.hidden.grad = None
        self.head.grad = None
        gc.collect()

    def run(self) -> float:
        # Logits are passed inline so nothing here keeps them alive longer than the loss does.
        if self.method == "naive":
            with torch.no_grad():
                t_logits = self.t_hidden @ self.t_head.t()
            loss, _ = full_reverse_kl(self.hidden @ self.head.t(), t_logits, self.mask)
            del t_logits
        elif self.method == "chunked":
            loss, _ = chunked_full_reverse_kl(self.hidden, self.head, self.teacher_rows, self.mask,
                                              chunk_size=self.chunk_size)
        elif self.method == "topk":
            loss, _ = topk_reverse_kl(self.hidden @ self.head.t(), self.ids, self.t_topk_lp,
                                      self.mask)
        else:
            raise ValueError(self.method)
        loss.backward()
        return float(loss.detach())


# --------------------------------------------------------------------------- memory measurement
def _node(label: str) -> str:
    """The autograd node of a ``memory.label`` ('fwd' outside the backward)."""
    return label.rsplit(": ", 1)[0].split()[-1].split("::")[-1]


def measure(method: str, T: int, V: int, chunk_size: int, repeats: int) -> dict:
    """Worker (fresh process): peak extra memory of one forward + backward, then best-of timing."""
    warm = Case(method, 16, 2 * K, chunk_size)  # initialise BLAS / OpenMP pools before the baseline
    warm.run()
    del warm
    case = Case(method, T, V, chunk_size)
    case.reset()

    def timed() -> float:
        case.reset()
        t0 = time.perf_counter()
        case.run()
        return time.perf_counter() - t0

    # Run 1, unprofiled: the RSS cross-check (the profiler's own start-up allocates ~100+ MiB
    # of RSS on its first use, so it must not run inside this window). Timed too.
    rss0, rss_reset = rss_baseline()
    times = [timed()]
    rss_delta = peak_rss(rss_reset) - rss0
    # Run 2: the allocation timeline (not timed: profiler overhead).
    case.reset()
    loss, peak, live = profile_peak(case.run)
    times += [timed() for _ in range(repeats - 1)]
    grads = sum(g["bytes"] for lab, g in live.items() if _node(lab) in GRAD_NODES)
    chunk = chunk_size * V * 4
    return {"T": T, "V": V, "method": method, "loss": loss, "seconds": min(times), "times": times,
            "peak_extra_bytes": peak, "peak_extra_mib": peak / MIB,
            "ratio_to_chunk_logits": peak / chunk,
            "leaf_grad_bytes_live_at_peak": grads, "leaf_grad_bytes": (T * H + V * H) * 4,
            "peak_extra_excl_grads_mib": (peak - grads) / MIB,
            "ratio_excl_grads": (peak - grads) / chunk,
            "rss_delta_mib": rss_delta / MIB, "rss_peak_reset": rss_reset,
            "live_at_peak": {k: {"mib": v["bytes"] / MIB, "count": v["count"]}
                             for k, v in live.items() if v["bytes"] >= MIB // 2}}


def grad_check(T: int, V: int, chunk_size: int) -> dict:
    """Worker: loss and gradients of chunked vs naive on identical inputs."""
    out = {}
    for method in ("naive", "chunked"):
        c = Case(method, T, V, chunk_size)
        loss = c.run()
        out[method] = (loss, c.hidden.grad.clone(), c.head.grad.clone())
    (ln, hn, wn), (lc, hc, wc) = out["naive"], out["chunked"]

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    return {"T": T, "V": V, "loss_rel_diff": abs(lc - ln) / abs(ln),
            "hidden_grad_max_rel_diff": rel(hc, hn), "head_grad_max_rel_diff": rel(wc, wn)}


# --------------------------------------------------------------------------- driver
def parse_sizes(specs: list[str]) -> list[tuple[int, int]]:
    sizes = []
    for spec in specs:
        v, ts = spec.split(":")
        sizes += [(int(t), int(v)) for t in ts.split(",")]
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, metavar="V:T1,T2,...")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--target", type=float, default=1.5, help="max chunked peak / chunk logits")
    ap.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                    help="set MALLOC_MMAP_THRESHOLD_ for the workers (e.g. 131072): glibc then "
                         "returns every freed block >= BYTES to the OS, so the RSS column "
                         "tracks live tensor bytes (slows down the timings)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "loss.json"))
    args = ap.parse_args()
    sizes = parse_sizes(args.sizes)
    t_start = time.perf_counter()
    load0 = os.getloadavg()

    if args.mmap_threshold is not None:  # read by glibc at start-up of the forkserver
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "opcd.losses"])
    results, checks = [], []
    # maxtasksperchild=1: every measurement gets a fresh process (clean allocator, clean maxrss).
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for T, V in sizes:
            for method in METHODS:
                r = pool.apply(measure, (method, T, V, args.chunk_size, args.repeats))
                results.append(r)
                print(f"  T={T:<5} V={V:<6} {method:<8} {r['seconds']:7.3f} s  "
                      f"{r['peak_extra_mib']:8.1f} MiB", flush=True)
        # Gradients on 2.5 chunks of rows: several chunks, the last one ragged.
        for V in sorted({v for _, v in sizes}):
            checks.append(pool.apply(grad_check, (args.chunk_size * 5 // 2, V, args.chunk_size)))

    by = {(r["T"], r["V"], r["method"]): r for r in results}
    agree = []
    for T, V in sizes:
        ln, lc = by[T, V, "naive"]["loss"], by[T, V, "chunked"]["loss"]
        d = abs(lc - ln) / abs(ln)
        agree.append({"T": T, "V": V, "naive": ln, "chunked": lc, "rel_diff": d, "ok": d <= LOSS_RTOL})

    print(f"\nB=1, H={H}, fp32, chunk_size={args.chunk_size}, top-k k={K}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load avg {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}\n")
    print("| T | V | method | seconds | peak MiB | ratio to one chunk's logits "
          "| peak excl. grads MiB | ratio excl. grads | RSS Δ MiB |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['T']} | {r['V']} | {r['method']} | {r['seconds']:.3f} | "
              f"{r['peak_extra_mib']:.1f} | {r['ratio_to_chunk_logits']:.2f} | "
              f"{r['peak_extra_excl_grads_mib']:.1f} | {r['ratio_excl_grads']:.2f} | "
              f"{r['rss_delta_mib']:.1f} |")

    print("\none chunk's logits = chunk_size*V*4 bytes: "
          + ", ".join(f"V={V}: {args.chunk_size * V * 4 / MIB:.0f} MiB"
                      for V in sorted({v for _, v in sizes})))
    print("\nloss agreement, chunked vs naive (rel tol %.0e):" % LOSS_RTOL)
    for a in agree:
        print(f"  T={a['T']:<5} V={a['V']:<6} naive={a['naive']:.8f} chunked={a['chunked']:.8f} "
              f"rel diff={a['rel_diff']:.1e} {'OK' if a['ok'] else 'MISMATCH'}")
    for c in checks:
        print(f"  grads at T={c['T']} V={c['V']}: max rel diff hidden {c['hidden_grad_max_rel_diff']:.1e}, "
              f"head {c['head_grad_max_rel_diff']:.1e}")

    scaling = {}
    for V in sorted({v for _, v in sizes}):
        ts = sorted(t for t, v in sizes if v == V)
        s = {m: by[ts[-1], V, m]["peak_extra_bytes"] / by[ts[0], V, m]["peak_extra_bytes"]
             for m in METHODS}
        scaling[V] = {"T_from": ts[0], "T_to": ts[-1], "T_growth": ts[-1] / ts[0],
                      "peak_growth": s}
        print(f"\nV={V}: T x{ts[-1] / ts[0]:.0f} ({ts[0]} -> {ts[-1]}) grows peak extra memory "
              + ", ".join(f"{m} x{g:.2f}" for m, g in s.items()))
    chunked = [r for r in results if r["method"] == "chunked"]
    worst = max(r["ratio_to_chunk_logits"] for r in chunked)
    worst_ex = max(r["ratio_excl_grads"] for r in chunked)
    # The target is on the loss's own working memory: d hidden [T,H] and d head [V,H] are outputs
    # that every method must produce (naive too) and that a training step keeps anyway.
    met = worst_ex <= args.target
    print(f"\nchunked peak / one chunk's logits: max {worst:.2f}x with the leaf gradients, {worst_ex:.2f}x "
          f"without them; target (without) <= {args.target}x: {'MET' if met else 'NOT MET'}")
    for r in (r for r in chunked if r["T"] == max(t for t, v in sizes if v == r["V"])):
        unit = args.chunk_size * r["V"] * 4 / MIB
        print(f"  live at the chunked peak, T={r['T']} V={r['V']} "
              f"({r['peak_extra_mib']:.1f} MiB = {r['ratio_to_chunk_logits']:.2f} chunks):")
        for lab, g in r["live_at_peak"].items():
            print(f"    {g['mib']:8.1f} MiB ({g['mib'] / unit:4.2f} chunks) in {g['count']:>2} "
                  f"tensor(s) from {lab}")

    elapsed = time.perf_counter() - t_start
    print(f"\ntotal {elapsed:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": {"B": 1, "H": H, "k": K, "dtype": "float32", "chunk_size": args.chunk_size,
                   "repeats": args.repeats, "malloc_mmap_threshold": args.mmap_threshold, "sizes": [{"T": t, "V": v} for t, v in sizes],
                   "target_ratio": args.target},
        "env": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "python": platform.python_version(), "machine": platform.machine(),
                "cpus": os.cpu_count(), "load_avg_start": load0, "load_avg_end": os.getloadavg()},
        "memory_method": "torch.profiler profile_memory allocation timeline (fresh forkserver "
                         "process per measurement); peak of live bytes above the inputs",
        "results": results, "loss_agreement": agree, "grad_checks": checks,
        "peak_growth_with_T": {str(k): v for k, v in scaling.items()},
        "chunked_max_ratio": worst, "chunked_max_ratio_excl_grads": worst_ex, "target_met": met,
        "total_seconds": elapsed}, indent=2) + "\n")
    print(f"wrote {out}")
    ok = all(a["ok"] for a in agree)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
