"""Small HTTP servers on 127.0.0.1 that stand in for outside services and record what they get."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordingServer:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    # Status codes to answer with, in order; when exhausted, 200.
    statuses: list[int] = field(default_factory=list)


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    lock = threading.Lock()
    state = RecordingServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                state.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


Handler = Callable[["Request"], "Reply"]


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    match: re.Match[str]

    def json(self) -> Any:
        return json.loads(self.body)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes or str
    headers: dict[str, str] = field(default_factory=dict)
    # A streamed body: each piece is sent as it is produced (chunked), then the reply ends.
    stream: Iterator[bytes] | None = None


class HttpDouble:
    """A small HTTP server on 127.0.0.1 that answers like an outside service and records what it
    was sent. Subclasses add routes with `self.route(method, pattern, handler)`; tests queue
    failures with `fail_next` (each answers one request, before any route)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.fail_next: list[Reply] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self.url = ""

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def received(self, method: str, pattern: str) -> list[Request]:
        compiled = re.compile(f"^{pattern}$")
        return [r for r in self.requests if r.method == method and compiled.match(r.path)]

    def _answer(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
        parts = urlsplit(raw_path)
        for route_method, pattern, handler in self._routes:
            match = pattern.match(parts.path)
            if route_method == method and match:
                request = Request(method, parts.path, parse_qs(parts.query), headers, body, match)
                with self._lock:
                    self.requests.append(request)
                    failure = self.fail_next.pop(0) if self.fail_next else None
                return failure or handler(request)
        return Reply(404, {"message": "Not Found"})

    @contextmanager
    def running(self) -> Iterator[HttpDouble]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = double._answer(self.command, self.path, headers, body)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.stream is not None:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for piece in reply.stream:
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                payload = _encode(reply.body)
                if "Content-Type" not in reply.headers:
                    kind = (
                        "text/plain" if isinstance(reply.body, str | bytes) else "application/json"
                    )
                    self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that drop a kept-alive connection at the end of a test are not a failure.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _encode(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()
