"""Network helpers for tests that start real servers (Label Studio, the FiftyOne App)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from core.services import free_port

__all__ = ["LOOPBACK", "free_port", "listening_addresses", "no_outbound_connections"]

LOOPBACK = ("0100007F", "00000000000000000000000001000000")  # 127.0.0.1 and ::1 as /proc/net/tcp writes them


def listening_addresses(port: int) -> list[str]:
    """Hex local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            for line in open(table).read().splitlines()[1:]:
                local, st = line.split()[1], line.split()[3]
                if st == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    out.append(local.rsplit(":", 1)[0])
    return out


def _is_local(address: object) -> bool:
    """A Unix socket path, a loopback IP, or a name that can only mean this machine."""
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths, abstract sockets
    import ipaddress

    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def no_outbound_connections() -> Iterator[list[str]]:
    """Fail every connection to (and every name lookup of) an address other than this machine's loopback while the
    block runs, and list each attempt: code that would reach the network is caught even where it swallows the
    error (Ultralytics' online checks do)."""
    import socket

    attempts: list[str] = []
    originals = (socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto, socket.getaddrinfo,
                 socket.create_connection)

    def refuse(what: str) -> None:
        attempts.append(what)
        raise OSError(f"outbound connection refused by the test: {what}")

    def connect(self: socket.socket, address: object) -> None:
        if not _is_local(address):
            refuse(f"connect {address}")
        return originals[0](self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not _is_local(address):
            refuse(f"connect_ex {address}")
        return originals[1](self, address)

    def sendto(self: socket.socket, data: bytes, *args: object) -> int:
        if not _is_local(args[-1]):
            refuse(f"sendto {args[-1]}")
        return originals[2](self, data, *args)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if not _is_local((host,)):
            refuse(f"getaddrinfo {host}")
        return originals[3](host, *args, **kwargs)

    def create_connection(address: tuple, *args: object, **kwargs: object) -> socket.socket:
        if not _is_local(address):
            refuse(f"create_connection {address}")
        return originals[4](address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection
    try:
        yield attempts
    finally:
        (socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto, socket.getaddrinfo,
         socket.create_connection) = originals
