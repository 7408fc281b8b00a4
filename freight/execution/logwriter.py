"""A deploy's output on its way to the log: masked, batched, and written only while the runner
holds its claim."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from freight.db import session_scope
from freight.runner import Masker
from freight.service import logs


class LogWriter:
    """Collects output lines from any thread and writes them as one chunk per flush interval.

    Batching keeps the database load flat for a command that prints thousands of lines a second,
    while the interval bounds how late a line becomes readable. `also` gets each written chunk
    (the engine's own run log, which also prefers few large records). Once the deploy's claim is
    no longer `claim()`, nothing more is written and `on_fenced` is told once.
    """

    def __init__(
        self,
        engine: Engine,
        deploy_id: int,
        *,
        flush_interval: float,
        claim: Callable[[], str | None] = lambda: None,
        on_error: Callable[[Exception], None] | None = None,
        on_fenced: Callable[[], None] | None = None,
        also: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._deploy_id = deploy_id
        self._interval = flush_interval
        self._claim = claim
        self._on_error = on_error
        self._on_fenced = on_fenced
        self._also = also
        self._pending: list[str] = []
        self._lock = threading.Lock()
        # Held from taking the lines to committing them, so two flushes never swap order.
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self.fenced = False
        self._thread = threading.Thread(target=self._loop, name=f"log-{deploy_id}", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        # Made storable here already, so that the run log (`also`) shows what Freight's does.
        line = logs.storable(line)
        with self._lock:
            if not self.fenced:
                self._pending.append(line + "\n")

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                text, self._pending = "".join(self._pending), []
            if not text or self.fenced:
                return
            try:
                with session_scope(self._engine) as session:
                    written = logs.write_chunk(session, self._deploy_id, text, claim=self._claim())
            except Exception:
                with self._lock:
                    self._pending.insert(0, text)
                raise
            if not written:
                self.fenced = True
                if self._on_fenced:
                    self._on_fenced()
                return
        if self._also:
            self._also(text.removesuffix("\n"))

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join()
        self.flush()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            try:
                self.flush()
            except Exception as exc:  # keep the deploy going; the next flush retries the lines
                if self._on_error:
                    self._on_error(exc)


class DeployOutput:
    """The `Output` of a run: each line masked, then written to the deploy's log.

    Every provider's output passes here, so this is where a line loses its carriage returns:
    each redraw of a progress bar becomes a line of its own before masking. Masking then sees
    the text that every later reader sees; a renderer that dropped a `\r` afterwards (a
    console, a log viewer) could otherwise join pieces into a secret that masking never saw.
    """

    def __init__(self, writer: LogWriter, secrets: Iterable[str]) -> None:
        self._writer = writer
        self._mask = Masker(secrets)

    def __call__(self, line: str) -> None:
        for piece in [piece for piece in line.split("\r") if piece] or [""]:
            self._writer.write(self._mask(piece))

    def mask(self, secrets: Iterable[str]) -> None:
        self._mask = self._mask.adding(secrets)
