"""The Label Studio client's failure handling: a server answering 5xx is retried with backoff, then reported."""

import http.server
import threading

import pytest

from annotate.client import LabelStudio
from core.errors import SegLoopError


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
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = LabelStudio(f"http://127.0.0.1:{srv.server_port}", "x" * 40, retries=3, backoff=0.01)
        with pytest.raises(SegLoopError, match="answered 503") as e:
            client.projects()
        assert _Failing.hits == 4  # the first try and three retries
        assert "server log" in str(e.value)
    finally:
        srv.shutdown()


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

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hangup)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = LabelStudio(f"http://127.0.0.1:{srv.server_port}", "x" * 40, retries=2, backoff=0.01)
        with pytest.raises(ConnectionLost, match="broke during POST /api/projects/1/import"):
            client.post("/api/projects/1/import", [{"data": {}}], resend=False)
        assert _Hangup.hits == 1  # sent once: the caller asks the server what landed before sending again
        with pytest.raises(SegLoopError, match="unreachable after 3 tries"):
            client.get("/api/projects")
        assert _Hangup.hits == 4  # a read is retried: the first try and two retries
    finally:
        srv.shutdown()
