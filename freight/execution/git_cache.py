"""The git cache of this host (bare mirrors under the workspace root), kept bounded: each sweep
garbage-collects the mirrors not collected for a while, removes those of repositories no app
uses any more, then, while the cache is over its cap, the mirrors used longest ago (a removed
mirror is cloned again when next needed). A mirror a running deploy checked out from stays.
What is left is recorded per host, for /health and the maintenance log."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from freight import vcs
from freight.db import session_scope
from freight.errors import FreightError
from freight.service import apps, mirrors

log = logging.getLogger(__name__)

# Seconds between sweeps, and before the first (a process just started has other work).
SWEEP_EVERY = 300.0
FIRST_SWEEP_AFTER = 30.0
GC_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Mirror:
    name: str
    path: Path
    bytes: int
    used: float  # when last used, as a timestamp


@dataclass
class CacheReport:
    # The mirrors left, largest first.
    mirrors: list[Mirror] = field(default_factory=list)
    # (mirror, why) of each removed.
    removed: list[tuple[str, str]] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(mirror.bytes for mirror in self.mirrors)


def size_of(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # gone meanwhile (a fetch's temporary file)
                continue
    return total


def measure(workspace_root: Path) -> list[Mirror]:
    root = workspace_root / "mirrors"
    found = []
    for path in sorted(root.glob("*.git")) if root.is_dir() else ():
        if path.is_dir() and not path.name.startswith("."):
            found.append(Mirror(path.name, path, size_of(path), vcs.last_used(path)))
    return found


def sweep(
    workspace_root: Path,
    wanted_urls: Iterable[str],
    *,
    limit_bytes: int,
    gc_every: float,
) -> CacheReport:
    report = CacheReport()
    root = workspace_root / "mirrors"
    # Left by a removal that a crash interrupted.
    for leftover in root.glob(".*.removing") if root.is_dir() else ():
        shutil.rmtree(leftover, ignore_errors=True)
    wanted = {vcs.mirror_path(workspace_root, url).name for url in wanted_urls}
    for mirror in measure(workspace_root):
        try:
            if mirror.name not in wanted:
                if vcs.remove_mirror(mirror.path):
                    report.removed.append((mirror.name, "no app uses its repository"))
                continue
            if vcs.collect_garbage(mirror.path, every=gc_every, timeout=GC_TIMEOUT):
                report.collected.append(mirror.name)
        except FreightError as exc:  # one mirror's trouble must not stop the sweep
            report.problems.append(f"{mirror.name}: {exc.message}")
    left = measure(workspace_root)
    total = sum(mirror.bytes for mirror in left)
    for mirror in sorted(left, key=lambda m: m.used):
        if total <= limit_bytes:
            break
        try:
            if vcs.remove_mirror(mirror.path):
                report.removed.append((mirror.name, "over the cache's cap, used longest ago"))
                total -= mirror.bytes
        except FreightError as exc:
            report.problems.append(f"{mirror.name}: {exc.message}")
    report.mirrors = sorted(measure(workspace_root), key=lambda m: -m.bytes)
    return report


def sweep_host(
    engine: Engine, workspace_root: Path, host: str, *, limit_bytes: int, gc_every: float
) -> CacheReport:
    """Sweep this host's cache for the apps the database knows, and record what is left."""
    with session_scope(engine, read_only=True) as session:
        urls = apps.repository_urls(session)
    report = sweep(workspace_root, urls, limit_bytes=limit_bytes, gc_every=gc_every)
    with session_scope(engine) as session:
        mirrors.record(
            session,
            host,
            [
                mirrors.MirrorSize(m.name, m.bytes, datetime.fromtimestamp(m.used, UTC))
                for m in report.mirrors
            ],
        )
    return report


def serve(
    engine: Engine,
    workspace_root: Path,
    host: str,
    *,
    limit_bytes: int,
    gc_every: float,
    stop: threading.Event,
    say: Callable[[str], None] = log.info,
    first_after: float = FIRST_SWEEP_AFTER,
    every: float = SWEEP_EVERY,
) -> None:
    """Sweep every `every` seconds until stopped (a thread of its own: a long `git gc` must not
    hold up the heartbeats of the process that runs it)."""
    if stop.wait(first_after):
        return
    while True:
        started = time.monotonic()
        try:
            report = sweep_host(
                engine, workspace_root, host, limit_bytes=limit_bytes, gc_every=gc_every
            )
            for line in describe(report, limit_bytes):
                say(line)
        except Exception as exc:  # the database away a moment: the next sweep is in time
            say(f"Could not sweep the git cache: {exc}")
        if stop.wait(max(0.0, every - (time.monotonic() - started))):
            return


def describe(report: CacheReport, limit_bytes: int) -> list[str]:
    """The sweep's news, one line each (nothing when there was none)."""
    lines = [f"Git cache: removed {name} ({why})" for name, why in report.removed]
    lines += [f"Git cache: garbage-collected {name}" for name in report.collected]
    lines += [f"Git cache: {problem}" for problem in report.problems]
    if lines:
        lines.append(
            f"Git cache: {len(report.mirrors)} mirror(s), {report.total / 2**20:.1f} MB "
            f"of {limit_bytes / 2**20:.0f} MB"
        )
    return lines
