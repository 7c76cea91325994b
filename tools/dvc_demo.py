"""``python tools/dvc_demo.py``: SegLoop's DVC pipeline (dvc.yaml) end to end, in a throw-away git repository.

The working tree (git's tracked and untracked-but-not-ignored files) is copied into ``WORKDIR/repo``, which becomes
a git + DVC repository whose default remote is the local folder ``WORKDIR/storage``. Then, as a user would:

  1. ``dvc repro``                      demo city -> dataset version -> run -> test evaluation -> report
  2. ``dvc metrics show``, ``dvc plots show``   the test metrics; the learning curves as HTML
  3. ``dvc push``, ``git commit``       outputs to the remote, dvc.lock to git
  4. ``git clone`` + ``dvc pull``       a fresh clone (WORKDIR/clone) gets the same files
  5. ``dvc repro`` in the clone         nothing runs: every stage is up to date

Everything DVC and git would write outside the work folder (global and system config, the site cache, HOME) is
pointed into WORKDIR/home, analytics and update checks are off, and nothing reaches the network. The stage commands
call ``python`` from PATH; this script puts its own interpreter's folder (the venv) first.

  python tools/dvc_demo.py                       # in a new temporary folder, kept (its path is printed)
  python tools/dvc_demo.py --workdir /tmp/d      # a folder of your choosing (must be empty or absent)
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.errors import SegLoopError, run_cli  # noqa: E402

# the pipeline's outputs (dvc.yaml), compared between the repository and its clone after `dvc pull`
OUTPUTS = ("data/dvc/demo_city", "data/dvc/versions", "runs/dvc/config.yaml", "runs/dvc/run.json",
           "runs/dvc/checkpoints", "runs/dvc/tb", "runs/dvc/metrics.jsonl", "runs/dvc/curves.json", "runs/dvc/eval",
           "reports/dvc")
METRICS = "runs/dvc/eval/test/metrics.json"  # dvc.yaml's metrics file
STAGES = ("ingest", "train", "evaluate", "report")
HEADLINE = ("mIoU", "pixel_acc", "mDice")
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "SegLoop DVC demo", "GIT_AUTHOR_EMAIL": "dvc-demo@segloop.local",
                "GIT_COMMITTER_NAME": "SegLoop DVC demo", "GIT_COMMITTER_EMAIL": "dvc-demo@segloop.local"}


@dataclass
class Sandbox:
    """A work folder for DVC: the repository, its clone, the local remote and a private HOME, plus the environment
    every command there runs with."""

    workdir: Path

    @property
    def repo(self) -> Path:
        return self.workdir / "repo"

    @property
    def clone(self) -> Path:
        return self.workdir / "clone"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def env(self) -> dict[str, str]:
        """The environment of every git and DVC call: the venv first on PATH (stage commands call ``python``),
        config and caches under ``home``, no analytics, no update check, no Studio, no prompts, progress bars
        drawn seldom (the output is a pipe, where each redraw would be a line)."""
        home = self.home
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_", "XDG_"))}
        env.update({
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"), "XDG_CONFIG_DIRS": str(home / "etc-xdg"),
            "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"), "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"), "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"), "GIT_TERMINAL_PROMPT": "0",
            "TQDM_MININTERVAL": "30", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1", **GIT_IDENTITY,
        })
        return env


def run(sandbox: Sandbox, cwd: Path, *cmd: str, echo: bool = True, shown: str | None = None) -> str:
    """Run one command in the sandbox and return its output (stdout and stderr, interleaved); with ``echo`` the
    output is shown as it comes. A failure raises with the output's end."""
    if echo:
        print(f"\n$ {shown or ' '.join(cmd)}    (in {cwd})", flush=True)
    lines = []
    with subprocess.Popen(cmd, cwd=cwd, env=sandbox.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                print(line, end="", flush=True)
    out = "".join(lines)
    if proc.returncode != 0:
        raise SegLoopError(f"`{shown or ' '.join(cmd)}` failed (exit {proc.returncode}):\n{out[-4000:]}", path=cwd,
                           fix="read the command's output above")
    return out


def dvc(sandbox: Sandbox, cwd: Path, *args: str, echo: bool = True) -> str:
    """``dvc ARGS`` with the DVC of this interpreter's environment (the venv's)."""
    return run(sandbox, cwd, sys.executable, "-m", "dvc", *args, echo=echo, shown=" ".join(("dvc", *args)))


def project_files(src: Path = ROOT) -> list[str]:
    """The files of the working tree that git would commit: tracked ones that still exist, plus untracked ones that
    are not ignored (venvs, data, runs and caches are ignored, so they stay behind)."""
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=src,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SegLoopError(f"git ls-files failed: {proc.stderr.strip()}", path=src, fix="run it from a git checkout")
    return sorted({f for f in proc.stdout.split("\0") if f and (src / f).is_file() and not (src / f).is_symlink()})


def make_repo(sandbox: Sandbox, src: Path = ROOT) -> Path:
    """Copy the project into ``sandbox.repo`` and make it a git + DVC repository with a local default remote; the
    copy is committed, so that a clone of it is a clone of the project."""
    if sandbox.workdir.exists() and any(sandbox.workdir.iterdir()):
        raise SegLoopError("the work folder is not empty", path=sandbox.workdir,
                           fix="give an empty or new folder with --workdir (nothing in it is replaced)")
    for d in (sandbox.repo, sandbox.storage, sandbox.home):
        d.mkdir(parents=True, exist_ok=True)
    for rel in project_files(src):
        dest = sandbox.repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest)
    repo = sandbox.repo
    run(sandbox, repo, "git", "init", "--quiet", "--initial-branch=main", echo=False)
    if not (repo / ".dvc" / "config").is_file():
        dvc(sandbox, repo, "init", "--quiet", echo=False)
    for key, value in (("core.analytics", "false"), ("core.check_update", "false"), ("core.autostage", "false")):
        dvc(sandbox, repo, "config", key, value, echo=False)
    # the remote as an absolute path in the project config, so that the clone finds it too
    dvc(sandbox, repo, "remote", "add", "--force", "--default", "storage", str(sandbox.storage), echo=False)
    run(sandbox, repo, "git", "add", "--all", echo=False)
    run(sandbox, repo, "git", "commit", "--quiet", "-m", "SegLoop with its DVC pipeline", echo=False)
    return repo


