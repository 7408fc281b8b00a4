"""Small helpers shared by the tests: waiting on a condition, finding processes."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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


# Repository URLs that would make git do more than a deploy needs (run a helper, take an option,
# reach another scheme), or read the server's own disk; `{marker}` is a file a helper would make
# and `{origin}` a local repository.
HOSTILE_REPOSITORIES = [
    pytest.param("fd::17", id="fd-helper"),
    pytest.param("ext::sh -c touch% {marker}", id="ext-helper"),
    pytest.param("--upload-pack=touch {marker}", id="option"),
    pytest.param("ssh://-oProxyCommand=touch% {marker}/web.git", id="option-as-host"),
    pytest.param("http://127.0.0.1:1/web.git", id="other-scheme"),
    pytest.param("file://{origin}", id="file-url"),
    pytest.param("{origin}", id="local-path"),
]
