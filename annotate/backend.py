"""Any SegLoop run served as a Label Studio ML backend: ``python -m annotate backend RUN``.

Label Studio (1.23) talks to a connected model over HTTP: ``GET /health`` (it waits 1 s), ``POST /setup`` (3 s: the
project's labeling config, the host it is reached at, an access token; answers the model version), ``POST
/predict`` (100 s: tasks; answers ``{"results": [...]}``, one prediction per task) and ``POST /webhook`` (annotation
events and ``START_TRAINING``, sent by the webhook Label Studio creates for the backend). ``Backend`` holds what
those calls need and ``create_app`` puts it behind Starlette; ``annotate.learn`` retrains from submitted labels.

What is served equals what ``annotate predict`` pushes for the same run and image: the image goes through the task
plugin's evaluation part (``predict_images``, as ``evaluate predict`` writes a prediction set) into a private
folder, and the task's Label Studio part turns that folder's entry into regions, as the bulk push does. The model
is loaded once, in the background from the start, so ``/setup`` and ``/health`` answer at once; predictions run one
at a time on it and are cached by image hash, model version and labeling tools.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from annotate.client import LabelStudio, _no_proxy_opener
from annotate.labeling_config import TOOLS
from annotate.project import check_run_classes, prediction_version, run_taxonomy
from core.errors import SegLoopError
from core.fsio import image_size, sha256_file
from core.runs import INDEX, Run, find_checkpoint, read_index
from ingest.taxonomy import Taxonomy, load_taxonomy

log = logging.getLogger("segloop.backend")

MAX_BODY = 32 << 20  # a request carries tasks and a labeling config, never images
MAX_TASKS = 500  # tasks in one predict request (Label Studio sends one, or a page of the data manager)
MAX_IMAGE = 256 << 20
LOAD_WAIT = 80.0  # seconds a predict call waits for the model to load: under Label Studio's 100 s
FETCH_TIMEOUT = 30.0
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class RequestError(Exception):
    """A request the backend cannot serve: answered with ``status`` and ``{"error": message}``, never a traceback."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Served:
    """The model behind the answers: a run, its version string (what predictions carry) and, once loaded, its
    inference state. Replaced as a whole when a retrained run takes over, so a request sees one consistent model."""

    run_dir: Path
    version: str
    taxonomy: Taxonomy
    inference: Any = None


@dataclass
class ProjectLink:
    """What ``/setup`` told about one Label Studio project."""

    project_id: int
    hostname: str | None
    access_token: str | None = field(repr=False)
    label_config: str | None = None
    new_annotations: int = 0
    total_annotations: int = 0


def load_served(run_dir: Path) -> Served:
    """A run's identity for serving, read at once (no model loaded): the terminal hears of a missing run, a run
    without a checkpoint or a run without a taxonomy before any server starts."""
    find_checkpoint(run_dir, "best")
    taxonomy = load_taxonomy(run_taxonomy(run_dir))
    return Served(run_dir, prediction_version(run_dir), taxonomy)


def project_id(value: Any) -> int:
    """Label Studio names a project ``"<id>.<created timestamp>"`` in backend calls and by its serialised object
    (``{"id": ...}``) in webhooks."""
    if isinstance(value, dict):
        value = value.get("id")
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    head = text.split(".", 1)[0]
    if not head.isdigit():
        raise RequestError(422, f"'project' must be a Label Studio project id (e.g. \"3.1712345678\"), got {value!r}")
    return int(head)


