"""A small Label Studio REST client: token auth (legacy token or personal access token), retries with backoff.

Only what SegLoop needs, over the standard library, so the Label Studio server (its own virtual environment) and
its SDK's dependency pins stay out of SegLoop's environment. Every failure becomes a ``SegLoopError`` that says
what to check: the server unreachable, the token rejected (401), a server error after retries (5xx).

A request that creates something (``resend=False``) is never sent twice blindly: when the connection breaks after
it left, times out, or a gateway answers 502/504 (the server behind it may have acted), ``ConnectionLost`` is
raised and the caller asks the server what landed before sending the rest (``annotate.project`` does this for
imports and pre-annotation pushes). A streamed download (``download_to``) is checked against the
``Content-Length`` the server announced and restarted from the beginning of the file on a retry, so an interrupted
export never passes for a complete one.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.errors import SegLoopError

RETRY_STATUS = {500, 502, 503, 504}
GATEWAY_STATUS = {502, 504}  # a proxy gave up waiting: the server behind it may still have acted
LIGHT_TASK_FIELDS = "id,data,total_annotations,total_predictions"  # a task listing without regions


class ConnectionLost(SegLoopError):
    """The connection broke during a request that must not be resent blindly (the server may have acted on it).

    ``timed_out``: no answer came within the timeout, so the server may still be working on the request."""

    def __init__(self, message: str, timed_out: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.timed_out = timed_out


class _ShortBody(ConnectionError):
    """The server closed the connection before sending the whole body it announced."""


@dataclass
class LabelStudio:
    url: str
    token: str = field(repr=False)
    retries: int = 4
    backoff: float = 0.5
    timeout: float = 60.0
    bulk_timeout: float = 900.0  # a bulk import or push: the server stores thousands of rows before answering
    settle: float = 3.0  # seconds between two questions "what landed?" after a bulk request timed out
    _access: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None) -> LabelStudio:
        """``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``, else the local server started by ``annotate server``."""
        from annotate.server import local_server

        url = url or os.environ.get("LABEL_STUDIO_URL")
        token = token or os.environ.get("LABEL_STUDIO_API_KEY")
        if not url or not token:
            local = local_server()
            if local is None:
                raise SegLoopError("no Label Studio to talk to",
                                   fix="start one (python -m annotate server start) or set LABEL_STUDIO_URL and "
                                       "LABEL_STUDIO_API_KEY")
            url, token = url or local[0], token or local[1]
        return cls(url.rstrip("/"), token)

    # ------------------------------------------------------------------------------------------------ transport
    def _auth_header(self) -> str:
        # personal access tokens are JWT refresh tokens (three dot-separated parts); legacy tokens are hex
        if self.token.count(".") == 2:
            if self._access is None:
                resp = self._raw("POST", "/api/token/refresh", {"refresh": self.token}, auth=False)
                self._access = resp["access"]
            return f"Bearer {self._access}"
        return f"Token {self.token}"

    def _raw(self, method: str, path: str, body: Any = None, auth: bool = True,
             params: dict[str, Any] | None = None, raw_body: tuple[bytes, str] | None = None,
             binary: bool = False, resend: bool = True, sink: Any = None, timeout: float | None = None) -> Any:
        url = self.url + path + (("?" + urllib.parse.urlencode(params, doseq=True)) if params else "")
        data, ctype = (raw_body if raw_body is not None else
                       (json.dumps(body).encode() if body is not None else None, "application/json"))
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if sink is not None:  # a retry starts the file over: never a second copy after a partial first
                sink.seek(0)
                sink.truncate()
            req = urllib.request.Request(url, data=data, method=method)
            req.add_header("Content-Type", ctype)
            if auth:
                req.add_header("Authorization", self._auth_header())
            try:
                with _no_proxy_opener().open(req, timeout=timeout or self.timeout) as resp:
                    if sink is not None:  # stream a large body (an export) without holding it
                        _stream(resp, sink)
                        return None
                    raw = resp.read()
                    if binary:
                        return raw
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                if exc.code == 403 and "reserved network address" in detail:
                    raise SegLoopError(f"Label Studio at {self.url} refuses {method} {path}: {detail}",
                                       fix="that Label Studio blocks loopback and private addresses: start it with "
                                           "ML_BLOCK_LOCAL_IP=false and SSRF_PROTECTION_ENABLED=false (python -m "
                                           "annotate server start does), or give it an address it may reach") from None
                if exc.code in (401, 403):
                    raise SegLoopError(f"Label Studio refused the API token ({exc.code}) at {self.url}",
                                       fix="check LABEL_STUDIO_API_KEY (legacy token or personal access token) "
                                           "or the token file of `annotate server`") from None
                if not resend and exc.code in GATEWAY_STATUS:
                    raise ConnectionLost(f"a gateway answered {exc.code} to {method} {path} at {self.url}",
                                         timed_out=True, fix="check the proxy in front of Label Studio; the "
                                                             "request may or may not have been applied") from None
                if exc.code in RETRY_STATUS and attempt < self.retries:
                    last = exc
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise SegLoopError(f"Label Studio answered {exc.code} to {method} {path}: {detail}",
                                   fix="see the server log (python -m annotate server status)" if exc.code >= 500
                                   else "check the request's project / task ids") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
                last = exc
                if not resend and not _refused(exc):
                    raise ConnectionLost(f"connection to Label Studio at {self.url} broke during {method} {path} "
                                         f"({exc})", timed_out=_timed_out(exc),
                                         fix="check the network; the request may or may not have been "
                                             "applied") from None
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    continue
        if isinstance(last, _ShortBody):
            raise SegLoopError(f"the download of {path} from Label Studio at {self.url} ended early after "
                               f"{self.retries + 1} tries ({last})",
                               fix="check the network and the server's disk, then export again")
        raise SegLoopError(f"Label Studio at {self.url} is unreachable after {self.retries + 1} tries ({last})",
                           fix="start it (python -m annotate server start) or check LABEL_STUDIO_URL")

    def get(self, path: str, **params: Any) -> Any:
        return self._raw("GET", path, params=params or None)

    def post(self, path: str, body: Any, resend: bool = True) -> Any:
        """``resend=False``: a broken connection raises ``ConnectionLost`` instead of sending the body again."""
        return self._raw("POST", path, body, resend=resend)

    def post_json(self, path: str, data: bytes, resend: bool = True, timeout: float | None = None) -> Any:
        """POST a body already serialised as JSON (batches built from pieces serialised once); ``timeout`` for
        bulk requests (``bulk_timeout``), which the server answers only once every item is stored."""
        return self._raw("POST", path, raw_body=(data, "application/json"), resend=resend, timeout=timeout)

    def patch(self, path: str, body: Any) -> Any:
        return self._raw("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self._raw("DELETE", path)

    def download(self, path: str) -> bytes:
        """The bytes of a file the server holds (an uploaded image: ``/data/upload/<project id>/<file>``), fetched
        with the same authentication as the API."""
        return self._raw("GET", path, binary=True)

    def download_to(self, path: str, fh: Any) -> None:
        """Stream a response body (a project export) into the open, seekable binary file ``fh``, which ends up
        holding exactly the body: a retry rewrites it from the start, a body shorter than announced is an error."""
        self._raw("GET", path, sink=fh)

    def upload(self, path: str, filename: str, content: bytes, resend: bool = True, **params: Any) -> Any:
        """POST one file as multipart/form-data (Label Studio's file import)."""
        boundary = "segloop" + os.urandom(12).hex()
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        body = head + content + f"\r\n--{boundary}--\r\n".encode()
        return self._raw("POST", path, params=params or None,
                         raw_body=(body, f"multipart/form-data; boundary={boundary}"), resend=resend)

    # ---------------------------------------------------------------------------------------------- resources
    def projects(self) -> list[dict[str, Any]]:
        out, page = [], 1
        while True:
            resp = self.get("/api/projects", page=page, page_size=100)
            items = resp["results"] if isinstance(resp, dict) else resp
            out += items
            if not isinstance(resp, dict) or not resp.get("next"):
                return out
            page += 1

    def project_by_title(self, title: str) -> dict[str, Any] | None:
        hits = [p for p in self.projects() if p.get("title") == title]
        return hits[0] if hits else None

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task with its annotations and predictions (all in memory: small projects, or ``iter_tasks``)."""
        return list(self.iter_tasks(project_id, fields="all"))

    def iter_tasks(self, project_id: int, include: str | None = None, fields: str | None = None,
                   page_size: int = 500) -> Iterator[dict[str, Any]]:
        """The project's tasks page by page, so memory holds one page; ``include`` names the fields the server
        sends (``LIGHT_TASK_FIELDS``: no regions, which dominate a pre-annotated project's listing)."""
        page = 1
        while True:
            params: dict[str, Any] = {"project": project_id, "page": page, "page_size": page_size}
            if include:
                params["include"] = include
            if fields:
                params["fields"] = fields
            try:
                resp = self.get("/api/tasks", **params)
            except SegLoopError as exc:  # past the last page Label Studio answers 404
                if "404" in str(exc):
                    return
                raise
            items = resp.get("tasks", []) if isinstance(resp, dict) else resp
            yield from items
            if len(items) < page_size:
                return
            page += 1


def _stream(resp: Any, sink: Any) -> None:
    """Copy ``resp``'s body into ``sink``; fewer bytes than its ``Content-Length`` raises ``_ShortBody`` (a server
    that closes early otherwise just ends the copy, and the truncated file would pass for the whole)."""
    expected = resp.headers.get("Content-Length")
    got = 0
    while chunk := resp.read(1 << 20):
        sink.write(chunk)
        got += len(chunk)
    if expected is not None and expected.isdigit() and got != int(expected):
        raise _ShortBody(f"got {got} of {expected} bytes")


def _timed_out(exc: Exception) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, TimeoutError)


def _refused(exc: Exception) -> bool:
    """Whether the connection was refused, so the request never reached a server and may be sent again."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, ConnectionRefusedError)


_OPENER: urllib.request.OpenerDirector | None = None


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    """Talk to Label Studio directly: the HTTP(S)_PROXY that blocks its outbound traffic must not apply to us."""
    global _OPENER
    if _OPENER is None:
        _OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return _OPENER
