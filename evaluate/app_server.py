"""``python -m evaluate app``: start the Streamlit model demo on 127.0.0.1 and stop it on Ctrl-C.

Streamlit runs as a child of the same Python (``sys.executable -m streamlit run evaluate/app_page.py``), bound to
the loopback address, headless, without usage statistics (with them off, Streamlit also writes no machine id
under ``~/.streamlit``), without a file watcher and with an upload limit. The runs named on the command line are
checked here first, so a run without a checkpoint is a one-line error at the terminal rather than a page that
cannot show anything. This module imports no torch: the page loads the models.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.errors import SegLoopError
from core.runs import Run, resolve_run, run_folders
from core.services import free_port, terminate
from train.config import DEVICE_PATTERN as DEVICE_FORM  # the pattern train.device is checked against; no torch import

ROOT = Path(__file__).resolve().parent.parent
PAGE = Path(__file__).resolve().parent / "app_page.py"
TRAIN_FIX = "train it first: python -m train.run output.name=<name> (or resume it: python -m train.run resume=<run>)"
MAX_UPLOAD_MB = 50  # Streamlit's own upload limit (server.maxUploadSize); the page also refuses huge pixel counts


def check_trained(run: str | Path, which: str = "best", runs_dir: str | Path = "runs") -> Path:
    """A run folder that has the checkpoint, else the error naming the run and the training command."""
    try:
        path = resolve_run(run, runs_dir)
    except SegLoopError:
        if Path(run).exists() and not Path(run).is_dir():  # not "not found": it is there, but a file
            raise SegLoopError("is a file, not a run folder", path=run,
                               fix="give a run folder (runs/<name>, written by python -m train.run) or a run's name"
                               ) from None
        raise
    if not Run(path).checkpoint_path(which).is_file():
        if Run(path).checkpoint_path("best").is_file():
            Run(path).find_checkpoint(which)  # an ensemble (best.pt only) says so itself
        raise SegLoopError(f"run '{path.name}' has no checkpoint ({which}.pt) to demo", path=path,
                           fix=TRAIN_FIX.replace("<name>", path.name).replace("<run>", str(path)))
    Run(path).info()  # a missing or broken run.json is said here, not in the served page
    from train.checkpoint import check_run_checkpoint, load_checkpoint

    ckpt_path = Run(path).checkpoint_path(which)
    check_run_checkpoint(path, load_checkpoint(ckpt_path), ckpt_path)  # a truncated or foreign file, here too
    return path


def streamlit_command(port: int, script_args: list[str]) -> list[str]:
    """The ``streamlit run`` command line: loopback only, headless, no telemetry, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run",
            "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--server.runOnSave", "false", "--server.maxUploadSize", str(MAX_UPLOAD_MB),
            "--client.toolbarMode", "minimal", "--client.showErrorDetails", "type",
            str(PAGE), "--", *script_args]


def streamlit_env() -> dict[str, str]:
    """The child's environment: the project importable from the page, and the same settings as environment
    variables (they win over a user's ``~/.streamlit/config.toml``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", STREAMLIT_SERVER_HEADLESS="true",
               STREAMLIT_SERVER_ADDRESS="127.0.0.1", STREAMLIT_SERVER_FILE_WATCHER_TYPE="none",
               STREAMLIT_GLOBAL_DEVELOPMENT_MODE="false")
    return env


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, from the driver's list narrowed by ``CUDA_VISIBLE_DEVICES``: known without
    importing torch, which the launcher never loads (the page does, when it loads a model)."""
    root = Path("/proc/driver/nvidia/gpus")
    n = len(list(root.iterdir())) if root.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        n = min(n, len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"]))
    return n


def check_device(device: str) -> None:
    """``--device`` checked at the terminal, as ``train.device`` is: spelt as ``auto``, ``cpu``, ``cuda`` or
    ``cuda:N``, and a GPU this machine has. The page checks again with torch when it loads the model."""
    if not DEVICE_FORM.match(device):
        raise SegLoopError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}",
                           fix="pass --device auto (a GPU when there is one), cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        index, gpus = int(device.split(":")[1]) if ":" in device else 0, visible_gpus()
        if index >= gpus:
            have = f"{gpus} CUDA GPU(s) (cuda:0..)" if gpus else "no CUDA GPU"
            raise SegLoopError(f"--device is {device!r} but this machine has {have}",
                               fix="pass --device auto or cpu, or a cuda:N this machine has (nvidia-smi lists them)")


def check_port(port: int) -> None:
    """A port the demo can bind on 127.0.0.1, else why not: taken by another program, or privileged (below 1024
    a user who is not root may not listen, which is not the same problem as a port in use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Streamlit binds: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except PermissionError:
            raise SegLoopError(f"port {port} on 127.0.0.1 is privileged: only root may listen on it",
                               fix="pick a --port of 1024 or above, or leave it out") from None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise SegLoopError(f"cannot listen on port {port} of 127.0.0.1 ({exc.strerror})",
                                   fix="pick another --port, or leave it out") from None
            raise SegLoopError(f"port {port} on 127.0.0.1 is in use",
                               fix="pick another --port, or leave it out (ss -ltnp shows who holds it)") from None


def app_args(runs: list[str], runs_dir: str, which: str, device: str) -> list[str]:
    """The page's script arguments, after checking the runs and the device: each named run must have its
    checkpoint; with none named, ``runs_dir`` must hold at least one trained run."""
    check_device(device)
    if runs:
        paths = []
        for r in runs:
            path = str(check_trained(r, which, runs_dir).resolve())
            if path in paths:
                print(f"note: run {r} is given twice: offered once")
                continue
            paths.append(path)
    else:
        root = Path(runs_dir)
        trained = [d for d in run_folders(root) if Run(d).checkpoint_path(which).is_file()]
        for d in trained:
            Run(d).info()
        if not root.is_dir():
            raise SegLoopError("--runs-dir folder not found", path=root,
                               fix="give the folder that holds your runs (default runs/), or run folders by path")
        if not trained:
            fix = TRAIN_FIX.replace("<name>", "demo").replace(" (or resume it: python -m train.run resume=<run>)", "")
            if root.resolve() != Path("runs").resolve():
                fix = fix.replace("output.name=demo", f"output.runs_dir={root} output.name=demo")
            raise SegLoopError(f"no trained run (with {which}.pt) to demo", path=root, fix=fix)
        paths = []
    return [*paths, "--runs-dir", str(Path(runs_dir).resolve()), "--checkpoint", which, "--device", device]


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    """Block until Streamlit answers its health check; a child that exits first is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SegLoopError(f"streamlit exited with status {proc.returncode} before serving", path=PAGE,
                               fix="read its messages above; check that streamlit is installed (pip install -r "
                                   "requirements.txt)")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SegLoopError(f"streamlit did not answer within {timeout:.0f} s", path=url, fix="retry, or pick --port")


def serve(runs: list[str], port: int | None = None, runs_dir: str = "runs", which: str = "best",
          device: str = "auto") -> int:
    """Run the demo until Ctrl-C (or until Streamlit exits); returns Streamlit's exit status (0 on Ctrl-C)."""
    script_args = app_args(runs, runs_dir, which, device)
    if port is None:
        port = free_port()
    else:
        check_port(port)
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(streamlit_command(port, script_args), env=streamlit_env())
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a plain kill stops Streamlit too, as Ctrl-C does
    try:
        wait_until_up(proc, url)
        print(f"SegLoop model demo serving at {url} (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        print("stopping the demo", file=sys.stderr)
        return 0
    finally:
        terminate(proc.pid, timeout=10)
        proc.wait()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