def served_tools(xml: Any, taxonomy: Taxonomy, run_name: str, where: str) -> tuple[list[str], str]:
    """The labeling tools of a project config that SegLoop's regions can fill, and the task data key of its image.

    SegLoop's regions name ``from_name`` ``polygon`` / ``brush`` and ``to_name`` ``image`` (the config ``annotate
    project create`` writes); the config's labels must be the run's classes. Anything else is a 422 that says why."""
    if not isinstance(xml, str) or not xml.strip():
        raise RequestError(422, f"{where} carries no labeling config")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise RequestError(422, f"the labeling config of {where} is not XML ({exc})") from None
    image = next((el for el in root.iter("Image") if el.get("name") == "image"), None)
    if image is None:
        raise RequestError(422, f"the labeling config of {where} has no <Image name=\"image\" value=\"$...\"/>: "
                                "SegLoop draws its regions on an image named 'image' (python -m annotate project "
                                "create writes such a config)")
    value = image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise RequestError(422, f"the Image tag of {where} takes its value from {value!r}, not from a task field "
                                "($image)")
    tools = [tool for tool, tag in TOOLS.items()
             if any(el.get("name") == tool and el.get("toName") == "image" for el in root.iter(tag))]
    if not tools:
        raise RequestError(422, f"the labeling config of {where} has neither <PolygonLabels name=\"polygon\" "
                                "toName=\"image\"> nor <BrushLabels name=\"brush\" toName=\"image\">: SegLoop's "
                                "regions fill those two tools")
    try:
        check_run_classes({"label_config": xml, "title": where.removeprefix("project ")}, taxonomy, Path(run_name))
    except SegLoopError as exc:
        raise RequestError(422, exc.message) from None
    return tools, value[1:]


