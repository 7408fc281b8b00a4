"""How long the reconciler waits on a busy or hung Prefect server: one try per request, at most
a few seconds, in every thread of a pass. Prefect's client would back off for minutes on 503s,
and the reaping of lost runners would wait with it."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from freight.errors import IntegrationError
from freight.execution.side_by_side import side_by_side
from freight.orchestrator import PrefectOrchestrator, one_try_each, secret_block


@dataclass
class Engine:
    """A Prefect server that is overwhelmed: 503 to every request, or no answer for a minute."""

    url: str
    hung: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)


@contextmanager
def overwhelmed_engine() -> Iterator[Engine]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/api/csrf-token"):
                self.send_response(404)  # a server without CSRF tokens: the client goes on
            else:
                engine.requests.append(self.path)
                if engine.hung.is_set():
                    time.sleep(60)
                self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    engine = Engine(f"http://127.0.0.1:{server.server_address[1]}/api")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        server.shutdown()
        server.server_close()


def look(orchestrator: PrefectOrchestrator, _: object) -> BaseException | None:
    try:
        orchestrator.run_statuses([str(uuid.uuid4())])
    except BaseException as exc:
        return exc
    return None


def test_a_busy_engine_is_asked_once_per_request_in_every_thread_of_a_pass() -> None:
    with (
        overwhelmed_engine() as engine,
        temporary_settings({PREFECT_API_URL: engine.url}),
        one_try_each(5),
        PrefectOrchestrator("deploy/deploy") as orchestrator,
    ):
        failures = side_by_side(lambda i: look(orchestrator, i), range(4), at_once=4)
    assert all(isinstance(exc, PrefectHTTPStatusError) for exc in failures), failures
    assert engine.requests == ["/api/flow_runs/filter"] * 4  # no retries, in no thread


def test_a_hung_engine_is_given_up_on_after_the_timeout() -> None:
    with (
        overwhelmed_engine() as engine,
        temporary_settings({PREFECT_API_URL: engine.url}),
        one_try_each(1),
        PrefectOrchestrator("deploy/deploy") as orchestrator,
    ):
        engine.hung.set()
        found: list[list[BaseException | None]] = []
        # Asked from a thread of its own, as the reconciler's loop asks (in the caller's context).
        asking = threading.Thread(
            target=contextvars.copy_context().run,
            args=(
                lambda: found.append(side_by_side(lambda i: look(orchestrator, i), [1], at_once=1)),
            ),
        )
        asking.start()
        asking.join(timeout=30)  # Prefect's client alone: a minute per try, six tries
        assert found, "the look still waits on the hung engine"
    [[failure]] = found
    assert isinstance(failure, httpx.TimeoutException), failure
    assert engine.requests == ["/api/flow_runs/filter"]


@pytest.mark.parametrize("at_once", [1, 3])
def test_side_by_side_keeps_the_order_of_the_items(at_once: int) -> None:
    assert side_by_side(lambda n: n * n, range(7), at_once=at_once) == [0, 1, 4, 9, 16, 25, 36]


def test_a_secret_block_is_not_waited_for_past_its_timeout_on_a_hung_engine() -> None:
    with overwhelmed_engine() as engine, temporary_settings({PREFECT_API_URL: engine.url}):
        engine.hung.set()
        failure: list[BaseException] = []

        def read() -> None:
            try:
                secret_block("deploy-token")
            except BaseException as exc:
                failure.append(exc)

        # In a thread of its own, in this context (where the engine's address is set).
        reading = threading.Thread(target=contextvars.copy_context().run, args=(read,))
        reading.start()
        reading.join(timeout=30)  # Prefect's client alone: a minute per try, six tries
        assert failure, "the read still waits on the hung engine"
    [error] = failure
    assert isinstance(error, IntegrationError), error
    assert "Secret block 'deploy-token' could not be read" in error.message
    assert len(engine.requests) == 1
