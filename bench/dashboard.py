"""The dashboard under a team's load, through the `make up` topology (the API process with the
Prefect server), on PostgreSQL with a large history:

1. server time of the overview (`GET /`, its part `/partials/overview`) and of a deploy's page;
2. a hundred open dashboards for a while, first as the dashboard used to keep current (each
   fetching the overview every 2 s, as a polling UI such as Prefect's does), then as it does
   now (one event stream each, which brings the new part itself): the API's CPU and memory in
   both, and for the streams the time from a committed change to the new part at each page.

Run by hand:  .venv/bin/python -m bench.dashboard  [--apps 100] [--deploys 100000]
              [--streams 100] [--seconds 60]
Needs the PostgreSQL server of the machine (127.0.0.1:5432); makes and drops its own database.
Prints a markdown report; paste it into BENCHMARKS.md with the command and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import select

from bench.api import ENVS, KEY, admin, percentile, populate, timed
from freight import procs
from freight.db import App, Change, Deploy, make_engine, session_scope
from freight.db.migrate import upgrade
from freight.demo import ensure_demo_repo
from freight.service import locks
from freight.settings import Settings
from freight.stack import Stack, running_stack

POLL_EVERY = 2.0  # what the dashboard did before its streams
CHANGE_EVERY = 3.0


@dataclass
class Usage:
    """CPU seconds and resident memory of the API's processes."""

    pids: set[int]

    def cpu(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / ticks

    def rss_mb(self) -> float:
        kb = 0
        for pid in self.pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
        return kb / 1024


def api_usage(stack: Stack) -> Usage:
    return Usage(procs.descendants({stack.processes["api"].pid}))


def load() -> float:
    return os.getloadavg()[0]


@dataclass
class Changes:
    """Changes committed now and then (a lock taken, then lifted), with when each committed."""

    url: str
    app: str
    made: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        engine = make_engine(self.url)
        held = None
        while not self.stop.wait(CHANGE_EVERY):
            with session_scope(engine) as session:
                if held is None:
                    held = locks.create_lock(
                        session, app=self.app, environment="canary", reason="bench", owner="b"
                    ).id
                else:
                    locks.release_lock(session, locks.get_lock(session, held), by="b")
                    held = None
            self.made.append(time.monotonic())
        engine.dispose()


async def follow(
    base: str, cookies: httpx.Cookies, seen: list[float], ready: asyncio.Event, until: float
) -> None:
    """One open overview: the time each part its stream sends arrives."""
    async with (
        httpx.AsyncClient(base_url=base, cookies=cookies, timeout=None) as client,
        client.stream("GET", "/events") as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "event: hello":
                ready.set()
            elif line == "event: part":
                seen.append(time.monotonic())
            if time.monotonic() > until:
                return


async def streams(base: str, cookies: httpx.Cookies, n: int, seconds: float) -> list[list[float]]:
    until = time.monotonic() + seconds
    seen: list[list[float]] = [[] for _ in range(n)]
    ready = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(follow(base, cookies, seen[i], ready[i], until)) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)
    _, pending = await asyncio.wait(tasks, timeout=seconds + 30)
    for task in pending:
        task.cancel()
    return seen


def pollers(base: str, cookies: httpx.Cookies, n: int, seconds: float) -> int:
    until = time.monotonic() + seconds
    count = 0
    lock = threading.Lock()

    def poll(offset: float) -> None:
        nonlocal count
        with httpx.Client(base_url=base, cookies=cookies, timeout=30) as client:
            time.sleep(offset)
            while time.monotonic() < until:
                assert client.get("/partials/overview").status_code == 200
                with lock:
                    count += 1
                time.sleep(POLL_EVERY)

    threads = [
        threading.Thread(target=poll, args=(POLL_EVERY * i / n,), daemon=True) for i in range(n)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--deploys", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    name = f"freight_bench_{uuid.uuid4().hex[:8]}"
    with admin().cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    home = Path(tempfile.mkdtemp(prefix="freight-bench-dashboard-"))
    home.chmod(0o755)  # the embedded database's own user enters it
    try:
        upgrade(url)
        repo = home / "repo"
        ensure_demo_repo(repo)
        t0 = time.time()
        populate(url, repo, args.apps, args.deploys, args.chunks)
        print(
            f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}, "
            f"{os.cpu_count()} cores, load {load():.2f}; {args.apps} apps x {len(ENVS)} envs, "
            f"{args.deploys} deploys, {args.chunks} log chunks in PostgreSQL "
            f"(loaded in {time.time() - t0:.0f} s)\n",
            flush=True,
        )
        engine = make_engine(url)
        with session_scope(engine, read_only=True) as session:
            some = session.scalars(select(Deploy).join(App).order_by(Deploy.id.desc()).limit(50))
            pages = [f"/deploys/{d.app.name}/{d.environment}/{d.number}" for d in some]
        engine.dispose()
        settings = Settings(
            home=home,
            database_url=url,
            prefect_api_url="http://127.0.0.1:4394/api",
            api_port=5094,
            public_url="http://127.0.0.1:5094",
            api_key=KEY,
            allow_local_repositories=True,
        )
        with running_stack(settings, worker=False) as stack:
            base = stack.api_url
            browser = httpx.Client(base_url=base, timeout=30)
            assert browser.post("/login", data={"key": KEY}).status_code in (200, 303)
            picked = iter(pages * (args.samples // len(pages) + 2))
            print("| page | p50 | p95 | n | target |\n|---|---|---|---|---|")
            for label, call in (
                ("overview (GET /)", lambda: browser.get("/")),
                (
                    "overview part (GET /partials/overview)",
                    lambda: browser.get("/partials/overview"),
                ),
                ("deploy page (GET /deploys/APP/ENV/N)", lambda: browser.get(next(picked))),
            ):
                call()
                values = timed(call, args.samples)
                print(
                    f"| {label} | {statistics.median(values) * 1000:.1f} ms | "
                    f"{percentile(values, 0.95) * 1000:.1f} ms | {args.samples} | p50 ≤ 50 ms |",
                    flush=True,
                )
            # The first view after a change builds the overview again; the others share it.
            writer = make_engine(url)
            cold = []
            for _ in range(30):
                with session_scope(writer) as session:
                    session.add(Change(deploy_id=None, log_only=False))
                time.sleep(1.0)  # the API's reader of changes has seen it: the next view builds
                t0 = time.perf_counter()
                assert browser.get("/partials/overview").status_code == 200
                cold.append(time.perf_counter() - t0)
            writer.dispose()
            print(
                f"| overview part, first view after a change | "
                f"{statistics.median(cold) * 1000:.1f} ms | {percentile(cold, 0.95) * 1000:.1f} ms "
                f"| {len(cold)} | p50 ≤ 50 ms |",
                flush=True,
            )
            cookies = browser.cookies
            usage = api_usage(stack)
            print(
                f"\n{args.streams} open dashboards for {args.seconds:.0f} s, a change committed "
                f"every {CHANGE_EVERY:.0f} s:\n\n| kept current by | API CPU | API memory (RSS) | "
                "requests | load |\n|---|---|---|---|---|"
            )
            cpu0, rss0 = usage.cpu(), usage.rss_mb()
            polled = pollers(base, cookies, args.streams, args.seconds)
            cpu1, rss1 = usage.cpu(), usage.rss_mb()
            print(
                f"| polling every {POLL_EVERY:.0f} s (before) | "
                f"{100 * (cpu1 - cpu0) / args.seconds:.0f} % of a core | {rss1:.0f} MB "
                f"(from {rss0:.0f}) | {polled} | {load():.2f} |",
                flush=True,
            )
            app = f"app{0:03d}"
            changes = Changes(url, app)
            changer = threading.Thread(target=changes.run, daemon=True)
            cpu0, rss0 = usage.cpu(), usage.rss_mb()
            changer.start()
            streams_end = time.monotonic() + args.seconds
            seen = asyncio.run(streams(base, cookies, args.streams, args.seconds))
            changes.stop.set()
            changer.join()
            cpu1, rss1 = usage.cpu(), usage.rss_mb()
            print(
                f"| one event stream each (now) | {100 * (cpu1 - cpu0) / args.seconds:.0f} % of a "
                f"core | {rss1:.0f} MB (from {rss0:.0f}) | {args.streams} | {load():.2f} |",
                flush=True,
            )
            # Changes made in the streams' last seconds may arrive after they closed.
            counted = [t for t in changes.made if t < streams_end - 2]
            delays = []
            for arrivals in seen:
                for made in counted:
                    after = [t - made for t in arrivals if t >= made]
                    if after:
                        delays.append(min(after))
            missed = len(counted) * args.streams - len(delays)
            print(
                f"\nUpdate latency, commit → the page's new part arrived in its stream: p50 "
                f"{statistics.median(delays) * 1000:.0f} ms, p95 "
                f"{percentile(delays, 0.95) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms over "
                f"{len(delays)} (change, page) pairs, {missed} missed (target p95 ≤ 1 s).",
                flush=True,
            )
            browser.close()
    finally:
        with admin().cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
