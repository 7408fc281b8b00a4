"""`freight up` as `make up` runs it: the demo deploys from `prefect deployment run`, and Ctrl-C
leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg2
import pytest
from sqlalchemy import select

from freight import procs
from freight.db import Deploy, DeployStatus, make_engine, session_scope
from freight.service import logs
from tests.helpers import reachable_by_others, wait_for

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_runs_the_demo_and_stops_everything_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reachable_by_others(tmp_path)  # the embedded PostgreSQL keeps its data under it
    catalogue = tmp_path / "deployments"
    catalogue.mkdir()
    shutil.copy(ROOT / "deployments" / "demo.yaml", catalogue)
    home = tmp_path / "home"
    # An app whose command tries to read Freight's secrets: every ancestor's environment (and
    # every process's), and every file under FREIGHT_HOME.
    snoop = (
        'echo "ran as $(id -un) in $(pwd)"; pid=$$; while [ "$pid" -gt 1 ]; do '
        'tr "\\0" "\\n" < /proc/$pid/environ; pid=$(cut -d" " -f4 /proc/$pid/stat); done; '
        'for p in /proc/[0-9]*; do tr "\\0" "\\n" < $p/environ; done; '
        f'find {home} -type f -print0 | xargs -0 cat; touch made-here "$TMPDIR/made-there"; '
        "echo snooped"
    )
    (catalogue / "snoop.yaml").write_text(
        (ROOT / "deployments" / "demo.yaml")
        .read_text()
        .replace("name: demo", "name: snoop")
        .replace("./deploy.sh {environment} {sha}", json.dumps(snoop))
    )
    api = f"http://127.0.0.1:{free_port()}/api"
    freight_port = free_port()
    db_port = free_port()
    env = {
        **os.environ,
        "FREIGHT_HOME": str(home),
        "FREIGHT_CATALOGUE_DIR": str(catalogue),
        "FREIGHT_PREFECT_API_URL": api,
        "FREIGHT_API_PORT": str(freight_port),
        "FREIGHT_PUBLIC_URL": f"http://127.0.0.1:{freight_port}",
        "FREIGHT_DB_PORT": str(db_port),
    }
    for name in ("FREIGHT_DATABASE_URL", "FREIGHT_PREFECT_DATABASE_URL"):
        env.pop(name, None)  # the defaults: the embedded PostgreSQL
    env.pop("FREIGHT_API_KEY", None)
    up, log = start_up(env, tmp_path / "up.log")
    try:
        text = log.read_text()
        assert f"Prefect UI:   {api.removesuffix('/api')}" in text
        assert f"Freight API:  http://127.0.0.1:{freight_port}/api/0/" in text
        admin_key = re.search(r"Admin key:    (frt_\S+)", text)
        assert admin_key, text
        assert (tmp_path / ".freight" / "demo-repo" / "deploy.sh").exists()

        run_demo = [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "deploy/deploy",
            "--param",
            "app=demo",
            "--param",
            "env=staging",
        ]
        # Prefect's API asks for its auth string: without it nobody starts a deploy there.
        refused = subprocess.run(
            run_demo, env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True
        )
        assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr, refused
        auth_file = tmp_path / "home" / "prefect-auth"
        assert auth_file.stat().st_mode & 0o077 == 0
        assert f"the auth string in {auth_file}" in text
        auth = auth_file.read_text().strip()
        subprocess.run(
            run_demo,
            env={**env, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": auth},
            check=True,
            capture_output=True,
        )
        assert f"Freight DB:   postgresql+psycopg2://postgres@127.0.0.1:{db_port}/freight" in text
        # The embedded PostgreSQL asks for its password, even on loopback, where deploy
        # commands run too; the stack's processes find it in a password file of their own.
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(
                host="127.0.0.1",
                port=db_port,
                user="postgres",
                dbname="freight",
                passfile="/dev/null",
            )
        pgpass = home / "run" / "pgpass"
        assert pgpass.stat().st_mode & 0o077 == 0
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
        engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{db_port}/freight")

        def demo_deploy() -> Deploy | None:
            with session_scope(engine) as session:
                return session.scalar(select(Deploy).order_by(Deploy.id.desc()).limit(1))

        wait_for(
            lambda: (d := demo_deploy()) is not None and DeployStatus(d.status).is_final,
            120,
            "the demo deploy",
        )
        deploy = demo_deploy()
        assert deploy is not None and deploy.status == DeployStatus.FINISHED, deploy
        with session_scope(engine) as session:
            text = "".join(c.text for c in logs.read_log(session, deploy.id).chunks)
        assert "Restarting workers...\n" in text and f"Deployed {deploy.sha} to staging" in text
        # The same deploy through the Freight API, with the key `freight up` printed.
        freight_api = httpx.Client(
            base_url=f"http://127.0.0.1:{freight_port}/api/0",
            headers={"Authorization": f"Key {admin_key[1]}"},
        )
        listed = freight_api.get("/deploys/").json()
        assert [d["name"] for d in listed] == [deploy.name]

        # A command runs as a user of its own and reads none of Freight's secrets.
        snooping = freight_api.post(
            "/deploys/", json={"app": "snoop", "env": "staging", "user": "ana"}
        ).json()
        wait_for(
            lambda: freight_api.get(f"/deploys/{snooping['id']}/").json()["status"] == "finished",
            60,
            "the snooping deploy",
        )
        snooped = "".join(
            c["text"] for c in freight_api.get(f"/deploys/{snooping['id']}/log/").json()["chunks"]
        )
        assert ">> The command runs as freight-run\n" in snooped, snooped
        assert "ran as freight-run in " in snooped and "snooped" in snooped, snooped
        for secret in (auth, "FREIGHT_DATABASE_URL", "PREFECT_API_AUTH_STRING", admin_key[1]):
            assert secret not in snooped
        # Its checkout and temporary directory were its own, and are gone.
        assert not list((home / "workspaces" / "checkouts").iterdir())
        assert not list((home / "workspaces" / "tmp").iterdir())
        freight_api.close()
        started = procs.descendants({up.pid})
        # database, server, fork server, worker, API and reconciler, below `freight up`
        assert len(started) >= 6
        engine.dispose()
    finally:
        stop_up(up, log)
    wait_for(
        lambda: not started & {p.pid for p in procs.live_processes()},
        10,
        "every process `freight up` started to be gone",
    )

    # Again on the same data: the history is there, and no second key is printed.
    again, log = start_up(env, tmp_path / "up-again.log")
    try:
        text = log.read_text()
        assert "Admin key:    made on the first start" in text and "frt_" not in text
        listed = httpx.get(
            f"http://127.0.0.1:{freight_port}/api/0/deploys/",
            headers={"Authorization": f"Key {admin_key[1]}"},
        ).json()
        assert [d["name"] for d in listed][-1] == deploy.name
    finally:
        stop_up(again, log)


def start_up(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], Path]:
    with log.open("w+") as output:
        up = subprocess.Popen(
            [str(BIN / "freight"), "up"], env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        wait_for(
            lambda: "Press Ctrl-C" in log.read_text() or up.poll() is not None, 120, "freight up"
        )
    except AssertionError:
        stop_up(up, log)
        raise
    assert up.poll() is None, log.read_text()
    return up, log


def stop_up(up: subprocess.Popen[bytes], log: Path) -> None:
    up.send_signal(signal.SIGINT)
    up.wait(60)
    assert "Stopped." in log.read_text()
