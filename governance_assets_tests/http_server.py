"""A local HTTP server that answers POSTs from a script, for the webhook and OpenLineage tests."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

Answer = tuple[int, dict[str, str], bytes]
"""(status, headers, body) of one response."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes


@dataclass
class ScriptedServer:
    """Answers POSTs from a script of (status, headers, body), then with `default`; each answer
    waits for the next of `delays`, or `delay_seconds` once they are used up."""

    base_url: str
    script: list[Answer] = field(default_factory=list)
    default: Answer = (200, {}, b"")
    delay_seconds: float = 0.0
    delays: list[float] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> tuple[Answer, float]:
        with self.lock:
            self.requests.append(request)
            delay = self.delays.pop(0) if self.delays else self.delay_seconds
            return (self.script.pop(0) if self.script else self.default), delay

    def events(self) -> list[Any]:
        """The JSON body of each request, in order."""
        return [json.loads(request.body) for request in self.requests]


S = TypeVar("S", bound=ScriptedServer)


@contextlib.contextmanager
def serve(make_state: Callable[[str], S]) -> Iterator[S]:
    """Run a server on 127.0.0.1 whose state is `make_state(base_url)`; stop it on exit."""
    state: S

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            (status, headers, answer), delay = state.answer(received)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client timed out and went away
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = make_state(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    """A local port that nothing listens on (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables; requests to the local server must not go through one."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
