"""Wait until a Ray cluster is up with enough nodes (and GPUs), for the launch scripts.

    python launch/ray_wait.py --address HEAD:6379 --nodes 2 --gpus 16 --timeout 600

Exits 0 once ``--nodes`` alive nodes and ``--gpus`` GPUs are registered, 1 on timeout. A run
started before the workers joined would be refused: opcd reserves every actor's resources at once
(opcd/actors.py), measured against the cluster as it is at that moment.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time


def cluster_size() -> tuple[int, float]:
    """(alive nodes, GPUs) of the cluster this process is connected to."""
    import ray

    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return nodes, float(ray.cluster_resources().get("GPU", 0))


def port_open(address: str, timeout: float = 5.0) -> bool:
    """True when HOST:PORT accepts TCP connections (``auto`` and other forms: assumed up). Probed first
    because ray.init on an address where nothing listens blocks for minutes, past --timeout."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return True
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="GCS address HOST:PORT (or auto)")
    p.add_argument("--nodes", type=int, default=1, help="alive nodes to wait for")
    p.add_argument("--gpus", type=float, default=0, help="GPUs to wait for")
    p.add_argument("--timeout", type=float, default=600, help="seconds before giving up")
    args = p.parse_args(argv)

    import ray

    deadline, seen = time.monotonic() + args.timeout, None
    while time.monotonic() < deadline:
        try:
            if not ray.is_initialized():
                if not port_open(args.address):
                    raise ConnectionError("nothing listens there yet")
                ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
            size = cluster_size()
        except Exception as e:  # head not up yet: ConnectionError and friends
            size, why = None, e
        if size is not None:
            if size != seen:
                print(f"[ray_wait] {size[0]}/{args.nodes} nodes, {size[1]:g}/{args.gpus:g} GPUs", file=sys.stderr)
                seen = size
            if size[0] >= args.nodes and size[1] >= args.gpus:
                return 0
        else:
            print(f"[ray_wait] waiting for Ray at {args.address}: {why}", file=sys.stderr)
        time.sleep(5)
    print(f"[ray_wait] timed out after {args.timeout:g}s: wanted {args.nodes} nodes and {args.gpus:g} GPUs, "
          f"have {seen}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
