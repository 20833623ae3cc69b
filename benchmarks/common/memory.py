"""Peak extra memory of a function on the CPU: the torch profiler's allocation timeline, replayed.

``profile_peak(fn)`` runs ``fn`` under ``torch.profiler.profile(activities=[CPU],
profile_memory=True)``, which records every allocation and free of the CPU tensor allocator (size,
address, time, and the op / autograd node that made it). Replaying them in time order gives the
live-bytes timeline relative to the start; its maximum is the peak extra memory, and the tensors
live at that moment, grouped by the op that allocated them, say what the peak is made of.

``rss_baseline`` / ``peak_rss``: the process's peak-RSS increase over a window, a cross-check that
needs no profiler (see ``benchmarks/bench_loss.py`` for why it is not the number to quote).
"""
from __future__ import annotations

import contextlib
import os
import resource
import sys

# Scopes that open an allocation's owner in the profiler's event tree: autograd nodes (custom
# autograd functions are "<Name>Backward") and opcd's record_function around its leaf gradients.
NODE_SUFFIXES = ("Backward0", "Backward1", "Backward", "AccumulateGrad", "opcd::leaf_grads")


def label(path: tuple[str, ...]) -> str:
    """'<autograd node>: <outermost aten op below it>' (or 'fwd: <op>') for an allocation whose
    event-tree ancestors are ``path`` (outermost first)."""
    node_at = max((i for i, n in enumerate(path) if n.endswith(NODE_SUFFIXES)), default=-1)
    below = path[node_at + 1:]
    op = next((n for n in below if n.startswith("aten::")), below[-1] if below else "?")
    return f"{path[node_at]}: {op}" if node_at >= 0 else f"fwd: {op}"


def allocations(prof) -> list[tuple[int, int, int, str]]:
    """(time_ns, bytes (+alloc / -free), address, label) for every CPU allocator event, in time order."""
    out = []
    try:
        from torch._C._profiler import _EventType

        stack = [(root, ()) for root in prof.profiler.kineto_results.experimental_event_tree()]
        while stack:
            node, path = stack.pop()
            if node.tag == _EventType.Allocation:
                ef = node.extra_fields
                out.append((node.start_time_ns, ef.alloc_size, ef.ptr, label(path)))
            stack.extend((c, path + (node.name,)) for c in node.children)
    except Exception:  # private API moved: fall back to the public '[memory]' kineto events
        out = [(e.start_ns(), e.nbytes(), -1, "?")
               for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    out.sort(key=lambda a: a[0])
    return out


@contextlib.contextmanager
def quiet_stderr():
    """Silence the C++ stderr (kineto prints 'profiler_start/stop' lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_of(allocs: list[tuple[int, int, int, str]]) -> tuple[int, dict[str, dict]]:
    """Replay an allocation timeline: (peak live bytes above the start, {label: {"bytes", "count"}}
    of the allocations live at that peak, largest first). Pure."""
    cur = peak = 0
    peak_i = -1
    for i, (_, n, _, _) in enumerate(allocs):
        cur += n
        if cur > peak:
            peak, peak_i = cur, i
    live: dict[int, tuple[int, str]] = {}
    for _, n, ptr, lab in allocs[:peak_i + 1]:
        if n > 0:
            live[ptr] = (n, lab)
        else:
            live.pop(ptr, None)
    groups: dict[str, dict] = {}
    for n, lab in live.values():
        g = groups.setdefault(lab, {"bytes": 0, "count": 0})
        g["bytes"] += n
        g["count"] += 1
    return peak, dict(sorted(groups.items(), key=lambda kv: -kv[1]["bytes"]))


def profile_peak(fn) -> tuple[object, int, dict[str, dict]]:
    """Run ``fn`` under the memory profiler; return (fn's result, peak live bytes above the
    starting point, {label: {"bytes", "count"}} of the allocations live at that peak)."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr():
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.start()
    try:
        result = fn()
    finally:
        with quiet_stderr():
            prof.stop()
    peak, groups = peak_of(allocations(prof))
    return result, peak, groups


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_baseline() -> tuple[int, bool]:
    """Reset the peak-RSS mark if the kernel allows it (``5 > /proc/self/clear_refs``, Linux
    >= 4.0); return (baseline bytes, reset?). Without the reset, peak RSS is a process-lifetime
    high-water mark and building the inputs may already have set it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kib("VmRSS") * 1024, True
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, False


def peak_rss(reset: bool) -> int:
    """Peak RSS in bytes since ``rss_baseline`` (``reset``: whether it could reset the mark)."""
    if reset:
        return _proc_status_kib("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
