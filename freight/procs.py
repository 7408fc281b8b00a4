"""What /proc says about processes: live members of a group, descendants, environments.

Liveness ignores zombies: in a container PID 1 may never reap the grandchildren reparented to
it, so `os.kill(pid, 0)` and `os.killpg(pgid, 0)` would report them alive forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Proc",
    "descendants",
    "environ_has",
    "group_members",
    "is_alive",
    "is_working",
    "live_processes",
]


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int


def live_processes() -> Iterator[Proc]:
    """Every process that is not a zombie, read from /proc/PID/stat."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:  # exited between listing /proc and reading its entry
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')' are
        # fixed: state, ppid, pgrp, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and fields[0] not in (b"Z", b"X"):
            yield Proc(pid=int(entry.name), ppid=int(fields[1]), pgid=int(fields[2]))


def is_alive(pid: int) -> bool:
    return _state(pid) not in (None, b"Z", b"X")


def is_working(pid: int) -> bool:
    """Alive and not stopped (SIGSTOP, a debugger): a process that can still keep its word."""
    return _state(pid) not in (None, b"Z", b"X", b"T", b"t")


def _state(pid: int) -> bytes | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[0] if fields else None


def group_members(pgid: int) -> list[int]:
    return [proc.pid for proc in live_processes() if proc.pgid == pgid]


def descendants(pids: set[int]) -> set[int]:
    """The given pids and every live process below them."""
    children: dict[int, list[int]] = {}
    for proc in live_processes():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def environ_has(pid: int, entry: str) -> bool:
    """Whether the process's environment holds exactly `entry` (e.g. "FREIGHT_DEPLOY_ID=7")."""
    try:
        return entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
