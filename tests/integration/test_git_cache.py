"""The git cache kept bounded, with real repositories and mirrors: a mirror no app uses is
removed (unless a deploy's checkout uses it), mirrors are garbage-collected once per period, the
cap removes the mirrors used longest ago first, and what is left shows, per host, in /health
(each mirror only to a key for every app) and in the maintenance report."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import Engine

from freight import vcs
from freight.db import session_scope
from freight.execution import delivery, git_cache, housekeeping
from freight.service import mirrors
from freight.settings import Settings
from tests.apiserver import serve_api
from tests.factories import GitRepo, RecordingOrchestrator, make_app
from tests.helpers import wait_for

LOCAL = vcs.Access(allow_local=True)
DAY = 86400.0


def repo(tmp_path: Path, name: str, size: int = 0) -> GitRepo:
    made = GitRepo.create(tmp_path / name)
    # Random bytes do not compress: the mirror's size is about `size`.
    made.commit("data", {"blob.bin": os.urandom(size).hex() if size else "x"})
    return made


def loose_objects(mirror: Path) -> int:
    return sum(
        len(list(folder.iterdir()))
        for folder in (mirror / "objects").iterdir()
        if len(folder.name) == 2  # objects/ab/cdef...: one file per loose object
    )


def test_unused_mirrors_go_busy_ones_stay_and_mirrors_are_collected_once_a_period(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "workspace"
    used, gone, checked_out = (repo(tmp_path, name) for name in ("used", "gone", "checked"))
    for origin in (used, gone, checked_out):
        vcs.update_mirror(workspace, origin.url, access=LOCAL)
    used.commit("more")
    mirror = vcs.update_mirror(workspace, used.url, access=LOCAL)
    assert loose_objects(mirror) > 0  # a fetch leaves loose objects
    # A deploy of the repository that no app uses any more is still running from a checkout.
    busy = vcs.mirror_path(workspace, checked_out.url)
    checkout = vcs.add_worktree(busy, checked_out.git("rev-parse", "HEAD"), tmp_path / "co")

    report = git_cache.sweep(workspace, [used.url], limit_bytes=2**40, gc_every=DAY)
    assert report.removed == [
        (vcs.mirror_path(workspace, gone.url).name, "no app uses its repository")
    ]
    assert not vcs.mirror_path(workspace, gone.url).exists()
    assert busy.exists() and checkout.exists()
    assert report.collected == [mirror.name]
    assert loose_objects(mirror) == 0
    assert vcs.resolve_ref(mirror, "main") == used.git("rev-parse", "HEAD")  # still whole
    again = git_cache.sweep(workspace, [used.url], limit_bytes=2**40, gc_every=DAY)
    assert again.collected == [] and again.removed == []  # collected once a day

    # The deploy ended: its mirror goes at the next sweep.
    vcs.remove_worktree(busy, checkout)
    assert git_cache.sweep(workspace, [used.url], limit_bytes=2**40, gc_every=DAY).removed == [
        (busy.name, "no app uses its repository")
    ]
    assert sorted(m.name for m in git_cache.measure(workspace)) == [mirror.name]


def test_the_cap_removes_the_mirrors_used_longest_ago_first(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    origins = [repo(tmp_path, f"r{n}", size=300_000) for n in range(3)]
    mirrors = [vcs.update_mirror(workspace, o.url, access=LOCAL) for o in origins]
    now = time.time()
    # r1 was used a week ago, r0 a day ago, r2 just now (a deploy's mirror_with).
    for mirror, age in zip(mirrors, (DAY, 7 * DAY, 0), strict=True):
        os.utime(mirror / "freight-used", (now - age, now - age))
    vcs.mirror_with(workspace, origins[2].url, origins[2].git("rev-parse", "HEAD"), access=LOCAL)
    sizes = {m.name: m.bytes for m in git_cache.measure(workspace)}
    assert all(size > 300_000 for size in sizes.values())
    limit = sizes[mirrors[2].name] + sizes[mirrors[0].name] + 1000
    report = git_cache.sweep(workspace, [o.url for o in origins], limit_bytes=limit, gc_every=DAY)
    assert report.removed == [(mirrors[1].name, "over the cache's cap, used longest ago")]
    assert report.total <= limit
    tighter = git_cache.sweep(
        workspace, [o.url for o in origins], limit_bytes=limit // 2, gc_every=DAY
    )
    assert [name for name, _ in tighter.removed] == [mirrors[0].name]
    assert [m.name for m in tighter.mirrors] == [mirrors[2].name]
    # Removed is not lost: the next deploy clones it again.
    again = vcs.mirror_with(
        workspace, origins[1].url, origins[1].git("rev-parse", "HEAD"), access=LOCAL
    )
    assert again == mirrors[1] and again.exists()


def test_each_host_s_cache_shows_in_health_and_the_maintenance_report(
    engine: Engine, settings: Settings, origin: GitRepo, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        make_app(session, origin)
    workspace = settings.workspaces
    kept = vcs.update_mirror(workspace, origin.url, access=LOCAL)
    stray = repo(tmp_path, "stray")
    vcs.update_mirror(workspace, stray.url, access=LOCAL)
    report = git_cache.sweep_host(engine, workspace, "h1", limit_bytes=2**40, gc_every=DAY)
    assert [name for name, _ in report.removed] == [vcs.mirror_path(workspace, stray.url).name]
    size = git_cache.size_of(kept)
    with serve_api(settings, engine, RecordingOrchestrator()) as server:
        anonymous = httpx.get(f"{server.url}/health", timeout=10).json()["gitCache"]
        assert anonymous["h1"]["bytes"] == size and anonymous["h1"]["count"] == 1
        assert "mirrors" not in anonymous["h1"]  # repository names need a key
        limited = server.key("read", apps=["someone-else"])
        seen = httpx.get(
            f"{server.url}/health", headers={"Authorization": f"Key {limited}"}, timeout=10
        ).json()["gitCache"]
        assert "mirrors" not in seen["h1"]
        full = httpx.get(
            f"{server.url}/health",
            headers={"Authorization": "Key s3cr3t-api-key"},
            timeout=10,
        ).json()["gitCache"]
        (mirror,) = full["h1"]["mirrors"]
        assert (mirror["name"], mirror["bytes"]) == (kept.name, size)
        assert mirror["lastUsed"]
    with httpx.Client(timeout=5) as client:
        maintained = housekeeping.run_maintenance(engine, delivery.courier(settings, client), print)
    assert maintained.git_caches == {"h1": [(kept.name, size)]}
    assert git_cache.describe(report, 2**30)[-1] == (
        f"Git cache: 1 mirror(s), {size / 2**20:.1f} MB of 1024 MB"
    )


def test_the_sweep_runs_on_its_schedule_until_stopped(
    engine: Engine, settings: Settings, origin: GitRepo, tmp_path: Path
) -> None:
    with session_scope(engine) as session:
        make_app(session, origin)
    workspace = settings.workspaces
    kept = vcs.update_mirror(workspace, origin.url, access=LOCAL)
    said: list[str] = []
    stop = threading.Event()
    sweeper = threading.Thread(
        target=git_cache.serve,
        args=(engine, workspace, "h2"),
        kwargs={
            "limit_bytes": 2**40,
            "gc_every": DAY,
            "stop": stop,
            "say": said.append,
            "first_after": 0.1,
            "every": 0.3,
        },
    )
    sweeper.start()
    try:
        # A repository no app uses any more appears: the next sweep removes it.
        stray = vcs.update_mirror(workspace, repo(tmp_path, "stray").url, access=LOCAL)
        wait_for(lambda: not stray.exists(), 20, "a sweep to remove the stray mirror")

        def recorded() -> list[str]:
            with session_scope(engine) as session:
                return [m.name for m in mirrors.by_host(session).get("h2", [])]

        wait_for(lambda: recorded() == [kept.name], 20, "the sweep's record")
    finally:
        stop.set()
        sweeper.join(10)
    assert not sweeper.is_alive()
    assert kept.exists()
    assert f"Git cache: removed {stray.name} (no app uses its repository)" in said
