"""Machines' agents at scale: a thousand simulated `freight agent`s checking in with one API
process, what their history costs the database, and pull deploys to tens and a hundred of them
through `freight up`'s whole stack.

Run by hand, from the project root:
    .venv/bin/python -m bench.machines [--machines 1000] [--seconds 25] [--floor 20]
        [--long-poll 15] [--changes-per-day 3] [--rollout 20,100] [--rollouts 1]

Needs the PostgreSQL server of the machine (127.0.0.1:5432, trust auth); makes and drops its own
database. Waits for a load average under 1.5 first. Each simulated machine reports two of ten
apps. Prints markdown for BENCHMARKS.md:
- check-ins with `wait: 0` (so that their time is the server's work), each machine every 15 s,
  spread evenly, from a quarter, half, then all of the machines: latency p50/p95/p99 and the
  CPU of the API process (`python -m freight.api`, as `freight up` starts it; check-ins never
  reach Prefect, so none runs), of the PostgreSQL server, of this generator and of the whole
  machine; before them the floor, the same load on a trivial FastAPI route under uvicorn; then
  a round in which every version changes;
- half, then all of the machines holding long polls (`wait: 15`, what `freight agent` sends);
- database growth per check-in that changes nothing and per version change; history per day at
  an assumed change rate, and the table at the retention (FREIGHT_MACHINE_HISTORY_DAYS), built
  in SQL and swept by the maintenance flow's own `forget_history`, timed;
- pull deploys to each `--rollout` number of simulated machines (long polling; a run takes 1 s
  and prints 10 lines, reported as `freight agent` does), triggered by POST /deploys/: ->
  order published, -> first and last order received, -> all reported success, -> the
  provider's last line, -> the deploy finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine, func, select, text

from bench.api import admin
from bench.engine import KEY, free_port, git_repo, percentile, wait_for
from freight.catalogue import AppSpec
from freight.db import (
    App,
    AppSource,
    Deploy,
    DeployStatus,
    LogChunk,
    PullOrder,
    User,
    make_engine,
    session_scope,
    utcnow,
)
from freight.db.migrate import upgrade
from freight.service import apps, keys, machines, releases
from freight.settings import Settings
from freight.stack import PROJECT_ROOT, running_stack

# Seconds between one agent's check-ins: `freight agent`'s default interval.
INTERVAL = 15.0
ENV = "production"
SERVICES = [f"svc{i:02d}" for i in range(10)]
# App/environments each of the thousand machines reports (services k and k+1).
PLACES = 2
CHECKIN = "/machines/checkin/"
TABLES = ("machine", "machine_app", "machine_version", "machine_event")
QUIET_LOAD = 1.5
CLOCK = os.sysconf("SC_CLK_TCK")
# A simulated run of a pull deploy: its command's length and lines, and how often `freight
# agent` sends what it printed.
RUN_SECONDS = 1.0
RUN_LINES = 10
SEND_EVERY = 0.25
AGENT_VERSION = package_version("freight")


# -- the machine ----------------------------------------------------------------------------------


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def wait_quiet(patience: float) -> str:
    """Wait (up to `patience` seconds) for the 1-minute load to drop under QUIET_LOAD: someone
    else's tests would be measured too. The load average it ended at."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] > QUIET_LOAD and time.monotonic() < deadline:
        print(f"(waiting for a quiet machine: load {loadavg()})", flush=True)
        time.sleep(15)
    return loadavg()


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of each process of the PostgreSQL server; the postmaster's also counts its
    ended children (a backend ends when the API's pool closes an overflow connection)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                head, rest = (entry / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue  # ended meanwhile
            if head.endswith("(postgres"):
                stats[int(entry.name)] = rest.split()
    found = {}
    for pid, fields in stats.items():
        ticks = int(fields[11]) + int(fields[12])
        if int(fields[1]) not in stats:  # the postmaster: add its children's
            ticks += int(fields[13]) + int(fields[14])
        found[pid] = ticks / CLOCK
    return found


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (guest time is already within user)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks) - idle - iowait) / CLOCK


@dataclass(frozen=True)
class Reading:
    wall: float
    server: float
    postgres: dict[int, float]
    generator: float
    machine: float
    sessions: int


