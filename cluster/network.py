"""Addresses on this machine: is a host loopback, does anything listen there, which ports are free.

One copy of each, for the local cluster (`local_processes`), the Jobs API client (`dashboard`,
`jobs`) and `runtime.connect`.
"""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1, ::ffff:127.x.y.z)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def unreachable(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing accepts a TCP connection at host:port (within `timeout_s`), or None if it does.

    Ray's own clients retry for a minute or block when nothing listens; callers use this to fail
    in seconds with a message that names the address and the fix.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def free_ports(count: int) -> list[int]:
    """Ports free right now on loopback (held open together so they are distinct)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports
