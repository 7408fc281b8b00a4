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
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from freight.db import changes, session_scope
from freight.service import workers

POLL = 0.5
KEEPALIVE = 15.0  # a comment now and then: proxies close silent connections
RETRY_MS = 1000  # how soon a browser reconnects
KEPT = 2048  # changes remembered for streams that are a little behind
# A server stopping cuts open streams after this (they reconnect to the next one).
STREAMS_CLOSE_WITHIN = 2


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
        self._seen: deque[int] = deque(maxlen=4 * KEPT)
        self._wake = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # for the benchmark: queries made

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def current(self) -> int:
        if not self.last_id:
            self.last_id = await run_in_threadpool(self._latest)
        return self.last_id

    def _latest(self) -> int:
        with session_scope(self.engine, read_only=True) as session:
            return changes.latest(session)

    def _read(self, after: int) -> tuple[list[changes.Seen], bool]:
        """The changes after `after`, and whether the workers look different now."""
        with session_scope(self.engine, read_only=True) as session:
            found = changes.since(session, after)
            fleet = workers.fleet_state(session, heartbeat_interval=self.heartbeat_interval)
        moved = self._workers is not None and fleet != self._workers
        self._workers = fleet
        return found, moved

    async def _run(self) -> None:
        await self.current()
        seen = set(self._seen)
        started = False
        while True:
            try:
                rows, workers_moved = await run_in_threadpool(self._read, self.last_id)
                self.reads += 1
            except Exception:  # the database away: streams stay open, reading resumes
                rows, workers_moved = [], False
            fresh = [row for row in rows if row.id not in seen]
            if not started:  # what was there before the first stream is no news to it
                seen.update(row.id for row in fresh if row.id <= self.last_id)
                self._seen.extend(row.id for row in fresh if row.id <= self.last_id)
                fresh = [row for row in fresh if row.id > self.last_id]
                started = True
            if fresh or workers_moved:
                for row in fresh:
                    seen.add(row.id)
                    self._seen.append(row.id)
                if len(seen) > 8 * KEPT:
                    seen = set(self._seen)
                self.last_id = max([self.last_id, *(row.id for row in fresh)])
                self.seq += 1
                self._batches.append(
                    Batch(
                        seq=self.seq,
                        last_id=self.last_id,
                        deploys=frozenset(r.deploy_id for r in fresh if r.deploy_id is not None),
                        log_only=frozenset(
                            r.deploy_id for r in fresh if r.deploy_id is not None and r.log_only
                        )
                        - frozenset(
                            r.deploy_id for r in fresh if r.deploy_id is not None and not r.log_only
                        ),
                        elsewhere=workers_moved or any(r.deploy_id is None for r in fresh),
                    )
                )
                async with self._wake:
                    self._wake.notify_all()
            await asyncio.sleep(self.poll)

    async def after(self, seq: int, timeout: float) -> list[Batch]:
        """The batches after `seq`, waiting up to `timeout` for one."""
        if self.seq <= seq:
            async with self._wake:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait_for(lambda: self.seq > seq), timeout)
        return [batch for batch in self._batches if batch.seq > seq]


def frame(event: str, data: Any, *, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


async def overview(
    hub: Hub, last_event_id: str | None, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    """`changed` whenever a deploy's state, a lock, a release or an app changed (not for log
    lines): the page then fetches its parts again."""
    hub.start()
    current = await hub.current()
    seq = hub.seq
    yield f"retry: {RETRY_MS}\n\n"
    yield frame("hello", {"id": current}, event_id=str(current))
    if last_event_id is not None and last_event_id != str(current):
        yield frame("changed", {"missed": True}, event_id=str(current))
    while not await disconnected():
        batches = await hub.after(seq, KEEPALIVE)
        if not batches:
            yield ": still here\n\n"
            continue
        seq = batches[-1].seq
        shown = [b for b in batches if b.elsewhere or (b.deploys - b.log_only)]
        if shown:
            ids = sorted(set().union(*(b.deploys - b.log_only for b in shown)))
            yield frame("changed", {"deploys": ids}, event_id=str(batches[-1].last_id))


async def deploy(
    hub: Hub,
    deploy_id: int,
    offset: int,
    look: Callable[[int], Awaitable[tuple[dict[str, Any], bool]]],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The deploy's state and its log from `offset`, again each time either changed; ends
    once the deploy is over and all of its log was sent. `look(offset)` gives the state with
    the chunks from there, and whether that was all."""
    hub.start()
    seq = hub.seq
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        state, over = await look(offset)
        offset = state["log"]["nextOffset"]
        yield frame("deploy", state, event_id=str(offset))
        if over:
            yield frame("end", {}, event_id=str(offset))
            return
        if state["log"]["more"]:  # a long log, sent part by part
            continue
        while True:
            if await disconnected():
                return
            batches = await hub.after(seq, KEEPALIVE)
            if not batches:
                yield ": still here\n\n"
                continue
            seq = batches[-1].seq
            if any(deploy_id in b.deploys or b.elsewhere for b in batches):
                break
