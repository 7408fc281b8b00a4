"""Small helpers shared by the tests: waiting on a condition, finding processes."""

from __future__ import annotations

import stat
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


def reachable_by_others(path: Path) -> Path:
    """Make the directories above `path` enterable by other users (not listable): PostgreSQL,
    which `freight up` runs as a user of its own when started by root, keeps its data in there.
    pytest's temporary directories are root's alone otherwise."""
    path.mkdir(parents=True, exist_ok=True)
    for directory in [path, *path.parents]:
        if directory == Path(directory.anchor):
            break
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
    return path
