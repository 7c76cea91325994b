"""Learning from submitted labels while the backend serves: export, build, fine-tune, compare, switch.

When enough annotations were submitted to a project since the last round (``--train-after``), or Label Studio asks
(``START_TRAINING``), one job runs in the background for that project: it exports the project's snapshot (as
``annotate export`` does), builds the next dataset version from the user's data config (as ``ingest build``),
fine-tunes a new run from the served one (``train.run`` in its own process, ``model.init_from`` the served run, a
short budget), scores the served model and the new one on the new version's validation split with the same
evaluation, and switches the served model only if the new one is not worse there. Nothing served changes until
then. One job at a time per project: its lock file holds the job's process id, so a lock left by a crashed backend
is taken over (and said) rather than blocking the project forever. Each job's progress and result are in
``data/labelstudio/<project>/learn/job-<time>.json`` (and ``.log``), and in the backend's ``/status``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from annotate.backend import Backend, ProjectLink, RequestError, Served, load_inference
from annotate.client import LabelStudio
from annotate.project import export_snapshot, prediction_version, snapshot_root
from core.errors import SegLoopError
from core.fsio import write_json_atomic
from core.services import pid_alive

log = logging.getLogger("segloop.backend")
ROOT = Path(__file__).resolve().parent.parent


def learn_dir(project_title: str) -> Path:
    """Where the jobs of a project are recorded: beside its snapshots, apart from them (as ``next/`` is)."""
    return snapshot_root() / project_title / "learn"


def headline(part: Any, metrics: dict[str, Any]) -> float | None:
    """The figure the task ranks two models by on one split (its evaluation part's ``headline`` path)."""
    value: Any = metrics
    for key in part.headline[1]:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


class Learner:
    """Background fine-tuning jobs for a ``Backend``, one per project at a time."""

    def __init__(self, backend: Backend, data_config: Path, train_after: int = 20, epochs: int = 2,
                 overrides: list[str] | None = None, split: str = "val") -> None:
        from ingest.version import load_data_config

        load_data_config(data_config)  # a broken config is refused at the terminal, not in the first job
        self.backend = backend
        self.data_config = Path(data_config).resolve()
        self.train_after = train_after
        self.epochs = epochs
        self.overrides = list(overrides or [])
        self.split = split
        self.jobs: dict[int, dict[str, Any]] = {}  # project id -> its last (or running) job
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        backend.on_annotation = self.on_annotation
        backend.on_train = self.on_train

    # ---------------------------------------------------------------------------------------------- triggers
    def on_annotation(self, link: ProjectLink, action: str) -> None:
        if self.train_after and link.new_annotations >= self.train_after:
            self.trigger(link, f"{link.new_annotations} new annotations", explicit=False)

    def on_train(self, link: ProjectLink) -> dict[str, Any]:
        return self.trigger(link, "START_TRAINING", explicit=True)

    def running(self, pid: int) -> dict[str, Any] | None:
        job = self.jobs.get(pid)
        return job if job and job["state"] in ("starting", "running") else None

    def trigger(self, link: ProjectLink, reason: str, explicit: bool) -> dict[str, Any]:
        """Start a job for the project, or say why not: a second explicit trigger while one runs is refused (409);
        annotations that reach the threshold meanwhile queue one more round, run when the current one ends."""
        with self._lock:
            job = self.running(link.project_id)
            if job is not None:
                if explicit:
                    raise RequestError(409, f"a training job for project {link.project_id} is running since "
                                            f"{job['started']} (step: {job['step']}); this trigger is refused, "
                                            "see /status")
                self._pending.add(link.project_id)
                return {"status": "queued", "job": job["id"]}
            client = self.client(link)
            title = client.get(f"/api/projects/{link.project_id}")["title"]
            folder = learn_dir(title)
            folder.mkdir(parents=True, exist_ok=True)
            taken_over = self._take_lock(folder / "lock", link.project_id)
            when = datetime.now(UTC)
            job = {"id": when.strftime("job-%Y%m%dT%H%M%S%fZ"), "project": link.project_id, "title": title,
                   "reason": reason, "state": "starting", "step": "export", "started": when.isoformat(),
                   "served_before": self.backend.served.version, "folder": str(folder)}
            if taken_over:
                job["took_over_lock_of"] = taken_over
            self.jobs[link.project_id] = job
            link.new_annotations = 0
            self._record(job)
        threading.Thread(target=self._run, args=(job, link, client), name=f"learn-{link.project_id}",
                         daemon=True).start()
        return {"status": "started", "job": job["id"]}

    def client(self, link: ProjectLink) -> LabelStudio:
        url = self.backend.fetcher.base_url or link.hostname
        token = self.backend.fetcher.token or link.access_token
        if not url or not token:
            raise RequestError(409, f"project {link.project_id}: no Label Studio URL and token to export it with "
                                    "(start the backend with LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY set)")
        return LabelStudio(url.rstrip("/"), token)

    @staticmethod
    def _take_lock(path: Path, project: int) -> dict[str, Any] | None:
        """Create the project's lock (``O_EXCL``); a lock whose process is gone is taken over and returned."""
        stale: dict[str, Any] | None = None
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(path.read_text())
                    holder = int(held["pid"])
                except (OSError, ValueError, KeyError, TypeError):
                    held, holder = {"unreadable": str(path)}, -1
                if holder > 0 and pid_alive(holder):
                    raise RequestError(409, f"project {project} is being trained by process {holder} (lock "
                                            f"{path}, since {held.get('started')}); this trigger is refused") from None
                log.warning("project %s: the lock %s of process %s was left by a job that did not finish (a "
                            "crash?): taken over", project, path, holder)
                path.unlink(missing_ok=True)
                stale = held
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "started": datetime.now(UTC).isoformat()}, fh)
            return stale
        raise RequestError(409, f"project {project}: the lock {path} could not be taken")

    def _record(self, job: dict[str, Any]) -> None:
        write_json_atomic(Path(job["folder"]) / f"{job['id']}.json", job)

    def _step(self, job: dict[str, Any], step: str) -> None:
        job["state"], job["step"] = "running", step
        self._record(job)
        log.info("%s project %s: %s", job["id"], job["project"], step)

    # -------------------------------------------------------------------------------------------------- job
    def _run(self, job: dict[str, Any], link: ProjectLink, client: LabelStudio) -> None:
        folder = Path(job["folder"])
        try:
            self._step(job, "export")
            project = client.get(f"/api/projects/{link.project_id}")
            job["snapshot"] = str(export_snapshot(client, project))
            self._step(job, "build")
            from ingest.version import build, load_data_config

            built = build(load_data_config(self.data_config), progress=False)
            job["dataset_version"], job["dataset_path"] = built.version, str(built.path)
            self._step(job, "train")
            served = self.backend.served
            new_run = self._train(job, served, built.path, folder / f"{job['id']}.log")
            job["run"] = str(new_run)
            self._step(job, "compare")
            new = Served(new_run, prediction_version(new_run), served.taxonomy,
                         load_inference(new_run, self.backend.device))
            part = new.inference.plugin.evaluation()
            before = self._score(served, built.path)
            after = self._score(new, built.path)
            job["score"] = {"figure": part.headline[0], "split": self.split, "served": before, "new": after}
            if after is not None and (before is None or after >= before):
                self.backend.switch(new)
                was = "none" if before is None else f"{before:.4f}"
                job["result"] = f"switched to {new.version}: {part.headline[0]} on {self.split} {after:.4f} >= {was}"
            else:
                job["result"] = (f"kept {served.version}: the new run's {part.headline[0]} on {self.split} "
                                 f"({after}) is below the served one's ({before})")
            job["state"] = "done"
        except (SegLoopError, RequestError) as exc:
            job["state"], job["error"] = "failed", getattr(exc, "message", str(exc))
        except Exception as exc:  # a job's failure is recorded, the backend keeps serving
            log.exception("%s failed", job["id"])
            job["state"], job["error"] = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job["finished"] = datetime.now(UTC).isoformat()
            job["served_after"] = self.backend.served.version
            self._record(job)
            with contextlib.suppress(OSError):
                (folder / "lock").unlink()
            log.info("%s project %s %s: %s", job["id"], job["project"], job["state"],
                     job.get("result") or job.get("error"))
            self._next_round(link)

    def _next_round(self, link: ProjectLink) -> None:
        with self._lock:
            again = link.project_id in self._pending and link.new_annotations > 0
            self._pending.discard(link.project_id)
        if again:
            with contextlib.suppress(RequestError, SegLoopError):
                self.trigger(link, f"{link.new_annotations} annotations arrived during the last job", explicit=False)

    def _train(self, job: dict[str, Any], served: Served, version: Path, log_path: Path) -> Path:
        """``train.run`` in its own process (a crash or a kill there leaves the backend serving), from the served
        run's config, on the new version, initialised from the served run."""
        run_dir = served.run_dir
        name = f"{run_dir.name}-{job['id'].removeprefix('job-')}"
        cmd = [sys.executable, "-m", "train.run", "--config", str(run_dir / "config.yaml"),
               f"data.version={version}", f"model.init_from={run_dir}", "model.weights=null",
               f"train.epochs={self.epochs}", f"output.runs_dir={run_dir.parent}", f"output.name={name}",
               "output.exist_ok=false", "train.early_stop.patience=0", *self.overrides]
        job["command"] = " ".join(cmd[1:])
        with open(log_path, "ab") as fh:
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
            job["train_seconds"] = round(time.monotonic() - t0, 1)
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise SegLoopError(f"fine-tuning ended with status {proc.returncode}: {' / '.join(tail)}",
                               path=log_path, fix="read the job's log")
        new_run = run_dir.parent / name
        if not (new_run / "checkpoints" / "best.pt").is_file():
            raise SegLoopError("fine-tuning wrote no checkpoints/best.pt", path=new_run, fix="read the job's log")
        return new_run

    def _score(self, served: Served, version: Path) -> float | None:
        """The served-or-new model's headline figure on the new version's split, written to a private folder (the
        runs' own ``eval/`` stays as it is)."""
        from ingest.version import DatasetVersion

        inf = served.inference
        part = inf.plugin.evaluation()
        ds = DatasetVersion(version)
        if not ds.images(self.split):
            raise SegLoopError(f"split '{self.split}' of {ds.version} is empty: nothing to compare the models on",
                               path=version, fix="give the data config a validation split (split ratios)")
        with tempfile.TemporaryDirectory(prefix="segloop-learn-") as tmp:
            scores = part.evaluate_split(inf, ds, self.split, Path(tmp), served.run_dir.name, tta=False,
                                         uncertainty=False, progress=False)
        return headline(part, scores)

    def status(self) -> dict[str, Any]:
        return {str(pid): dict(job) for pid, job in self.jobs.items()}
