"""Local background services (Label Studio, SegLoop's mongod, the FiftyOne App): ports on 127.0.0.1 and the
processes behind them. Both servers SegLoop starts outlive the command that started them, so they are found again
by pid and stopped by signal, and a port is checked the way the servers bind it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could bind ``port`` on 127.0.0.1 (SO_REUSEADDR as servers set it: TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pid_alive(pid: int) -> bool:
    """Whether a process runs; a zombie (exited, not yet reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def owner_alive(pid: object, host: object) -> bool:
    """Whether the process that owns something (a build folder, a loading dataset, a run's first epoch) still
    runs. One on another machine is assumed alive: only that machine can tell."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if host is not None and host != socket.gethostname():
        return True
    return pid_alive(pid)


def terminate(pid: int, timeout: float = 30, group: bool = False) -> None:
    """SIGTERM (to the whole process group with ``group``), then SIGKILL if it is still running after ``timeout``."""
    kill = os.killpg if group else os.kill
    if not pid_alive(pid):
        return
    kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            kill(pid, signal.SIGKILL)


def process_cmdline(pid: int) -> list[str] | None:
    """The command line of a running process (``/proc/<pid>/cmdline``), or None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def runs_command(pid: int, *required: str) -> bool:
    """Whether ``pid`` is alive and its command line holds every one of ``required`` as a whole argument.

    A pid recorded in a state file may have been reused by an unrelated process after a reboot or a crash;
    signalling it would stop somebody else's program. Callers therefore check that the process still runs the
    command they started (binary, data folder) before they signal it."""
    if not pid_alive(pid):
        return False
    argv = process_cmdline(pid)
    return argv is not None and all(part in argv for part in required)
