"""The watch a running deploy keeps (freight/execution/monitor.py), with a clock of its own."""

from __future__ import annotations

import threading

from freight.execution.monitor import Claim, Monitor, Watch
from tests.helpers import wait_for


class Recorder:
    def __init__(self, answers: list[Claim | Exception]) -> None:
        self.answers = answers
        self.beats: list[bool] = []
        self.lost: list[str] = []
        self.cancelled = threading.Event()
        self.errors: list[Exception] = []
        self.now = 1000.0

    def look(self, beat: bool) -> Claim:
        self.beats.append(beat)
        self.now += 0.6  # each look takes a little wall time
        answer = self.answers.pop(0) if self.answers else Claim.HELD
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch(self) -> Watch:
        return Watch(
            look=self.look,
            on_cancel=self.cancelled.set,
            on_lost=self.lost.append,
            on_error=self.errors.append,
        )

    def clock(self) -> float:
        return self.now


def monitor(recorder: Recorder) -> Monitor:
    return Monitor(
        recorder.watch(),
        poll_interval=0.001,
        heartbeat_interval=1.0,
        lost_after=15,
        clock=recorder.clock,
    )


def test_it_beats_at_once_then_every_interval_and_passes_on_a_cancel() -> None:
    recorder = Recorder([Claim.HELD, Claim.HELD, Claim.HELD, Claim.CANCEL])
    watch = monitor(recorder).start()
    try:
        wait_for(recorder.cancelled.is_set, 5, "the cancel")
    finally:
        watch.stop()
    assert recorder.beats[:4] == [True, False, True, False]


def test_a_lost_claim_stops_it_and_says_why() -> None:
    recorder = Recorder([Claim.HELD, Claim.LOST])
    watch = monitor(recorder).start()
    wait_for(lambda: recorder.lost, 5, "the lost claim")
    watch.stop()
    assert recorder.lost == ["its claim was taken (the deploy was reaped)"]


def test_a_database_hiccup_does_not_end_the_watch() -> None:
    recorder = Recorder([ConnectionError("db away"), Claim.HELD, Claim.CANCEL])
    watch = monitor(recorder).start()
    try:
        wait_for(recorder.cancelled.is_set, 5, "the cancel after the hiccup")
    finally:
        watch.stop()
    assert [str(e) for e in recorder.errors] == ["db away"] and recorder.lost == []


def test_a_runner_stopped_longer_than_the_reap_time_stops_before_it_asks() -> None:
    recorder = Recorder([])
    naps = 0

    def nap(stop: threading.Event, seconds: float) -> bool:
        nonlocal naps
        naps += 1
        if naps == 2:
            recorder.now += 42  # SIGSTOP, or a paused VM, while it slept
        return stop.wait(seconds)

    watch = Monitor(
        recorder.watch(),
        poll_interval=0.001,
        heartbeat_interval=1,
        lost_after=15,
        clock=recorder.clock,
        wait=nap,
    ).start()
    wait_for(lambda: recorder.lost, 5, "the pause to be noticed")
    watch.stop()
    assert recorder.lost == ["the runner was stopped for 42s"]
    assert len(recorder.beats) == 2  # no look after waking: it stopped its command first
