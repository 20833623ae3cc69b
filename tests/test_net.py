"""opcd.net.free_port: a port another socket can bind right away."""
import socket

from opcd.net import free_port


def test_free_port_is_bindable_and_varies():
    ports = {free_port() for _ in range(5)}
    assert all(0 < p < 65536 for p in ports) and len(ports) > 1  # the OS picks, not a constant
    with socket.socket() as s:
        s.bind(("127.0.0.1", next(iter(ports))))
