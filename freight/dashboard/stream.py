"""The dashboards' server-sent events: one reader per API process looks at the `change` table
(freight/db/changes.py) twice a second and wakes the open streams; however many pages are
open, the database sees one small query per process, and a page refreshes only when something
it shows changed.

A stream resumes: the overview's carries the last change id it had (Last-Event-ID), and a
page that comes back to a different one reloads what it shows; a deploy's carries its log's
offset, so the lines missed while away are sent, and none twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from freight.db import changes, session_scope
from freight.service import workers

POLL = 0.5
KEEPALIVE = 15.0  # a comment now and then: proxies close silent connections
KEPT_ALIVE = ": still here\n\n"
# A stream ends after this and the browser opens it again (resuming): who watches is checked
# again, so a logged-out session or a revoked key stops seeing changes.
LIFETIME = 600.0
RETRY_MS = 1000  # how soon a browser reconnects
KEPT = 2048  # batches remembered for streams that are a little behind
GAPS_WAITED = 30.0  # longer than a write transaction may stay open (freight/db: 5 s idle)
MAX_GAPS = 10_000


@dataclass(frozen=True)
class Batch:
    seq: int  # the hub's own count: ids may arrive out of order on PostgreSQL
    last_id: int  # the highest change id read so far
    deploys: frozenset[int]
    log_only: frozenset[int]
    elsewhere: bool


class Hub:
    """Reads changes for every stream of this process; started with the first stream."""

    def __init__(self, engine: Engine, *, heartbeat_interval: float, poll: float = POLL) -> None:
        self.engine = engine
        self.heartbeat_interval = heartbeat_interval
        self.poll = poll
        self._workers: tuple[tuple[object, ...], ...] | None = None
        self.last_id = 0
        self.seq = 0
        self._batches: deque[Batch] = deque(maxlen=KEPT)
        self._gaps: dict[int, float] = {}  # id -> until when it is asked for
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self._begun = False
        self._starting = asyncio.Lock()
        self._token = uuid.uuid4().hex  # another process's (or server's) counts are not ours
        self._wake = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> tuple[str, int]:
        """What this reader has seen so far: it moves with every batch of changes it finds."""
        return self._token, self.seq

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def current(self) -> int:
        """The last change id read; at first, the newest in the database (what came before
        is no news to anyone)."""
        async with self._starting:
            if not self._begun:
                self.last_id = await run_in_threadpool(self._latest)
                self._begun = True
        return self.last_id

    def _latest(self) -> int:
        with session_scope(self.engine, read_only=True) as session:
            return changes.latest(session)

    def _read(self) -> tuple[list[changes.Seen], bool]:
        """The changes not seen yet, and whether the workers look different now."""
        with session_scope(self.engine, read_only=True) as session:
            found = changes.since(session, self.last_id, self._gaps)
            fleet = workers.fleet_state(session, heartbeat_interval=self.heartbeat_interval)
        moved = self._workers is not None and fleet != self._workers
        self._workers = fleet
        return found, moved

    def _note_gaps(self, fresh: list[changes.Seen], now: float) -> None:
        """Ids skipped by what was read may still commit: they are asked for again a while."""
        got = {row.id for row in fresh}
        for found in got:
            self._gaps.pop(found, None)
        top = max(got, default=self.last_id)
        for skipped in range(self.last_id + 1, min(top, self.last_id + MAX_GAPS)):
            if skipped not in got:
                self._gaps[skipped] = now + GAPS_WAITED
        for gone in [i for i, until in self._gaps.items() if until < now]:
            del self._gaps[gone]
        self.last_id = max(self.last_id, top)

    async def _run(self) -> None:
        while not self.closing:
            try:
                await self.current()
                fresh, workers_moved = await run_in_threadpool(self._read)
            except Exception:  # the database away: streams stay open, reading resumes
                fresh, workers_moved = [], False
            self._note_gaps(fresh, time.monotonic())
            if fresh or workers_moved:
                self.seq += 1
                touched = {r.deploy_id for r in fresh if r.deploy_id is not None}
                shown = {r.deploy_id for r in fresh if r.deploy_id is not None and not r.log_only}
                self._batches.append(
                    Batch(
                        seq=self.seq,
                        last_id=self.last_id,
                        deploys=frozenset(touched),
                        log_only=frozenset(touched - shown),
                        elsewhere=workers_moved or any(r.deploy_id is None for r in fresh),
                    )
                )
                await self._notify()
            await asyncio.sleep(self.poll)

    async def _notify(self) -> None:
        async with self._wake:
            self._wake.notify_all()

    def close(self) -> None:
        """The server stops: open streams end now (browsers reconnect to the next server).
        Safe to call from a signal handler or another thread."""
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._notify(), loop)

    async def after(self, seq: int, timeout: float) -> list[Batch]:
        """The batches after `seq`, waiting up to `timeout` for one (or the server closing)."""
        if self.seq <= seq and not self.closing:
            async with self._wake:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait_for(lambda: self.seq > seq or self.closing), timeout
                    )
        return [batch for batch in self._batches if batch.seq > seq]


def hub_of(app: Any) -> Hub:
    """The reader of this API process (made when the app starts)."""
    hub = app.state.hub
    assert isinstance(hub, Hub)
    return hub


def frame(event: str, data: Any, *, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


async def _watch(
    hub: Hub, seq: int, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[list[Batch] | None]:
    """What a stream waits on: each run of batches after `seq` (taken before the stream's
    first look, so that nothing between is missed), or None when a keepalive is due; over when
    the browser left, the server stops or the stream's lifetime ran out."""
    ends = time.monotonic() + LIFETIME
    while not await disconnected() and time.monotonic() < ends:
        batches = await hub.after(seq, KEEPALIVE)
        if hub.closing:
            return
        if batches:
            seq = batches[-1].seq
        yield batches or None


