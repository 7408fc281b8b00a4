"""Small helpers shared by the tests: waiting on a condition, finding processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from freight import procs


def wait_for(
    condition: Callable[[], object],
    timeout: float = 10,
    what: str = "condition",
    diagnostics: Callable[[], str] = lambda: "",
) -> None:
    """Poll until condition() is truthy; fail with `what` (and diagnostics) at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diagnostics()}")
        time.sleep(0.02)


def command_line(pid: int) -> str:
    """The process's command line, arguments joined by spaces; "" once it has exited."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone since it was listed (ENOENT, or ESRCH mid-exit)
        return ""


def live_pids_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds `entry`, e.g. FREIGHT_PARAM_MARKER=abc."""
    return [p.pid for p in procs.live_processes() if procs.environ_has(p.pid, entry)]
