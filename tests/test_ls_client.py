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
