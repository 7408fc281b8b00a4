"""Run one deploy command as its own process group, streaming its output line by line.

The command starts a new session so that everything it spawns can be stopped together: on a
time limit, on cancel, when the caller fails, and also after a normal exit, because nothing a
deploy started may outlive it.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import queue
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from freight import procs
from freight.errors import CommandFailed, DeployCancelled, DeployTimeout

_MASK: Final = "********"

# How long the reader and the liveness checks block before looking at their stop conditions.
_TICK: Final = 0.05
_CHUNK: Final = 65536
# A slow `output` stalls the reader, then the pipe, then the command, instead of piling up an
# unbounded backlog in memory.
_QUEUE_LINES: Final = 10_000
# SIGKILL cannot be refused, but the kernel still needs a moment to tear processes down.
_KILL_WAIT: Final = 5.0
# Once the group is gone, only a process that left it (setsid) can still hold the pipe open;
# don't let such a process keep a finished deploy waiting for EOF.
_EOF_WAIT: Final = 1.0


class Masker:
    """Replaces each configured secret value in text with '********', longest secrets first.

    Empty and whitespace-only values are ignored: masking them would mangle every line.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains a shorter one must be masked whole, otherwise
        # masking the short one first would leave the rest of the long one readable.
        self._secrets = sorted({s for s in secrets if s.strip()}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text

    def adding(self, secrets: Iterable[str]) -> Masker:
        return Masker([*self._secrets, *secrets])


def run_process(
    command: str | Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    output: Callable[[str], None],
    timeout: float,
    read_timeout: float,
    grace: float,
    should_cancel: Callable[[], bool] | None = None,
    poll_interval: float = 0.2,
    on_start: Callable[[int], None] | None = None,
    identity: Mapping[str, Any] | None = None,
) -> None:
    """Run `command` in a new process group and pass each line it prints to `output`.

    `identity` (`subprocess` user/group arguments) runs it as another user.

    `on_start` gets the group id once the command runs, so that someone can stop the group
    should this process die without doing it (see `stop_orphaned_group`).

    A string runs as `/bin/bash -c command`; a sequence is the argv as is. Returns when the
    command exits with status 0. Raises CommandFailed for any other exit, DeployTimeout when
    `timeout` (total) or `read_timeout` (silence) is exceeded and DeployCancelled when
    `should_cancel()` says so. However the run ends, no process of the group is left alive.
    """
    argv = ["/bin/bash", "-c", command] if isinstance(command, str) else list(command)
    run = _Run(output=output, grace=grace)
    try:
        returncode = run.run(
            argv,
            cwd=cwd,
            env=env,
            timeout=timeout,
            read_timeout=read_timeout,
            should_cancel=should_cancel,
            poll_interval=poll_interval,
            on_start=on_start,
            identity=identity or {},
        )
    except BaseException:
        run.stop_group(_quietly(output))
        raise
    finally:
        run.close()
    if returncode == 0:
        return
    if returncode < 0:
        message = f"Command was killed by signal {_signal_name(-returncode)}"
    else:
        message = f"Command exited with status {returncode}"
    output(f">> {message}")
    raise CommandFailed(message, returncode=returncode)


class _Mark(enum.Enum):
    EOF = enum.auto()
    # The reader has queued everything that was in the pipe when it was asked to catch up.
    CAUGHT_UP = enum.auto()


class _Run:
    """One child process group, its output pipe and the thread that reads it."""

    def __init__(self, *, output: Callable[[str], None], grace: float) -> None:
        self._output = output
        self._grace = grace
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid = 0
        self._fd = -1
        self._reader: threading.Thread | None = None
        self._lines: queue.Queue[str | _Mark] = queue.Queue(maxsize=_QUEUE_LINES)
        self._stop_reading = threading.Event()
        self._catch_up_requested = threading.Event()
        # The unfinished last line; only the reader thread touches it.
        self._partial = bytearray()
        self._eof = False
        self._group_stopped = False
        # Written by the reader on every chunk (a partial line is output too) and by the
        # calling thread on every delivered line (a backlog being delivered is not silence).
        self._last_activity = time.monotonic()

    def run(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        timeout: float,
        read_timeout: float,
        should_cancel: Callable[[], bool] | None,
        poll_interval: float,
        on_start: Callable[[int], None] | None,
        identity: Mapping[str, Any],
    ) -> int:
        """Start the command, deliver its output until the leader exits and return its status,
        enforcing the limits."""
        proc = self._start(argv, cwd=cwd, env=env, identity=identity)
        if on_start is not None:
            on_start(self._pgid)
        deadline = time.monotonic() + timeout
        next_check = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                self._give_up(DeployTimeout(f"Process exceeded time limit of {timeout:g}s"))
            if now - self._last_activity >= read_timeout:
                self._give_up(DeployTimeout(f"Process produced no output for {read_timeout:g}s"))
            if now >= next_check:
                # should_cancel may be a database query: ask at a fixed pace, not per line.
                if should_cancel is not None and should_cancel():
                    self._give_up(DeployCancelled("Deploy cancelled"))
                next_check = now + poll_interval
            returncode = proc.poll()
            if returncode is not None:
                self._finish(deadline)
                return returncode
            wait = max(0.0, min(next_check, deadline, self._last_activity + read_timeout) - now)
            if self._eof:
                # The command closed its output but runs on; the limits still apply.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            else:
                self._deliver_next(wait, self._output)

    def _start(
        self, argv: list[str], *, cwd: Path, env: Mapping[str, str], identity: Mapping[str, Any]
    ) -> subprocess.Popen[bytes]:
        read_fd, write_fd = os.pipe()
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                **identity,
            )
        except OSError as exc:
            message = f"Could not start command: {exc}"
            self._output(f">> {message}")
            raise CommandFailed(message) from exc
        finally:
            # The child has its own copy; ours would keep EOF from ever arriving.
            os.close(write_fd)
            if self._proc is None:
                os.close(read_fd)
        self._fd = read_fd
        # start_new_session makes the child the leader of a new group whose id is its pid.
        self._pgid = self._proc.pid
        self._last_activity = time.monotonic()
        self._reader = threading.Thread(
            target=self._read, name=f"freight-runner-{self._pgid}", daemon=True
        )
        self._reader.start()
        return self._proc

    def stop_group(self, say: Callable[[str], None]) -> None:
        """SIGTERM the group, give it `grace` seconds, then SIGKILL whatever is left."""
        if self._group_stopped or self._proc is None or not _group_alive(self._pgid):
            return
        self._group_stopped = True
        try:
            _signal_group(self._pgid, signal.SIGTERM)
            say(f">> Sent SIGTERM to process group {self._pgid}")
            if self._wait_group_gone(time.monotonic() + self._grace, say):
                return
        except BaseException:
            # Interrupted during the grace period (a second Ctrl-C, a failing `output`): skip
            # the rest of it rather than leave the group running.
            _signal_group(self._pgid, signal.SIGKILL)
            raise
        _signal_group(self._pgid, signal.SIGKILL)
        say(f">> Sent SIGKILL to process group {self._pgid}")
        self._wait_group_gone(time.monotonic() + _KILL_WAIT, say)

    def close(self) -> None:
        self._stop_reading.set()
        if self._reader is not None:
            self._reader.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._proc is not None and self._proc.returncode is None:
            # The group has been signalled by now, so the leader is at most dying; reap it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(_KILL_WAIT)

    def _give_up(self, error: DeployTimeout | DeployCancelled) -> NoReturn:
        self._output(f">> {error.message}")
        self.stop_group(self._output)
        self._deliver_available(self._output)
        raise error

    def _finish(self, deadline: float) -> None:
        if _group_alive(self._pgid):
            # Everything the leader wrote is in the pipe by now: pass it on before saying that
            # the rest of the group is being stopped, so that the log keeps its order.
            self._catch_up(deadline)
            self.stop_group(self._output)
        while not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._deliver_next(min(_EOF_WAIT, remaining), self._output):
                return

    def _catch_up(self, deadline: float) -> None:
        self._catch_up_requested.set()
        while not self._eof and (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self._lines.get(timeout=remaining)
            except queue.Empty:
                return
            if item is _Mark.CAUGHT_UP:
                return
            self._deliver(item, self._output)

    def _wait_group_gone(self, deadline: float, say: Callable[[str], None]) -> bool:
        while _group_alive(self._pgid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Waiting on the queue instead of sleeping keeps what the command says while it
            # shuts down in the log.
            self._deliver_next(min(_TICK, remaining), say)
        return True

    def _deliver_next(self, wait: float, say: Callable[[str], None]) -> bool:
        """Deliver the next line if one arrives within `wait` seconds; False if none did."""
        try:
            item = self._lines.get(timeout=wait)
        except queue.Empty:
            return False
        self._deliver(item, say)
        return True

    def _deliver_available(self, say: Callable[[str], None]) -> None:
        while not self._eof:
            try:
                item = self._lines.get_nowait()
            except queue.Empty:
                return
            self._deliver(item, say)

    def _deliver(self, item: str | _Mark, say: Callable[[str], None]) -> None:
        if item is _Mark.EOF:
            self._eof = True
        elif isinstance(item, str):
            say(item)
            self._last_activity = time.monotonic()

    def _read(self) -> None:
        # Runs in the reader thread. Polling with a timeout instead of a blocking read lets
        # close() stop it even while a process outside the group keeps the pipe open.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self._stop_reading.is_set():
                if self._catch_up_requested.is_set():
                    self._catch_up_requested.clear()
                    if not self._take_exactly(_bytes_in_pipe(self._fd)):
                        return
                    if not self._put(_Mark.CAUGHT_UP):
                        return
                if not poller.poll(_TICK * 1000):
                    continue
                chunk = os.read(self._fd, _CHUNK)
                if not chunk:
                    if self._partial:
                        self._put(self._partial.decode("utf-8", errors="replace"))
                    return
                if not self._take(chunk):
                    return
        finally:
            self._put(_Mark.EOF)

    def _take_exactly(self, size: int) -> bool:
        while size > 0:
            chunk = os.read(self._fd, min(size, _CHUNK))
            if not chunk:
                # Counted bytes cannot vanish, but never spin if the kernel says otherwise.
                break
            size -= len(chunk)
            if not self._take(chunk):
                return False
        return True

    def _take(self, chunk: bytes) -> bool:
        """Queue the lines `chunk` completes; False if reading was stopped meanwhile."""
        self._last_activity = time.monotonic()
        *complete, rest = chunk.split(b"\n")
        if not complete:
            self._partial += rest
            return True
        # Only the new chunk is split, so a very long line costs linear time.
        complete[0] = bytes(self._partial) + complete[0]
        self._partial = bytearray(rest)
        for line in complete:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not self._put(line.decode("utf-8", errors="replace")):
                return False
        return True

    def _put(self, item: str | _Mark) -> bool:
        """Queue an item, waiting for room; False if reading was stopped meanwhile."""
        while not self._stop_reading.is_set():
            try:
                self._lines.put(item, timeout=_TICK)
            except queue.Full:
                continue
            return True
        return False


def stop_orphaned_group(pgid: int, *, marker: str, grace: float) -> bool:
    """Stop a command group whose runner died: TERM, grace, KILL. True if there was one.

    Only a group with a process whose environment holds `marker` (e.g. FREIGHT_DEPLOY_ID=7) is
    touched, since by now the group id may belong to someone else.
    """
    if not any(procs.environ_has(pid, marker) for pid in procs.group_members(pgid)):
        return False
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(_TICK)
    _signal_group(pgid, signal.SIGKILL)
    return True


def _group_alive(pgid: int) -> bool:
    return bool(procs.group_members(pgid))


def _bytes_in_pipe(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, bytes(4)))[0])


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # The group may be gone already; members we may not signal (setuid) are beyond reach,
    # the others still receive it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _quietly(output: Callable[[str], None]) -> Callable[[str], None]:
    """`output` for cleanup while an exception propagates: a failing sink (possibly the very
    cause of that exception) must not stop the group from being killed."""

    def say(line: str) -> None:
        with contextlib.suppress(Exception):
            output(line)

    return say


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
