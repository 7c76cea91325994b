"""The Label Studio client's failure handling: a server answering 5xx is retried with backoff, then reported."""

import contextlib
import http.server
import threading

import pytest

from annotate.client import LabelStudio
from core.errors import SegLoopError


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]):
    """A local HTTP server answering with ``handler`` for the duration of the block (it tests the client's own
    handling of broken answers, which a healthy Label Studio never gives)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()


class _Failing(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"maintenance")

    def log_message(self, *args):
        pass


def test_5xx_is_retried_then_reported():
    with _serving(_Failing) as srv:
        client = LabelStudio(f"http://127.0.0.1:{srv.server_port}", "x" * 40, retries=3, backoff=0.01)
        with pytest.raises(SegLoopError, match="answered 503") as e:
            client.projects()
        assert _Failing.hits == 4  # the first try and three retries
        assert "server log" in str(e.value)


class _Hangup(http.server.BaseHTTPRequestHandler):
    """Reads the request, then closes the connection without answering (the server may have acted on it)."""

    hits = 0

    def handle_one_request(self):
        self.raw_requestline = self.rfile.readline(65537)
        type(self).hits += 1
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_broken_connection_is_resent_only_when_the_request_is_safe_to_repeat():
    from annotate.client import ConnectionLost

    with _serving(_Hangup) as srv:
        client = LabelStudio(f"http://127.0.0.1:{srv.server_port}", "x" * 40, retries=2, backoff=0.01)
        with pytest.raises(ConnectionLost, match="broke during POST /api/projects/1/import"):
            client.post("/api/projects/1/import", [{"data": {}}], resend=False)
        assert _Hangup.hits == 1  # sent once: the caller asks the server what landed before sending again
        with pytest.raises(SegLoopError, match="unreachable after 3 tries"):
            client.get("/api/projects")
        assert _Hangup.hits == 4  # a read is retried: the first try and two retries


class _Gateway(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the server that gave up waiting (502): the server behind it may have acted."""

    hits = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).hits += 1
        self.send_response(502)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_gateway_error_to_a_create_is_not_resent_blindly():
    from annotate.client import ConnectionLost

    with _serving(_Gateway) as srv:
        client = LabelStudio(f"http://127.0.0.1:{srv.server_port}", "x" * 40, retries=3, backoff=0.01)
        with pytest.raises(ConnectionLost, match="gateway answered 502") as e:
            client.post("/api/projects/1/import", [{"data": {}}], resend=False)
        assert e.value.timed_out  # the caller waits for the server's answer to settle before resending anything
        assert _Gateway.hits == 1
        with pytest.raises(SegLoopError, match="answered 502"):
            client.post("/api/projects/1/import", [{"data": {}}])  # a request safe to repeat is retried
        assert _Gateway.hits == 1 + 4


BODY = b'[{"id": 1, "data": {"image": "a.png"}}, {"id": 2, "data": {"image": "b.png"}}]'
TRUNCATE = {"first": 0}


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Announces the whole body's length, sends half of it and closes, the first ``TRUNCATE['first']`` times."""

    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if type(self).hits <= TRUNCATE["first"]:
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def test_an_interrupted_download_is_restarted_from_scratch_or_reported(tmp_path):
    with _serving(_Truncating) as srv:
        client = LabelStudio(f"http://127.0.0.1:{srv.server_port}", "x" * 40, retries=2, backoff=0.01)
        TRUNCATE["first"], _Truncating.hits = 2, 0  # two short answers, then the whole body
        out = tmp_path / "export.json"
        with open(out, "wb") as fh:
            client.download_to("/api/projects/1/exports/1/download", fh)
        assert _Truncating.hits == 3
        assert out.read_bytes() == BODY  # exactly one copy: the partial tries were discarded

        TRUNCATE["first"], _Truncating.hits = 100, 0  # never whole: an error, not a short file passed on
        with open(out, "wb") as fh, pytest.raises(SegLoopError, match=r"ended early .*got 39 of 78 bytes"):
            client.download_to("/api/projects/1/exports/1/download", fh)
        assert _Truncating.hits == 3