@dataclass(frozen=True)
class Usage:
    """CPU over a period, in cores (CPU seconds per second of wall time)."""

    seconds: float
    server: float
    postgres: float
    generator: float
    machine: float
    # New PostgreSQL sessions on the database per second: a pool that closes and opens
    # connections makes PostgreSQL start a backend for each.
    sessions: float


class Meter:
    """CPU of the server process, of PostgreSQL's server, of this process (the load generator)
    and of the whole machine, from /proc; sessions opened on the server's database."""

    def __init__(self, server_pid: int, engine: Engine | None = None) -> None:
        self.server_pid = server_pid
        self.engine = engine

    def read(self) -> Reading:
        sessions = 0
        if self.engine is not None:
            with self.engine.connect() as connection:
                sessions = int(
                    connection.scalar(
                        text(
                            "SELECT sessions FROM pg_stat_database "
                            "WHERE datname = current_database()"
                        )
                    )
                )
        return Reading(
            time.monotonic(),
            cpu_of(self.server_pid),
            postgres_cpu(),
            time.process_time(),
            machine_busy(),
            sessions,
        )

    def since(self, start: Reading) -> Usage:
        now = self.read()
        seconds = now.wall - start.wall
        postgres = sum(cpu - start.postgres.get(pid, 0.0) for pid, cpu in now.postgres.items())
        return Usage(
            seconds,
            (now.server - start.server) / seconds,
            postgres / seconds,
            (now.generator - start.generator) / seconds,
            (now.machine - start.machine) / seconds,
            (now.sessions - start.sessions) / seconds,
        )


# -- the servers ----------------------------------------------------------------------------------


def floor_app() -> FastAPI:
    """The floor: a FastAPI route that takes the check-in's JSON and answers it at once."""
    app = FastAPI()

    @app.post(f"/api/0{CHECKIN}")
    async def check_in(body: dict[str, Any]) -> dict[str, Any]:
        return {"apps": [], "orders": [], "cancel": [], "refused": []}

    return app


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


