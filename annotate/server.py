"""A local Label Studio for SegLoop: ``python -m annotate server start|stop|status``.

Label Studio runs from its own virtual environment (``make labelstudio`` makes ``.venv-labelstudio``), bound to
127.0.0.1 only, with its data (SQLite database, uploads) under ``data/labelstudio/server/``, local-file serving
rooted at SegLoop's ``data/`` folder, an admin user and API token created without prompts, ML backends and their
webhooks on loopback allowed (``python -m annotate backend``), and no outbound traffic: analytics, Sentry and
version checks off, and HTTP(S)_PROXY pointed at a dead loopback port, because its UI otherwise fetches tips from
the internet on every page. The token lives in a mode-0600 file and is never
printed whole, put on a command line or logged. The data folder is mode 0700 and the server runs with umask 077,
so its SQLite database (which holds the token too), uploads and logs are readable by this user only.
``server stop`` signals the recorded process only while its command line is still this server's (Label Studio's
binary, ``start``, this data folder): a pid left in ``server.json`` may belong to another program by now.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.errors import SegLoopError
from core.fsio import write_json_atomic
from core.services import port_free, runs_command, terminate

ROOT = Path(__file__).resolve().parent.parent
LS_VENV = Path(os.environ.get("SEGLOOP_LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
DEFAULT_DIR = ROOT / "data" / "labelstudio" / "server"
DEFAULT_PORT = 8080
ADMIN = "admin@segloop.local"
DEAD_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, connections fail at once
DATABASE = "label_studio.sqlite3"
PRIVATE_FILES = (DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", f"{DATABASE}-journal", "token", "admin_password",
                 "server.log", "server.json")


def server_dir() -> Path:
    return Path(os.environ.get("SEGLOOP_LABEL_STUDIO_DIR", DEFAULT_DIR))


def document_root() -> Path:
    return Path(os.environ.get("SEGLOOP_LOCAL_FILES_ROOT", ROOT / "data")).resolve()


def server_env(data_dir: Path, files_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "SENTRY_RATE": "0",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_DISABLE_VERSION_CHECK": "true",
        "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY, "https_proxy": DEAD_PROXY,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        # SegLoop's ML backend listens on loopback beside this server: Label Studio refuses a backend URL on a
        # reserved address (POST /api/ml: 403) and blocks the webhook it creates for it unless these are off.
        # This server is itself bound to 127.0.0.1, so no one else can point it at an internal address.
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
    })
    return env


def _ls_bin() -> Path:
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.is_file():
        raise SegLoopError("Label Studio is not installed", path=exe,
                           fix="run `make labelstudio` (installs label-studio into .venv-labelstudio)")
    return exe


def _healthy(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def make_private(data_dir: Path) -> None:
    """Data folder 0700, database, token, password and log 0600: a folder made by an older SegLoop, copied, or
    created by ``label-studio init`` under the user's umask is tightened here, before every start."""
    data_dir.chmod(0o700)
    for name in PRIVATE_FILES:
        f = data_dir / name
        if f.is_file() and not f.is_symlink():
            f.chmod(0o600)


def init_data_dir(data_dir: Path) -> None:
    """Create the database, the admin user and a legacy API token (stored 0600) without prompts."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(data_dir)
    token_file = data_dir / "token"
    if token_file.is_file() and (data_dir / DATABASE).is_file():
        return
    token = secrets.token_hex(20)
    password = secrets.token_urlsafe(16)
    env = server_env(data_dir, document_root())
    env["LABEL_STUDIO_USERNAME"], env["LABEL_STUDIO_PASSWORD"], env["LABEL_STUDIO_USER_TOKEN"] = ADMIN, password, token
    proc = subprocess.run([str(_ls_bin()), "init", "segloop", "--no-browser", "--enable-legacy-api-token",
                           "--data-dir", str(data_dir)], env=env, capture_output=True, text=True, timeout=600,
                          cwd=data_dir, umask=0o077)
    if proc.returncode != 0:
        raise SegLoopError(f"label-studio init failed: {proc.stderr[-1500:]}", path=data_dir,
                           fix="remove the folder and try again")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    fd = os.open(data_dir / "admin_password", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    make_private(data_dir)


def server_command(port: int, data_dir: Path) -> list[str]:
    """The command line SegLoop starts Label Studio with; ``stop`` recognises the server by it."""
    return [str(_ls_bin()), "start", "segloop", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir)]


def is_our_server(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` still runs the Label Studio SegLoop started on ``data_dir`` (binary, ``start``, folder)."""
    # the path itself, not _ls_bin(): asking about a server must work where Label Studio is not installed (any more)
    return runs_command(pid, str(LS_VENV / "bin" / "label-studio"), "start", "--data-dir",
                        str(Path(data_dir).resolve()))


def start(port: int = DEFAULT_PORT, data_dir: Path | None = None, timeout: float = 180) -> dict:
    data_dir = (data_dir or server_dir()).resolve()
    state = status(data_dir)
    if state.get("running"):
        return state
    if not port_free(port):
        # Label Studio would silently move to the next port; refuse instead, so the URL we print is true
        raise SegLoopError(f"port {port} on 127.0.0.1 is busy", fix="stop what uses it or pass --port")
    init_data_dir(data_dir)
    make_private(data_dir)
    fd = os.open(data_dir / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log = os.fdopen(fd, "ab")
    env = server_env(data_dir, document_root())
    env["LABEL_STUDIO_USERNAME"] = ADMIN
    proc = subprocess.Popen(server_command(port, data_dir), env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=data_dir, start_new_session=True, umask=0o077)
    log.close()  # the server holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SegLoopError(f"Label Studio exited with status {proc.returncode}",
                               path=data_dir / "server.log", fix="read the log")
        if _healthy(url):
            break
        time.sleep(0.5)
    else:
        proc.terminate()
        raise SegLoopError(f"Label Studio did not answer on {url} within {timeout:.0f}s",
                           path=data_dir / "server.log", fix="read the log")
    state = {"pid": proc.pid, "port": port, "url": url, "data_dir": str(data_dir),
             "token_file": str(data_dir / "token"), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(data_dir / "server.json", state)
    return {**state, "running": True}


def _record(data_dir: Path) -> dict | None:
    f = data_dir / "server.json"
    if not f.is_file():
        return None
    try:
        state = json.loads(f.read_text())
        int(state["pid"]), str(state["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable record names no process: treated as not running
    return state


def status(data_dir: Path | None = None) -> dict:
    data_dir = (data_dir or server_dir()).resolve()
    state = _record(data_dir)
    if state is None:
        return {"running": False, "data_dir": str(data_dir)}
    ours = is_our_server(int(state["pid"]), data_dir)
    return {**state, "ours": ours, "running": ours and _healthy(state["url"])}


def stop(data_dir: Path | None = None, timeout: float = 30) -> bool:
    """Stop the server SegLoop started on ``data_dir``; False (and the stale record removed) when the recorded
    process is gone or is no longer that server, which is then left alone."""
    data_dir = (data_dir or server_dir()).resolve()
    state = _record(data_dir)
    if state is None:
        return False
    pid = int(state["pid"])
    ours = is_our_server(pid, data_dir)
    if ours:
        terminate(pid, timeout, group=True)  # the whole process group: Label Studio starts workers
    (data_dir / "server.json").unlink(missing_ok=True)
    return ours


def local_server() -> tuple[str, str] | None:
    """(url, token) of the running local server, if any."""
    state = status()
    if not state.get("running"):
        return None
    return state["url"], Path(state["token_file"]).read_text().strip()


def masked(token: str) -> str:
    return token[:4] + "…" + f"({len(token)} chars)"
