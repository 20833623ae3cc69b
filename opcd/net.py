"""Finding a TCP port to host a torch.distributed store on (bottom layer: imports nothing from opcd).

Used by the actor placement (learner rank 0's store), by learner rank 0 (the weight-sync group's
store) and by tests that start process groups by hand.
"""
from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port that was free on this host a moment ago (the OS picks it; another process may
    still take it before the caller binds, which the callers' store timeouts surface)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous_address() -> tuple[str, int]:
    """(this Ray node's IP, a free port on it): where a store on this node can listen for other nodes."""
    import ray

    return ray.util.get_node_ip_address(), free_port()