@contextmanager
def serving(argv: list[str], env: dict[str, str], log: Path, port: int) -> Iterator[int]:
    """A server process on this port until the block ends; its pid."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/"), 60, f"{argv} to listen")
        yield process.pid
    finally:
        process.terminate()
        process.wait(30)


def server_env(home: Path, url: str, port: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FREIGHT_", "PREFECT_"))},
        "FREIGHT_HOME": str(home),
        "FREIGHT_DATABASE_URL": url,
        "FREIGHT_API_PORT": str(port),
        "FREIGHT_API_KEY": KEY,
        # Check-ins never reach Prefect: nothing listens there (without a URL at all, Prefect's
        # client would start a server of its own in the API process).
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "PREFECT_HOME": str(home / "prefect"),
    }


# -- the database ---------------------------------------------------------------------------------


def add_app(engine: Engine, name: str, repo: Path) -> None:
    spec = AppSpec.model_validate(
        {
            "name": name,
            "repository": str(repo),
            "provider": {"type": "pull"},
            "environments": {ENV: {"default_ref": "main"}},
        }
    )
    with session_scope(engine) as session:
        apps.save_app(session, spec, source=AppSource.API)


def release(engine: Engine, sha: str) -> None:
    """A finished pull deploy of every service at `sha`, live now: what their machines run."""
    now = utcnow()
    with session_scope(engine) as session:
        user_id = session.scalar(select(User.id).where(User.name == "bench"))
        for app in session.scalars(select(App).where(App.name.in_(SERVICES))):
            number = session.scalar(select(func.count()).where(Deploy.app_id == app.id)) + 1
            deploy = Deploy(
                app_id=app.id,
                environment=ENV,
                number=number,
                ref="main",
                sha=sha,
                status=DeployStatus.FINISHED,
                user_id=user_id,
                params={},
                config={},
                date_created=now,
                date_started=now,
                date_finished=now,
            )
            session.add(deploy)
            session.flush()
            session.add(
                PullOrder(
                    deploy_id=deploy.id,
                    app_id=app.id,
                    environment=ENV,
                    sha=sha,
                    machines=[],
                    need=0,
                    date_created=now,
                )
            )
            releases.record_finished(session, deploy)


def sizes(engine: Engine) -> dict[str, tuple[int, int]]:
    """Per table: bytes with its indexes and TOAST, and rows."""
    with engine.connect() as connection:
        return {
            table: (
                int(connection.scalar(text(f"SELECT pg_total_relation_size('{table}')"))),
                int(connection.scalar(text(f"SELECT count(*) FROM {table}"))),
            )
            for table in TABLES
        }


def table_stats(engine: Engine, table: str) -> dict[str, int]:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count "
                "FROM pg_stat_user_tables WHERE relname = :table"
            ),
            {"table": table},
        ).one()
    return dict(row._mapping)


def kb(n: float) -> str:
    return f"{n / 1024:,.0f} kB" if abs(n) < 10 * 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


# -- the agents -----------------------------------------------------------------------------------


class Client:
    """A minimal HTTP/1.1 client for JSON posts to one server on loopback, its connections
    kept a while: httpx's async client cost this generator 0.9 ms of CPU a request and added
    as much to each latency it measured, more than the floor's whole answer (0.08 ms here)."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        payload = json.dumps(body).encode()
        request = (
            f"POST /api/0{path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Key {self.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        while True:
            reused, reader, writer = await self._connection()
            writer.write(request)
            try:
                status = await reader.readline()
            except ConnectionResetError:
                status = b""
            if status or not reused:
                break
            writer.close()  # the server closed it as it idled: again, on a new one
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = json.loads(await reader.readexactly(length))
        self.idle.append((time.monotonic(), reader, writer))
        return int(status.split()[1]), answer

    async def _connection(self) -> tuple[bool, asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            used, reader, writer = self.idle.pop()
            # uvicorn closes a connection idle for 5 s: one that old may be closing now.
            if time.monotonic() - used < 4 and not reader.at_eof():
                return True, reader, writer
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.opened.append(writer)
        return False, reader, writer

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


@dataclass
class Herd:
    """The thousand machines: machine k runs services k and k+1, at the version live there."""

    names: list[str]
    versions: dict[str, str]

    def body(self, k: int, wait: float) -> dict[str, Any]:
        return {
            "name": self.names[k],
            "labels": {"role": "web", "rack": f"r{k % 20:02d}"},
            "agentVersion": AGENT_VERSION,
            "interval": INTERVAL,
            "apps": [
                {
                    "app": service,
                    "env": ENV,
                    "version": self.versions[service],
                    "deploy": True,
                }
                for service in (SERVICES[(k + i) % len(SERVICES)] for i in range(PLACES))
            ],
            "wait": wait,
        }


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    # Answers other than a 200 with nothing to do.
    unexpected: list[str] = field(default_factory=list)

    def check(self, status: int, answer: Any) -> None:
        if status != 200 or any(answer.get(k) for k in ("orders", "cancel", "refused")):
            self.unexpected.append(f"{status}: {str(answer)[:200]}")


async def register(client: Client, herd: Herd) -> None:
    """Every machine's first check-in (its rows are made), twenty at a time."""
    gate = asyncio.Semaphore(20)
    tally = Tally()

    async def one(k: int) -> None:
        async with gate:
            tally.check(*await client.post(CHECKIN, herd.body(k, 0)))

    await asyncio.gather(*(one(k) for k in range(len(herd.names))))
    assert not tally.unexpected, tally.unexpected[:3]


async def paced(
    client: Client, herd: Herd, count: int, seconds: float, interval: float = INTERVAL
) -> Tally:
    """The first `count` machines each check in every `interval` with `wait: 0`, spread evenly
    over it, for `seconds`; the time of each answer as this client saw it."""
    tally = Tally()
    start = time.monotonic() + 0.2
    end = start + seconds

    async def machine(k: int) -> None:
        due = start + k * interval / count
        while due < end:
            await asyncio.sleep(due - time.monotonic())
            began = time.perf_counter()
            status, answer = await client.post(CHECKIN, herd.body(k, 0))
            tally.seconds.append(time.perf_counter() - began)
            tally.check(status, answer)
            due += interval

    await asyncio.gather(*(machine(k) for k in range(count)))
    return tally


async def long_polls(
    client: Client, herd: Herd, count: int, seconds: float, meter: Meter
) -> tuple[Usage, Tally]:
    """The first `count` machines as `freight agent` runs: a check-in held up to INTERVAL
    (nothing to do, so held all of it), then the next at once, the machines spread evenly.
    CPU is measured once every machine holds one, for `seconds`."""
    tally = Tally()
    start = time.monotonic() + 0.2

    async def machine(k: int) -> None:
        await asyncio.sleep(start + k * INTERVAL / count - time.monotonic())
        while True:
            began = time.perf_counter()
            status, answer = await client.post(CHECKIN, herd.body(k, INTERVAL))
            tally.seconds.append(time.perf_counter() - began)
            tally.check(status, answer)

    tasks = [asyncio.create_task(machine(k)) for k in range(count)]
    await asyncio.sleep(start + INTERVAL - time.monotonic())
    before, reading = len(tally.seconds), meter.read()
    await asyncio.sleep(seconds)
    usage = meter.since(reading)
    done = Tally(tally.seconds[before:], tally.unexpected)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return usage, done


# -- a pull deploy --------------------------------------------------------------------------------


class PullAgents:
    """`freight agent` on each machine of the pull app, as the server sees it (its Agent.serve
    and Run._send_loop): one long poll at a time; an order run at once, RUN_LINES lines over
    RUN_SECONDS, a report every SEND_EVERY after the last one was answered when there are new
    lines (and `running` once, at the start), the status with the last lines, then a check-in
    with the new version. A 5xx answer is tried again after 1 s, doubling up to 30 s, the lines
    kept."""

    def __init__(self, client: Client, app: str, names: list[str], sha: str) -> None:
        self.client = client
        self.app = app
        self.versions = dict.fromkeys(names, sha)
        # deploy id -> machine -> when (time.time()) its order came, and its success was taken
        self.ordered: dict[int, dict[str, float]] = defaultdict(dict)
        self.succeeded: dict[int, dict[str, float]] = defaultdict(dict)
        self.failed_answers: list[str] = []  # 5xx, tried again
        self.unexpected: list[str] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        delay = 1.0
        while True:
            status, answer = await self.client.post(path, body)
            if status < 500:
                if status != 200:
                    self.unexpected.append(f"{path} {status}: {str(answer)[:200]}")
                return status, answer
            self.failed_answers.append(f"{path} {status}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2 * INTERVAL)

    async def check_in(self, name: str, wait: float) -> dict[str, Any]:
        body = {
            "name": name,
            "labels": {"role": "fleet"},
            "agentVersion": AGENT_VERSION,
            "interval": INTERVAL,
            "apps": [{"app": self.app, "env": ENV, "version": self.versions[name], "deploy": True}],
            "wait": wait,
        }
        return dict((await self.post(CHECKIN, body))[1])

    async def serve(self, name: str) -> None:
        while True:
            answer = await self.check_in(name, INTERVAL)
            for order in answer.get("orders", []):
                deploy_id = int(order["deploy"])
                self.ordered[deploy_id][name] = time.time()
                await self.run(name, deploy_id)
                self.versions[name] = order["sha"]

    async def run(self, name: str, deploy_id: int) -> None:
        path = f"/machines/{name}/runs/{deploy_id}/"
        began = time.monotonic()
        sent = 0
        announced = False
        while True:
            elapsed = time.monotonic() - began
            done = elapsed >= RUN_SECONDS
            printed = min(RUN_LINES, int(elapsed * RUN_LINES / RUN_SECONDS))
            body: dict[str, Any] = {
                "from": sent,
                "lines": [f"line {i + 1} of {RUN_LINES}" for i in range(sent, printed)],
            }
            if done:
                body["status"], body["message"] = "succeeded", None
            elif printed == sent:
                if announced:
                    await asyncio.sleep(SEND_EVERY)
                    continue
                body["status"] = "running"
            status, answer = await self.post(path, body)
            announced = True
            if status != 200:
                return
            sent = int(answer["lines"])
            if done and sent >= RUN_LINES:
                self.succeeded[deploy_id][name] = time.time()
                return
            await asyncio.sleep(SEND_EVERY)

    def all_at(self, sha: str) -> bool:
        return all(version == sha for version in self.versions.values())


def commit(repo: Path, message: str) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("commit", "-q", "--allow-empty", "-m", message)
    return git("rev-parse", "HEAD")


def finished(engine: Engine, deploy_id: int, timeout: float) -> Deploy:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(engine, read_only=True) as session:
            deploy = session.get_one(Deploy, deploy_id)
            if DeployStatus(deploy.status).is_final:
                return deploy
        if time.monotonic() > deadline:
            raise TimeoutError(f"deploy {deploy_id} still {deploy.status}")
        time.sleep(0.2)


def milestones(engine: Engine, deploy_id: int) -> dict[str, float]:
    """When (time.time()) the runner published the order, wrote the provider's last line, and
    recorded the deploy finished (the same clock: one machine)."""
    with session_scope(engine, read_only=True) as session:
        deploy = session.get_one(Deploy, deploy_id)
        order = session.get_one(PullOrder, deploy_id)
        last_line = session.scalar(
            select(func.max(LogChunk.date_created)).where(
                LogChunk.deploy_id == deploy_id, LogChunk.text.like("%machine(s) deployed it%")
            )
        )
        assert deploy.date_finished is not None and last_line is not None
        return {
            "published": order.date_created.timestamp(),
            "provider": last_line.timestamp(),
            "finished": deploy.date_finished.timestamp(),
        }


def fleet_app(size: int) -> str:
    return f"fleet{size}"


async def rollouts(
    port: int, api_pid: int, agent_key: str, engine: Engine, repo: Path, size: int, count: int
) -> list[dict[str, float]]:
    """`count` pull deploys, one after the other, of an app that `size` machines run."""
    app = fleet_app(size)
    names = [f"{app}-{k:03d}" for k in range(size)]
    sha = commit(repo, "the version the machines run")
    client, user = Client(port, agent_key), Client(port, KEY)
    agents = PullAgents(client, app, names, sha)
    for name in names:  # known to Freight before the deploy counts its machines
        await agents.check_in(name, 0)
    serving = [asyncio.create_task(agents.serve(name)) for name in names]
    meter = Meter(api_pid)
    rows = []
    try:
        # The stack has just started (or the last size's runs just ended): let it settle.
        await asyncio.sleep(10)
        for number in range(1, count + 1):
            load = os.getloadavg()[0]
            failed_before = len(agents.failed_answers)
            sha = commit(repo, f"rollout {number}")
            reading = meter.read()
            trigger = time.time()
            status, answer = await user.post(
                "/deploys/", {"app": app, "env": ENV, "ref": "main", "user": "bench"}
            )
            created = time.time()
            assert status == 201, answer
            deploy_id = int(answer["id"])
            deploy = await asyncio.to_thread(finished, engine, deploy_id, 300)
            usage = meter.since(reading)
            assert deploy.status == DeployStatus.FINISHED, deploy.reason
            while not agents.all_at(sha):
                await asyncio.sleep(0.1)
            marks = milestones(engine, deploy_id)
            ordered = agents.ordered[deploy_id].values()
            assert len(agents.succeeded[deploy_id]) == len(names)
            rows.append(
                {
                    "machines": size,
                    "load": load,
                    "created (POST answered)": created - trigger,
                    "order published": marks["published"] - trigger,
                    "first order received": min(ordered) - trigger,
                    "last order received": max(ordered) - trigger,
                    "all reported success": max(agents.succeeded[deploy_id].values()) - trigger,
                    "provider's last line": marks["provider"] - trigger,
                    "deploy finished": marks["finished"] - trigger,
                    "api": usage.server,
                    "failed": len(agents.failed_answers) - failed_before,
                }
            )
            print(f"(rollout {number}: {rows[-1]})", flush=True)
            await asyncio.sleep(5)  # the run's ending (Prefect's states, notices) is over
    finally:
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        client.close()
        user.close()
    assert not agents.unexpected, agents.unexpected[:3]
    return rows


# -- the report -----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def cpu(cores: float, rate: float) -> str:
    return f"{cores:.2f} ({cores / rate * 1000:.1f} ms)"


def latency_row(label: str, tally: Tally, usage: Usage, floor: float) -> str:
    values = tally.seconds
    rate = len(values) / usage.seconds
    p50 = statistics.median(values)
    return (
        f"| {label} | {rate:.1f} | {ms(p50)} | {ms(percentile(values, 0.95))} | "
        f"{ms(percentile(values, 0.99))} | {ms(max(values))} | {cpu(usage.server, rate)} | "
        f"{cpu(usage.postgres, rate)} | {cpu(usage.generator, rate)} | {usage.machine:.2f} | "
        f"{usage.sessions:.1f} | {p50 / floor:.1f} | {len(tally.unexpected)} |"
    )


def growth_row(
    label: str, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> str:
    cells = [
        f"{kb(after[t][0] - before[t][0])}, {after[t][1] - before[t][1]:+,} rows" for t in TABLES
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument(
        "--seconds", type=float, default=25, help="of check-ins (wait 0) per step of machines"
    )
    parser.add_argument("--floor", type=float, default=20, help="seconds on the trivial route")
    parser.add_argument(
        "--long-poll", type=float, default=15, help="seconds of long polls, per step"
    )
    parser.add_argument("--changes-per-day", type=float, default=3, help="of each app's version")
    parser.add_argument(
        "--rollout",
        type=lambda text: [int(size) for size in text.split(",")],
        default=[20, 100],
        help="machines of the pull deploys, for each size",
    )
    parser.add_argument("--rollouts", type=int, default=1, help="pull deploys of each size")
    parser.add_argument(
        "--patience", type=float, default=3600, help="seconds to wait for a quiet machine"
    )
    args = parser.parse_args()

    started = loadavg()
    quiet = wait_quiet(args.patience)
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    print(
        f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}: "
        f"{os.cpu_count()} cores, {memory:.0f} GB, Python {platform.python_version()}; load "
        f"(1/5/15 min) {started} when started, {quiet} when it began",
        flush=True,
    )
    name = f"freight_bench_{uuid.uuid4().hex[:8]}"
    with admin().cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    home = Path(tempfile.mkdtemp(prefix="freight-bench-machines-"))
    home.chmod(0o711)  # the stack's embedded PostgreSQL runs as its own user, under it
    try:
        upgrade(url)
        engine = make_engine(url)
        repo = home / "repo"
        sha = git_repo(repo)
        for app in (*SERVICES, *map(fleet_app, args.rollout)):
            add_app(engine, app, repo)
        with session_scope(engine) as session:
            session.add(User(name="bench"))
        release(engine, sha)
        with session_scope(engine) as session:
            agent_key = keys.create_key(session, name="agents", scopes=["agent"])[1]
        herd = Herd([f"m{k:04d}" for k in range(args.machines)], dict.fromkeys(SERVICES, sha))
        history_days = Settings.model_fields["machine_history_days"].default
        asyncio.run(check_ins(args, herd, home, url, engine, agent_key, history_days))
        retention(engine, args, history_days)
        with engine.begin() as connection:  # the thousand are not the pull deploy's machines
            connection.execute(text("TRUNCATE machine CASCADE"))
        pull_deploy(args, home, url, engine, repo, agent_key)
        engine.dispose()
    finally:
        with admin().cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)
    print(f"\nLoad (1/5/15 min) at the end: {loadavg()}", flush=True)


async def check_ins(
    args: argparse.Namespace,
    herd: Herd,
    home: Path,
    url: str,
    engine: Engine,
    agent_key: str,
    history_days: float,
) -> None:
    n = len(herd.names)
    port, floor_port = free_port(), free_port()
    api = [sys.executable, "-m", "freight.api"]
    floor = [
        sys.executable, "-m", "uvicorn", "--factory", "bench.machines:floor_app",
        "--host", "127.0.0.1", "--port", str(floor_port), "--log-level", "info",
    ]  # fmt: skip
    client, floor_client = Client(port, agent_key), Client(floor_port, agent_key)
    try:
        with serving(floor, dict(os.environ), home / "floor.log", floor_port) as floor_pid:
            floor_meter = Meter(floor_pid)
            reading = floor_meter.read()
            base = await paced(floor_client, herd, n, args.floor)
            floor_usage = floor_meter.since(reading)
        floor_p50 = statistics.median(base.seconds)
        rows = [latency_row(f"{n}: trivial FastAPI route (floor)", base, floor_usage, floor_p50)]
        print(rows[-1], flush=True)

        with serving(api, server_env(home, url, port), home / "api.log", port) as pid:
            meter = Meter(pid, engine)
            empty = sizes(engine)
            await register(client, herd)
            registered = sizes(engine)
            machine_before = table_stats(engine, "machine")
            steady: list[float] = []
            for count in (n // 4, n // 2, n):
                load = loadavg()
                reading = meter.read()
                tally = await paced(client, herd, count, args.seconds)
                usage = meter.since(reading)
                steady += tally.seconds
                label = f"{count}: Freight (load {load} -> {loadavg()})"
                rows.append(latency_row(label, tally, usage, floor_p50))
                print(rows[-1], flush=True)
            after_steady = sizes(engine)
            machine_after = table_stats(engine, "machine")

            # Every service's new version is live; each machine reports it at its next check-in,
            # over two intervals (the API keeps up with half the load).
            new = uuid.uuid4().hex + "0" * 8
            release(engine, new)
            herd.versions = dict.fromkeys(SERVICES, new)
            reading = meter.read()
            changed = await paced(client, herd, n, 2 * INTERVAL, 2 * INTERVAL)
            label = f"{n} every {2 * INTERVAL:g} s: Freight, every version changed"
            rows.append(latency_row(label, changed, meter.since(reading), floor_p50))
            print(rows[-1], flush=True)
            after_change = sizes(engine)

            held = [
                (count, *await long_polls(client, herd, count, args.long_poll, meter))
                for count in (n // 2, n)
            ]
    finally:
        client.close()
        floor_client.close()

    print(f"\n### Check-ins, `wait: 0`, each machine every {INTERVAL:g} s\n")
    print(
        "| machines | answered/s | p50 | p95 | p99 | max | server CPU, cores (per check-in) | "
        "PostgreSQL server | generator | whole machine, cores | new DB sessions/s | "
        "p50 / floor p50 | unexpected answers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(
        f"\n### Long polls (`wait: {INTERVAL:g}`, as `freight agent` sends), over "
        f"{args.long_poll:g} s once every machine holds one\n"
    )
    print(
        "| machines | answered/s | if each held 15 s | held p50 | held max | API CPU, cores "
        "(per check-in) | PostgreSQL server | generator | whole machine | new DB sessions/s | "
        "unexpected answers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for count, usage, tally in held:
        rate = len(tally.seconds) / usage.seconds
        print(
            f"| {count} | {rate:.1f} | {count / INTERVAL:.1f} | "
            f"{statistics.median(tally.seconds):.2f} s | {max(tally.seconds):.2f} s | "
            f"{cpu(usage.server, rate)} | {cpu(usage.postgres, rate)} | "
            f"{cpu(usage.generator, rate)} | {usage.machine:.2f} | {usage.sessions:.1f} | "
            f"{len(tally.unexpected)} |",
            flush=True,
        )

    changes = after_change["machine_version"][1] - after_steady["machine_version"][1]
    change_bytes = sum(after_change[t][0] - after_steady[t][0] for t in TABLES)
    steady_bytes = sum(after_steady[t][0] - registered[t][0] for t in TABLES)
    print("\n### Database growth (bytes with indexes and TOAST, rows)\n")
    print("| | " + " | ".join(TABLES) + " |\n|---|" + "---|" * len(TABLES))
    print(growth_row(f"{n} machines' first check-ins", empty, registered))
    print(growth_row(f"{len(steady):,} check-ins, no version changed", registered, after_steady))
    print(growth_row(f"{changes:,} version changes ({n} check-ins)", after_steady, after_change))
    per_day = n * PLACES * args.changes_per_day
    per_change = change_bytes / changes
    print(
        f"\nNo change: {kb(steady_bytes)} over {len(steady):,} check-ins. `machine`: "
        f"{machine_after['n_tup_upd'] - machine_before['n_tup_upd']:,} updates, "
        f"{machine_after['n_tup_hot_upd'] - machine_before['n_tup_hot_upd']:,} of them HOT, "
        f"{machine_after['n_dead_tup']:,} dead rows at the end, autovacuum ran "
        f"{machine_after['autovacuum_count'] - machine_before['autovacuum_count']} time(s).\n"
        f"A version change: {per_change:.0f} bytes (the four tables). At "
        f"{args.changes_per_day:g} changes a day of each of the {n * PLACES:,} app/environments "
        f"({per_day:,.0f} rows a day): {kb(per_day * per_change)} a day; "
        f"FREIGHT_MACHINE_HISTORY_DAYS={history_days:g} keeps "
        f"{kb(history_days * per_day * per_change)}.",
        flush=True,
    )


def retention(engine: Engine, args: argparse.Namespace, history_days: float) -> None:
    """The history at steady state, built in SQL (each app/environment of each machine changed
    `changes_per_day` a day, for one day more than is kept), then swept by the maintenance
    flow's own delete: the first sweep drops the extra day, the next (20 s later, in
    production) finds nothing."""
    per_place = round(args.changes_per_day * (history_days + 1))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO machine_version (machine_id, app_id, environment, version, "
                "date_created) SELECT p.machine_id, p.app_id, p.environment, "
                "md5(p.id::text || '/' || g::text) || substr(md5(g::text), 1, 8), "
                "now() - make_interval(secs => g * 86400.0 / :per_day) "
                "FROM machine_app p, generate_series(:count, 1, -1) g ORDER BY g DESC, p.id"
            ),
            {"per_day": args.changes_per_day, "count": per_place},
        )
        connection.execute(text("ANALYZE machine_version"))
    size, count = sizes(engine)["machine_version"]
    sweeps = []
    for _ in range(2):
        began = time.perf_counter()
        with session_scope(engine) as session:
            dropped = machines.forget_history(
                session, older_than=utcnow() - timedelta(days=history_days)
            )
        sweeps.append((time.perf_counter() - began, dropped))
    print("\n### Retention\n")
    print(
        f"machine_version with {count:,} rows ({per_place} per app/environment of each machine: "
        f"{args.changes_per_day:g} a day for {history_days:g} + 1 days): {kb(size)}, "
        f"{size / count:.0f} bytes a row. `forget_history` (the maintenance flow's, every "
        f"20 s): {sweeps[0][0] * 1000:.0f} ms dropping {sweeps[0][1]:,} rows, then "
        f"{sweeps[1][0] * 1000:.0f} ms dropping {sweeps[1][1]:,}.",
        flush=True,
    )


def pull_deploy(
    args: argparse.Namespace, home: Path, url: str, engine: Engine, repo: Path, agent_key: str
) -> None:
    api_port = free_port()
    settings = Settings(
        home=home / "stack",
        database_url=url,
        db_port=free_port(),
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        api_port=api_port,
        public_url=f"http://127.0.0.1:{api_port}",
        api_key=KEY,
        allow_local_repositories=True,
    )
    began = time.monotonic()
    rows = []
    with running_stack(settings) as stack:
        print(f"\n(the stack started in {time.monotonic() - began:.0f} s)", flush=True)
        api_pid = stack.processes["api"].pid
        for size in args.rollout:
            rows += asyncio.run(
                rollouts(api_port, api_pid, agent_key, engine, repo, size, args.rollouts)
            )
    marks = [k for k in rows[0] if k not in ("machines", "load", "api", "failed")]
    with engine.connect() as connection:
        output = connection.execute(
            text("SELECT pg_total_relation_size('machine_output'), count(*) FROM machine_output")
        ).one()
    print("\n### Pull deploys on `freight up`'s stack, from the trigger\n")
    print(
        "| machines | load (1 min) | "
        + " | ".join(marks)
        + " | API CPU, cores | 5xx answers (tried again) |"
    )
    print("|---|---|" + "---|" * (len(marks) + 2))
    for row in rows:
        times = " | ".join(f"{row[k]:.2f} s" for k in marks)
        print(
            f"| {row['machines']:.0f} | {row['load']:.2f} | {times} | {row['api']:.2f} | "
            f"{row['failed']:.0f} |",
            flush=True,
        )
    print(
        f"\nmachine_output after these deploys: {output[1]:,} lines, {kb(output[0])} (the "
        "maintenance flow drops them an hour after their deploy finished)",
        flush=True,
    )


if __name__ == "__main__":
    main()