# ------------------------------------------------------------------------------------------------ image fetch
def _host_key(url: str) -> tuple[str, int | None]:
    """(host, port) with every loopback name as one host: Label Studio calls itself ``http://localhost:PORT`` in
    ``/setup`` while SegLoop records ``http://127.0.0.1:PORT``."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return ("loopback" if loopback else host), port


class ImageFetcher:
    """Fetches task images as Label Studio serves them (local-files storage and uploads under its own host, or any
    http(s) URL). The token goes to the Label Studio host only, as ``Token`` (legacy) or ``Bearer`` (a personal
    access token, exchanged for an access token first), through ``annotate.client.LabelStudio``."""

    def __init__(self, base_url: str | None, token: str | None) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.token = token
        self._clients: dict[str, LabelStudio] = {}
        self._lock = threading.Lock()

    def url_of(self, ref: str, link: ProjectLink | None) -> str:
        if ref.startswith(("http://", "https://")):
            return ref
        if ref.startswith("/"):
            base = self.base_url or (link.hostname.rstrip("/") if link and link.hostname else None)
            if base is None:
                raise RequestError(422, f"image {ref!r} is a Label Studio path but no Label Studio host is known: "
                                        "connect the project (its /setup names the host) or start the backend "
                                        "with --label-studio URL")
            return base + ref
        raise RequestError(422, f"image {ref!r} is neither a Label Studio path (/data/...) nor an http(s) URL; "
                                "cloud storage URIs (s3://, gs://) are resolved by Label Studio's storage, "
                                "connect one that serves presigned URLs")

    def _auth(self, url: str, link: ProjectLink | None) -> str | None:
        """The Authorization header for ``url``: only where ``url`` is the Label Studio host."""
        hosts = {_host_key(u) for u in (self.base_url, link.hostname if link else None) if u}
        if _host_key(url) not in hosts:
            return None
        token = self.token or (link.access_token if link else None)
        if not token:
            return None
        parts = urllib.parse.urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            client = self._clients.get(base + token)
            if client is None:
                client = self._clients[base + token] = LabelStudio(base, token)
        return client._auth_header()

    def fetch(self, task_id: Any, ref: str, link: ProjectLink | None, folder: Path) -> Path:
        """The image of task ``task_id`` as a file in ``folder``; a failure names the task, the URL and the status."""
        url = self.url_of(ref, link)
        req = urllib.request.Request(url, headers={"User-Agent": "segloop-backend"})
        try:
            auth = self._auth(url, link)
        except SegLoopError as exc:
            raise RequestError(502, f"task {task_id}: the token for {url} was refused: {exc.message}") from None
        if auth:
            req.add_header("Authorization", auth)
        try:
            with _no_proxy_opener().open(req, timeout=FETCH_TIMEOUT) as resp:
                size = resp.headers.get("Content-Length")
                if size and size.isdigit() and int(size) > MAX_IMAGE:
                    raise RequestError(413, f"task {task_id}: image {url} has {int(size)} bytes, over "
                                            f"{MAX_IMAGE >> 20} MiB")
                data = resp.read(MAX_IMAGE + 1)
        except urllib.error.HTTPError as exc:
            hint = (" (the token was refused: give the backend a token with LABEL_STUDIO_API_KEY; a legacy token "
                    "is sent as 'Token', a personal access token as 'Bearer')" if exc.code in (401, 403) and auth
                    else " (no token is sent to a host other than Label Studio's)" if exc.code in (401, 403)
                    else "")
            raise RequestError(502, f"task {task_id}: GET {url} answered {exc.code} {exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RequestError(502, f"task {task_id}: GET {url} failed: {reason}") from None
        if len(data) > MAX_IMAGE:
            raise RequestError(413, f"task {task_id}: image {url} is over {MAX_IMAGE >> 20} MiB")
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "image"
        suffix = Path(name).suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", Path(name).suffix.lower()) else ""
        path = folder / f"image{suffix}"
        path.write_bytes(data)
        try:
            image_size(path)
        except SegLoopError as exc:
            raise RequestError(422, f"task {task_id}: {url} is not an image SegLoop can read ({exc.message})") from None
        return path


# ---------------------------------------------------------------------------------------------------- backend
class Backend:
    """The state of one backend process: the served model, the projects that called ``/setup``, the cache."""

    def __init__(self, run_dir: Path, device: str = "auto", label_studio: str | None = None,
                 token: str | None = None, cache_size: int = 2048,
                 on_annotation: Callable[[ProjectLink, str], None] | None = None,
                 on_train: Callable[[ProjectLink], dict] | None = None) -> None:
        from train.infer import pick_device

        pick_device(device)  # cuda on a machine without one is said at the terminal, not in the first predict
        self.device = device
        self.served = load_served(run_dir)
        self.fetcher = ImageFetcher(label_studio, token)
        self.projects: dict[int, ProjectLink] = {}
        self.cache: OrderedDict[tuple[str, str, tuple[str, ...]], tuple[list[dict], float]] = OrderedDict()
        self.cache_size = cache_size
        self.counts = {"predicted": 0, "cached": 0, "failed": 0}
        self.on_annotation = on_annotation
        self.on_train = on_train
        self.training_status: Callable[[], dict] | None = None  # the learner's jobs, shown by /status
        self._ready = threading.Event()
        self._load_error: str | None = None
        self._loader: threading.Thread | None = None
        self._model_lock = threading.Lock()  # one prediction at a time on the model: memory stays flat
        self._state_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ the model
    def start_loading(self) -> None:
        """Load the model in a background thread (once): ``/setup`` and ``/health`` never wait for it."""
        with self._state_lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load, name="segloop-load", daemon=True)
                self._loader.start()

    def _load(self) -> None:
        try:
            self.served = replace(self.served, inference=load_inference(self.served.run_dir, self.device))
            log.info("model %s loaded on %s", self.served.version, self.served.inference.device)
        except SegLoopError as exc:
            self._load_error = str(exc)
            log.error("cannot load %s: %s", self.served.run_dir, exc)
        except Exception as exc:  # reported by every predict call, not lost in a thread
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.exception("cannot load %s", self.served.run_dir)
        finally:
            self._ready.set()

    def model(self, wait: float = LOAD_WAIT) -> Served:
        self.start_loading()
        if not self._ready.wait(wait):
            raise RequestError(503, f"the model of run {self.served.run_dir.name} is still loading; ask again")
        if self._load_error:
            raise RequestError(503, f"the model cannot be loaded: {self._load_error}")
        served = self.served
        if not Run(served.run_dir).info_path.is_file():
            raise RequestError(410, f"run {served.run_dir} no longer exists (its run.json is gone): restart the "
                                    "backend with an existing run")
        return served

    def switch(self, served: Served) -> None:
        """Serve another (loaded) model from now on: a retrained run that was not worse on validation."""
        if served.inference is None:
            raise ValueError("switch() needs a loaded model")
        self.served = served
        log.info("now serving %s (%s)", served.version, served.run_dir)

    # ------------------------------------------------------------------------------------------ protocol
    def health(self) -> dict[str, Any]:
        """Never loads anything: Label Studio waits 1 s."""
        return {"status": "UP", "model_class": "SegLoop", "model_version": self.served.version,
                "run": self.served.run_dir.name, "loaded": self._ready.is_set() and not self._load_error}

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        pid = project_id(body.get("project"))
        served = self.served
        served_tools(body.get("schema"), served.taxonomy, served.run_dir.name, f"project {pid}")
        hostname = body.get("hostname")
        token = body.get("access_token")
        with self._state_lock:
            link = self.projects.get(pid) or ProjectLink(pid, None, None)
            link.hostname = hostname if isinstance(hostname, str) and hostname else link.hostname
            link.access_token = token if isinstance(token, str) and token else link.access_token
            link.label_config = body["schema"]
            self.projects[pid] = link
        self.start_loading()
        return {"model_version": served.version}

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError(422, "'tasks' must be a non-empty list of Label Studio tasks")
        if len(tasks) > MAX_TASKS:
            raise RequestError(413, f"{len(tasks)} tasks in one request, at most {MAX_TASKS}")
        pid = project_id(body.get("project"))
        link = self.projects.get(pid)
        xml = body.get("label_config") or (link.label_config if link else None)
        served = self.model()
        tools, key = served_tools(xml, served.taxonomy, served.run_dir.name, f"project {pid}")
        results = [self._predict_task(served, task, tools, key, link) for task in tasks]
        return {"results": results, "model_version": served.version}

    def _predict_task(self, served: Served, task: Any, tools: list[str], key: str,
                      link: ProjectLink | None) -> dict[str, Any]:
        """One task's prediction, or (when its image cannot be had) an entry without ``result`` that says why:
        Label Studio skips it and keeps the others, and no empty prediction blocks a later one."""
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            data = task.get("data") if isinstance(task, dict) else None
            ref = data.get(key) if isinstance(data, dict) else None
            if not isinstance(ref, str) or not ref:
                raise RequestError(422, f"task {task_id} has no '{key}' in its data")
            result, score = self._regions(served, task_id, ref, data.get("sha256"), tools, link)
            return {"result": result, "score": score, "model_version": served.version}
        except RequestError as exc:
            self.counts["failed"] += 1
            log.warning("no prediction: %s", exc.message)
            return {"error": exc.message, "task": task_id, "model_version": served.version}

    def _regions(self, served: Served, task_id: Any, ref: str, sha: Any, tools: list[str],
                 link: ProjectLink | None) -> tuple[list[dict], float]:
        # a task imported by SegLoop records its image's hash: a cached answer needs no fetch (as the bulk push
        # matches prediction files by that hash)
        if isinstance(sha, str) and SHA256.match(sha) and (hit := self._cached(sha, served, tools)):
            return hit
        with tempfile.TemporaryDirectory(prefix="segloop-backend-") as tmp:
            image = self.fetcher.fetch(task_id, ref, link, Path(tmp))
            sha = sha256_file(image)
            if hit := self._cached(sha, served, tools):
                return hit
            folder = Path(tmp) / "prediction"
            folder.mkdir()
            plugin = served.inference.plugin
            with self._model_lock:
                plugin.evaluation().predict_images(served.inference, [image], folder, served.run_dir.name,
                                                   "backend", progress=False)
            entry = read_index(folder / INDEX)["images"][sha]
            out = plugin.labelstudio().regions(folder, entry, served.taxonomy, tools)
        self.counts["predicted"] += 1
        with self._state_lock:
            self.cache[(sha, served.version, tuple(tools))] = out
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return out

    def _cached(self, sha: str, served: Served, tools: list[str]) -> tuple[list[dict], float] | None:
        with self._state_lock:
            hit = self.cache.get((sha, served.version, tuple(tools)))
            if hit is not None:
                self.cache.move_to_end((sha, served.version, tuple(tools)))
                self.counts["cached"] += 1
        return hit

    def webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        if not isinstance(action, str):
            raise RequestError(422, "a webhook needs an 'action' (e.g. ANNOTATION_CREATED)")
        if action not in ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
                          "START_TRAINING"):
            return {"status": "ignored", "action": action}
        pid = project_id(body.get("project"))
        link = self.projects.get(pid)
        if link is None:
            raise RequestError(404, f"project {pid} is not connected to this backend (it never called /setup): "
                                    "connect it (python -m annotate backend connect) or open its Model settings")
        if action == "START_TRAINING":
            if self.on_train is None:
                raise RequestError(409, "this backend does not train (start it with --learn DATA_CONFIG)")
            return self.on_train(link)
        with self._state_lock:
            if action in ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED"):
                link.new_annotations += 1
                link.total_annotations += 1
            elif action == "ANNOTATIONS_DELETED":
                link.total_annotations = max(0, link.total_annotations - 1)
        if self.on_annotation is not None:
            self.on_annotation(link, action)
        return {"status": "ok", "action": action, "project": pid, "new_annotations": link.new_annotations}

    def status(self) -> dict[str, Any]:
        return {**self.health(), "load_error": self._load_error, "counts": dict(self.counts),
                "cached": len(self.cache),
                "projects": {str(p.project_id): {"hostname": p.hostname, "new_annotations": p.new_annotations}
                             for p in self.projects.values()},
                "training": self.training_status() if self.training_status else None}


def load_inference(run_dir: Path, device: str) -> Any:
    """The run's best checkpoint ready to predict, checked to be the run's own (as ``evaluate predict`` does)."""
    from evaluate.inference import load_for_inference
    from train.checkpoint import check_run_checkpoint

    inf = load_for_inference(find_checkpoint(run_dir, "best"), device)
    check_run_checkpoint(run_dir, inf.ckpt, inf.checkpoint)
    return inf


# -------------------------------------------------------------------------------------------------- the app
def basic_auth_check(user: str | None, password: str | None) -> Callable[[str | None], bool]:
    """Whether an Authorization header carries the configured basic-auth pair (always true when none is set)."""
    if not user or not password:
        return lambda _header: True
    want = hashlib.sha256(f"{user}:{password}".encode()).digest()

    def check(header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            got = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(hashlib.sha256(got).digest(), want)

    return check


def create_app(backend: Backend, auth: Callable[[str | None], bool] | None = None) -> Any:
    """The Starlette application Label Studio talks to. Every answer is JSON; a bad request is a 4xx with
    ``{"error": ...}``, an unexpected failure a 500 that names it (the traceback goes to the log), and the server
    keeps serving. Slow work (loading, predicting) runs in worker threads, so ``/health`` answers while it runs."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    check = auth or basic_auth_check(os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS"))

    async def read_json(request: Request) -> dict[str, Any]:
        body = bytearray()
        over = 0
        async for chunk in request.stream():
            # an oversized body is read to its end (up to a bound), not kept: a client still sending when the
            # answer comes would see a reset connection instead of the 413 that says why
            if over or len(body) + len(chunk) > MAX_BODY:
                over += len(chunk)
                body.clear()
                if over > 8 * MAX_BODY:
                    break
                continue
            body += chunk
        if over:
            raise RequestError(413, f"request body over {MAX_BODY >> 20} MiB")
        try:
            data = json.loads(bytes(body) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the request body is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return data

    def endpoint(fn: Callable[[dict[str, Any]], dict[str, Any]] | None, fixed: Callable[[], dict] | None = None):
        async def handle(request: Request) -> JSONResponse:
            t0 = time.perf_counter()
            if not check(request.headers.get("authorization")):
                return JSONResponse({"error": "basic authentication required"}, status_code=401,
                                    headers={"WWW-Authenticate": 'Basic realm="segloop"'})
            try:
                if fixed is not None:
                    out = fixed()
                else:
                    out = await run_in_threadpool(fn, await read_json(request))
                status = 200
            except RequestError as exc:
                out, status = {"error": exc.message}, exc.status
                log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc.message)
            except Exception as exc:  # one bad call must not take the backend down
                log.exception("%s %s failed", request.method, request.url.path)
                out, status = {"error": f"internal error: {type(exc).__name__}: {exc} (see the backend log)"}, 500
            log.debug("%s %s %d %.1f ms", request.method, request.url.path, status, 1e3 * (time.perf_counter() - t0))
            return JSONResponse(out, status_code=status)
        return handle

    routes = [
        Route("/", endpoint(None, backend.health), methods=["GET"]),
        Route("/health", endpoint(None, backend.health), methods=["GET"]),
        Route("/status", endpoint(None, backend.status), methods=["GET"]),
        Route("/versions", endpoint(None, lambda: {"versions": [backend.served.version]}), methods=["GET"]),
        Route("/setup", endpoint(backend.setup), methods=["POST"]),
        Route("/predict", endpoint(backend.predict), methods=["POST"]),
        Route("/webhook", endpoint(backend.webhook), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def serve(backend: Backend, host: str = "127.0.0.1", port: int = 9090) -> None:
    """Serve ``backend`` until interrupted; the model starts loading at once, in the background."""
    import uvicorn

    from core.services import port_free

    if host in ("127.0.0.1", "localhost") and not port_free(port):
        raise SegLoopError(f"port {port} on 127.0.0.1 is busy", fix="stop what uses it or pass --port")
    backend.start_loading()
    config = uvicorn.Config(create_app(backend), host=host, port=port, log_level="info", access_log=False,
                            limit_concurrency=128, timeout_keep_alive=30, log_config=None)
    uvicorn.Server(config).run()


def connect(client: LabelStudio, project: dict[str, Any], url: str, title: str) -> tuple[dict[str, Any], bool]:
    """Register the backend at ``url`` with a project (Label Studio checks ``/health`` and calls ``/setup`` while
    it does), unless one with that URL is registered already; and have the project ask it for a prediction when a
    task without one is opened. ``BASIC_AUTH_USER`` / ``BASIC_AUTH_PASS``, when set, are registered with it, and
    given to the webhook Label Studio creates for the backend (which sends no credentials otherwise)."""
    url = url.rstrip("/")
    for existing in client.get("/api/ml", project=project["id"]) or []:
        if str(existing.get("url", "")).rstrip("/") == url:
            return existing, False
    body: dict[str, Any] = {"url": url, "project": project["id"], "title": title, "is_interactive": False,
                            "auth_method": "NONE"}
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    if user and password:
        body.update(auth_method="BASIC_AUTH", basic_auth_user=user, basic_auth_pass=password)
    created = client.post("/api/ml", body, resend=False)
    if user and password:  # Label Studio's webhook to the backend carries no credentials of its own
        hook = url + "/webhook"
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        for w in client.get("/api/webhooks", project=project["id"]) or []:
            if str(w.get("url", "")).rstrip("/") == hook:
                client.patch(f"/api/webhooks/{w['id']}", {"headers": {**(w.get("headers") or {}),
                                                                       "Authorization": header}})
    client.patch(f"/api/projects/{project['id']}", {"evaluate_predictions_automatically": True,
                                                      "show_collab_predictions": True})
    return created, True