def metrics(sandbox: Sandbox, cwd: Path) -> dict[str, Any]:
    """``dvc metrics show --json`` of the workspace: the test metrics file's content as DVC reads it."""
    shown = json.loads(dvc(sandbox, cwd, "metrics", "show", "--json", echo=False))
    return shown[""]["data"][METRICS]["data"]


def stages_run(repro_output: str) -> list[str]:
    """The stages a ``dvc repro`` ran, from its output ("Running stage 'train':")."""
    return [s for s in STAGES if f"Running stage '{s}'" in repro_output]


def differing_files(a: Path, b: Path, paths: tuple[str, ...] = OUTPUTS) -> list[str]:
    """Files under ``paths`` that are missing from one side or differ in content (compared byte by byte)."""
    bad = []
    for rel in paths:
        pa, pb = a / rel, b / rel
        files = sorted({p.relative_to(a) for p in (pa.rglob("*") if pa.is_dir() else [pa]) if p.is_file()}
                       | {p.relative_to(b) for p in (pb.rglob("*") if pb.is_dir() else [pb]) if p.is_file()})
        if not files:
            bad.append(f"{rel} (missing on both sides)")
        for f in files:
            if not ((a / f).is_file() and (b / f).is_file() and filecmp.cmp(a / f, b / f, shallow=False)):
                bad.append(str(f))
    return bad


def demo(workdir: Path) -> dict[str, object]:
    """The whole demo (see the module docstring); returns what each step found, for the summary."""
    sb = Sandbox(workdir)
    t0 = time.time()
    print(f"copying the project into {sb.repo}", flush=True)
    repo = make_repo(sb)
    first = dvc(sb, repo, "repro")
    t_repro = time.time() - t0
    shown = metrics(sb, repo)
    print("\n$ dvc metrics show    (headline: " + ", ".join(f"{k} {shown[k]:.4f}" for k in HEADLINE) + ")")
    dvc(sb, repo, "plots", "show", "--out", str(workdir / "plots"))
    dvc(sb, repo, "push")
    run(sb, repo, "git", "add", "--all", echo=False)  # dvc.lock and the .gitignore entries DVC added
    run(sb, repo, "git", "commit", "--quiet", "-m", "pipeline outputs: dvc.lock", echo=True)
    run(sb, workdir, "git", "clone", "--quiet", str(repo), str(sb.clone))
    dvc(sb, sb.clone, "pull")
    again = dvc(sb, sb.clone, "repro")
    status = dvc(sb, sb.clone, "status")
    return {"ran": stages_run(first), "repro_seconds": round(t_repro, 1), "clone_ran": stages_run(again),
            "clone_status": status.strip(), "differ": differing_files(repo, sb.clone),
            "plots": workdir / "plots" / "index.html"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/dvc_demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="empty or new folder for the repository, clone, remote and HOME "
                                                "(default: a new temporary folder)")
    args = p.parse_args(argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="segloop-dvc-demo-"))).resolve()
    found = demo(workdir)
    print(f"\nDVC demo in {workdir}")
    print(f"  repro ran {', '.join(found['ran']) or 'nothing'} in {found['repro_seconds']}s; "  # type: ignore[arg-type]
          f"plots: {found['plots']}")
    print(f"  fresh clone after dvc pull: {'identical outputs' if not found['differ'] else found['differ']}")
    print(f"  dvc repro in the clone ran: {', '.join(found['clone_ran']) or 'nothing (up to date)'}")  # type: ignore[arg-type]
    if found["differ"] or found["clone_ran"]:
        raise SegLoopError("the clone does not reproduce the repository's outputs", path=workdir,
                           fix="see the differences listed above")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
