"""Network helpers for tests that start real servers (Label Studio, the FiftyOne App)."""

from __future__ import annotations

import os

from core.services import free_port

__all__ = ["LOOPBACK", "free_port", "listening_addresses"]

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
