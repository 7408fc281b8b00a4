"""The watch a running deploy keeps: its heartbeat, cancel requests made elsewhere (API, CLI,
dashboard, the engine's UI through the reconciler), and its claim.

A runner whose claim was taken (the reconciler took it for lost) must stop at once: the next
deploy of its app/env may be running already. The same goes for a runner that finds it was
stopped for longer than the reap time (SIGSTOP, a paused VM): it stops its command before it
even asks, since by then its claim is probably gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Claim(Enum):
    HELD = "held"
    CANCEL = "cancel"  # held, and someone asked the deploy to stop
    LOST = "lost"


@dataclass(frozen=True)
class Watch:
    # Looks at the deploy's row (beating its heartbeat when `beat` is True).
    look: Callable[[bool], Claim]
    on_cancel: Callable[[], None]
    # Stop the command, write nothing more; the argument says why.
    on_lost: Callable[[str], None]
    on_error: Callable[[Exception], None]


class Monitor:
    def __init__(
        self,
        watch: Watch,
        *,
        poll_interval: float,
        heartbeat_interval: float,
        lost_after: float,
        clock: Callable[[], float] = time.time,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        self._watch = watch
        self._poll = poll_interval
        self._heartbeat = heartbeat_interval
        self._lost_after = lost_after
        self._clock = clock
        self._wait = wait
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        last_tick = last_beat = self._clock()
        beat = True  # at once: the reconciler counts silence from the claim until then
        while True:
            now = self._clock()
            # Wall-clock time, which keeps running while this process is stopped.
            if now - last_tick > self._lost_after:
                self._watch.on_lost(f"the runner was stopped for {now - last_tick:.0f}s")
                return
            try:
                found = self._watch.look(beat)
            except Exception as exc:  # a database hiccup must not end the watch
                self._watch.on_error(exc)
            else:
                if beat:
                    last_beat = now
                if found is Claim.LOST:
                    self._watch.on_lost("its claim was taken (the deploy was reaped)")
                    return
                if found is Claim.CANCEL:
                    self._watch.on_cancel()
            # Counted from here: a slow database is not a pause (a pause during the look shows
            # as a lost claim instead).
            last_tick = self._clock()
            if self._wait(self._stop, self._poll):
                return
            beat = self._clock() - last_beat >= self._heartbeat
