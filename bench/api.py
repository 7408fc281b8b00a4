"""API latency and throughput on PostgreSQL with a large history, through the `make up`
topology (the API process, Prefect server and worker), as clients see it over HTTP.

Run by hand:  .venv/bin/python bench/api.py  [--apps 100] [--deploys 100000] [--chunks 1000000]
Needs the PostgreSQL server of the machine (127.0.0.1:5432); makes and drops its own database.
Prints a markdown report; paste it into BENCHMARKS.md with the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg2
from sqlalchemy import insert, select

from freight.catalogue import AppSpec
from freight.db import App, AppSource, Deploy, LogChunk, User, make_engine, session_scope
from freight.db.migrate import upgrade
from freight.demo import ensure_demo_repo
from freight.service import apps, releases
from freight.settings import Settings
from freight.stack import running_stack

ENVS = ("staging", "production", "canary")
KEY = "bench-admin-key"


def admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn


def populate(url: str, repo: Path, n_apps: int, n_deploys: int, n_chunks: int) -> None:
    engine = make_engine(url)
    with session_scope(engine) as session:
        for i in range(n_apps):
            spec = AppSpec.model_validate(
                {
                    "name": f"app{i:03d}",
                    "repository": str(repo),
                    "provider": {"type": "shell", "command": "true"},
                    "environments": {env: {"default_ref": "main"} for env in ENVS},
                }
            )
            apps.save_app(session, spec, source=AppSource.API)
        session.add(User(name="bench"))
    with session_scope(engine) as session:
        app_ids = list(session.scalars(select(App.id)))
        user_id = session.scalar(select(User.id))
    rng = random.Random(7)
    start = datetime.now(UTC) - timedelta(days=365)
    numbers: dict[tuple[int, str], int] = {}
    batch: list[dict[str, object]] = []
    for i in range(n_deploys):
        app_id, env = rng.choice(app_ids), rng.choice(ENVS)
        numbers[(app_id, env)] = number = numbers.get((app_id, env), 0) + 1
        started = start + timedelta(seconds=i * 365 * 86400 / n_deploys)
        batch.append(
            {
                "app_id": app_id,
                "environment": env,
                "number": number,
                "ref": "main",
                "sha": uuid.uuid4().hex + "00000000",
                "status": rng.choice(("finished",) * 8 + ("failed", "cancelled")),
                "user_id": user_id,
                "params": {},
                "force": False,
                "config": {},
                "date_created": started,
                "date_started": started,
                "date_finished": started + timedelta(seconds=rng.randint(20, 600)),
                "log_size": 0,
            }
        )
        if len(batch) == 10_000:
            with session_scope(engine) as session:
                session.execute(insert(Deploy), batch)
            batch = []
    if batch:
        with session_scope(engine) as session:
            session.execute(insert(Deploy), batch)
    per_deploy = max(1, n_chunks // n_deploys)
    text = "x" * 99 + "\n"
    with session_scope(engine) as session:
        ids = list(session.scalars(select(Deploy.id)))
    rows: list[dict[str, object]] = []
    for deploy_id in ids:
        for k in range(per_deploy):
            rows.append({"deploy_id": deploy_id, "offset": k * 100, "size": 100, "text": text})
        if len(rows) >= 20_000:
            with session_scope(engine) as session:
                session.execute(insert(LogChunk), rows)
            rows = []
    if rows:
        with session_scope(engine) as session:
            session.execute(insert(LogChunk), rows)
    with session_scope(engine) as session:
        releases.rebuild(session)
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def timed(call: Callable[[], httpx.Response], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = call()
        out.append(time.perf_counter() - t0)
        assert response.status_code < 300, response.text
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--deploys", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    name = f"freight_bench_{uuid.uuid4().hex[:8]}"
    with admin().cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    home = Path(tempfile.mkdtemp(prefix="freight-bench-api-"))
    try:
        upgrade(url)
        repo = home / "repo"
        ensure_demo_repo(repo)
        t0 = time.time()
        populate(url, repo, args.apps, args.deploys, args.chunks)
        print(
            f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}, "
            f"{os.cpu_count()} cores; {args.apps} apps x {len(ENVS)} envs, {args.deploys} deploys, "
            f"{args.chunks} log chunks in PostgreSQL (loaded in {time.time() - t0:.0f} s)\n",
            flush=True,
        )
        settings = Settings(
            home=home,
            database_url=url,
            prefect_api_url="http://127.0.0.1:4393/api",
            api_port=5093,
            public_url="http://127.0.0.1:5093",
            api_key=KEY,
            allow_local_repositories=True,
        )
        with running_stack(settings) as stack:
            base = f"{stack.api_url}/api/0"
            client = httpx.Client(base_url=base, headers={"Authorization": f"Key {KEY}"})
            rng = random.Random(3)
            n = args.samples

            def some_deploy() -> str:
                return f"app{rng.randrange(args.apps):03d}/{rng.choice(ENVS)}/{rng.randint(1, 50)}"

            browser = httpx.Client(base_url=stack.api_url)
            assert browser.post("/login", data={"key": KEY}).status_code in (200, 303)
            cases: list[tuple[str, Callable[[], httpx.Response]]] = [
                ("GET /deploys/ (first page)", lambda: client.get("/deploys/")),
                (
                    "GET /deploys/?app=&env= (filtered)",
                    lambda: client.get(
                        "/deploys/",
                        params={"app": f"app{rng.randrange(args.apps):03d}", "env": "production"},
                    ),
                ),
                ("GET /deploys/APP/ENV/N/", lambda: client.get(f"/deploys/{some_deploy()}/")),
                (
                    "GET /deploys/APP/ENV/N/log/",
                    lambda: client.get(f"/deploys/{some_deploy()}/log/"),
                ),
                ("GET /releases/", lambda: client.get("/releases/")),
                ("dashboard overview (GET /, 300 app/envs)", lambda: browser.get("/")),
                (
                    "dashboard app page",
                    lambda: browser.get(f"/apps/app{rng.randrange(args.apps):03d}"),
                ),
            ]
            print("| request | p50 | p95 | n | target |\n|---|---|---|---|---|")
            for label, call in cases:
                call()  # warm the connection and caches
                values = timed(call, n)
                target = "p50 ≤ 100 ms" if label.startswith("dashboard") else "p50 ≤ 20 ms"
                print(
                    f"| {label} | {statistics.median(values) * 1000:.1f} ms | "
                    f"{percentile(values, 0.95) * 1000:.1f} ms | {n} | {target} |",
                    flush=True,
                )
            # One app/env: the deploys queue behind each other, one runs at a time.
            post = timed(
                lambda: client.post(
                    "/deploys/", json={"app": "app000", "env": "canary", "user": "bench"}
                ),
                min(n, 50),
            )
            print(
                f"| POST /deploys/ → 201 | {statistics.median(post) * 1000:.1f} ms | "
                f"{percentile(post, 0.95) * 1000:.1f} ms | {len(post)} | p50 ≤ 150 ms |",
                flush=True,
            )

            deadline = time.monotonic() + args.seconds
            errors = 0

            def hammer() -> int:
                nonlocal errors
                done = 0
                with httpx.Client(base_url=base, headers={"Authorization": f"Key {KEY}"}) as own:
                    while time.monotonic() < deadline:
                        if own.get("/deploys/").status_code != 200:
                            errors += 1
                        done += 1
                return done

            with ThreadPoolExecutor(max_workers=20) as pool:
                total = sum(pool.map(lambda _: hammer(), range(20)))
            print(
                f"\nGET /deploys/ with 20 concurrent clients for {args.seconds:.0f} s: "
                f"{total / args.seconds:.0f} requests/s, {errors} errors",
                flush=True,
            )
            client.close()
    finally:
        with admin().cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
