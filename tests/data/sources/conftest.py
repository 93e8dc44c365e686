"""A local HTTP server standing in for the photo APIs (loopback only)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

Route = Callable[[str, dict[str, list[str]], bytes, dict[str, str]], tuple[int, str, bytes]]


def jpeg_bytes(color: tuple[int, int, int] = (120, 90, 60), size: int = 64) -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    arr = (np.array(color) + rng.integers(-40, 40, (size, size, 3))).clip(0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


class FakeServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                u = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                server.requests.append({"path": u.path, "query": parse_qs(u.query), "headers": dict(self.headers)})
                route = server.routes.get(u.path)
                if route is None:
                    status, ctype, payload = 404, "text/plain", b"not found"
                else:
                    status, ctype, payload = route(u.path, parse_qs(u.query), body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def json_route(self, path: str, fn: Callable[[dict[str, list[str]], bytes], Any]) -> None:
        self.routes[path] = lambda p, q, b, h: (200, "application/json", json.dumps(fn(q, b)).encode())

    def image_route(self, path: str, data: bytes | None = None, ctype: str = "image/jpeg", status: int = 200) -> None:
        payload = data if data is not None else jpeg_bytes()
        self.routes[path] = lambda p, q, b, h: (status, ctype, payload)


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.httpd.shutdown()