async def overview(
    hub: Hub,
    known: str | None,
    render: Callable[[Hashable], Awaitable[str | None]],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The overview's part, rendered (once for every page that sees it alike), whenever a
    deploy's state, a lock, a release, an app or a worker changed (not for log lines). A page
    whose `known` change id is not the current one gets it at once: it missed something."""
    hub.start()
    current = await hub.current()
    watching = _watch(hub, hub.seq, disconnected)
    yield f"retry: {RETRY_MS}\n\n"
    yield frame("hello", {"id": current}, event_id=str(current))
    if known is not None and known != str(current):
        html = await render(hub.version)
        if html is None:  # the session ended: the browser comes back to be refused
            return
        yield frame("part", {"html": html}, event_id=str(current))
    async for batches in watching:
        if batches is None:
            yield KEPT_ALIVE
        elif any(b.elsewhere or (b.deploys - b.log_only) for b in batches):
            html = await render(hub.version)
            if html is None:
                return
            yield frame("part", {"html": html}, event_id=str(batches[-1].last_id))


async def deploy(
    hub: Hub,
    deploy_id: int,
    offset: int,
    look: Callable[[int], Awaitable[tuple[dict[str, Any], bool] | None]],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The deploy's state and its log from `offset`, again each time either changed; ends
    once the deploy is over and all of its log was sent. `look(offset)` gives the state with
    the chunks from there, and whether that was all (None: the viewer may no longer look)."""
    hub.start()
    watching = _watch(hub, hub.seq, disconnected)
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        looked = await look(offset)
        if looked is None:  # the session ended: the browser comes back to be refused
            return
        state, over = looked
        offset = state["log"]["nextOffset"]
        yield frame("deploy", state, event_id=str(offset))
        if over:
            yield frame("end", {}, event_id=str(offset))
            return
        if state["log"]["more"]:  # a long log, sent part by part
            continue
        async for batches in watching:
            if batches is None:
                yield KEPT_ALIVE
            elif any(deploy_id in b.deploys or b.elsewhere for b in batches):
                break
        else:
            return  # the browser left, the server stops, or the stream's time is up
