"""The production layout kept in ops/ (systemd units with their settings files, a compose file),
checked as someone installing it would find it: systemd accepts the units; every setting they
and the compose file give is one of Freight's and parses; every command they run exists; and
the units' commands, started with their settings files (databases and addresses pointed at this
machine), run a deploy on the worker and stop as systemd stops them."""

from __future__ import annotations

import configparser
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from freight import procs
from freight.agent.config import load
from freight.db import DeployStatus, get_engine, session_scope
from freight.db.migrate import upgrade
from freight.service import deploys
from freight.settings import Settings
from freight.stack import PROJECT_ROOT
from tests.conftest import postgres_database
from tests.factories import GitRepo, make_app
from tests.helpers import reachable_by_others, wait_for

OPS = PROJECT_ROOT / "ops"
UNITS = OPS / "systemd"
FREIGHT = str(Path(sys.executable).parent / "freight")
INSTALLED = "/opt/freight/bin/freight"
KEY = "ops-admin-key"


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Service"]


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value
    return found


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((OPS / "compose.yaml").read_text()))


def command_of(service: configparser.SectionProxy) -> list[str]:
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED, argv
    return [FREIGHT, *argv[1:]]


def settings_from(variables: dict[str, str]) -> Settings:
    """Freight's settings as a process given these variables (and no other FREIGHT_*) has them."""
    unknown = {
        key
        for key in variables
        if key.startswith("FREIGHT_") and key[8:].lower() not in Settings.model_fields
    }
    assert not unknown, f"not Freight settings: {unknown}"
    saved = {k: v for k, v in os.environ.items() if k.startswith("FREIGHT_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in variables.items() if k.startswith("FREIGHT_")})
    try:
        return Settings()
    finally:
        for key in variables:
            if key.startswith("FREIGHT_"):
                os.environ.pop(key, None)
        os.environ.update(saved)


def test_systemd_accepts_the_units_with_their_settings_files(tmp_path: Path) -> None:
    services = sorted(UNITS.glob("*.service"))
    assert {s.name for s in services} == {
        "freight-agent.service",
        "freight-server.service",
        "freight-worker.service",
    }
    for example in UNITS.glob("*.env.example"):
        (tmp_path / example.name.removesuffix(".example")).write_text(example.read_text())
    for service in services:
        installed = tmp_path / service.name
        installed.write_text(
            service.read_text()
            .replace(INSTALLED, FREIGHT)
            .replace("/etc/freight/", f"{tmp_path}/")
            .replace("/var/lib/freight", str(tmp_path))
        )
        verified = subprocess.run(
            ["systemd-analyze", "verify", str(installed)], capture_output=True, text=True
        )
        # Silent: no unknown key, no missing file or command (the user is the installer's to make).
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert not (verified.stdout + verified.stderr).strip(), verified.stdout + verified.stderr


def test_every_setting_and_command_of_the_examples_is_freights() -> None:
    for name in ("server.env.example", "worker.env.example"):
        settings = settings_from(env_file(UNITS / name))
        assert settings.secret_blocks  # app secrets may live in Prefect
    worker = settings_from(env_file(UNITS / "worker.env.example"))
    assert worker.worker_queues == ["deploys"] and worker.worker_limit == 4
    commands = [
        command_of(unit(name))
        for name in ("freight-server.service", "freight-worker.service", "freight-agent.service")
    ]
    # The agent's config loads, its key from its settings file, and names its file as installed.
    agent = load(UNITS / "agent.yaml.example", env_file(UNITS / "agent.env.example"))
    assert agent.key.get_secret_value() == "frt_CHANGE-ME"
    assert agent.run_as == "freight-run"
    assert [e.deploy is not None for e in agent.apps] == [True, False]
    assert "--config /etc/freight/agent.yaml" in unit("freight-agent.service")["ExecStart"]
    services = compose()["services"]
    for service in services.values():
        if "build" in service:
            settings_from({k: str(v) for k, v in service["environment"].items()})
            commands.append([FREIGHT, *service["command"]])
    assert services["worker-production"]["command"][-2:] == ["--queue", "prod-net"]
    for argv in commands:
        helped = subprocess.run([*argv, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0, f"{argv}: {helped.stdout}{helped.stderr}"
    # What the image copies is in the project.
    dockerfile = (OPS / "Dockerfile").read_text().splitlines()
    for line in dockerfile:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (PROJECT_ROOT / source).exists(), line
    build = services["server"]["build"]
    assert (OPS / build["context"] / build["dockerfile"]).resolve() == OPS / "Dockerfile"
    for volume in services["db"]["volumes"]:
        source = volume.split(":")[0]
        assert not source.startswith("./") or (OPS / source).exists(), volume


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.prefect
@pytest.mark.postgres
def test_the_units_commands_run_a_deploy_and_stop_as_systemd_stops_them(tmp_path: Path) -> None:
    tmp = reachable_by_others(tmp_path)
    with postgres_database() as freight_db, postgres_database() as prefect_db:
        upgrade(freight_db)
        api_port, prefect_port = free_port(), free_port()
        prefect_api = f"http://127.0.0.1:{prefect_port}/api"
        (tmp / "catalogue").mkdir()
        server_env = env_file(UNITS / "server.env.example") | {
            "FREIGHT_HOME": str(tmp / "control"),
            "FREIGHT_DATABASE_URL": freight_db,
            "FREIGHT_PREFECT_DATABASE_URL": prefect_db.replace("+psycopg2", "+asyncpg"),
            "FREIGHT_PREFECT_API_URL": prefect_api,
            "FREIGHT_API_PORT": str(api_port),
            "FREIGHT_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
            "FREIGHT_CATALOGUE_DIR": str(tmp / "catalogue"),
            "FREIGHT_API_KEY": KEY,
            "FREIGHT_ALLOW_LOCAL_REPOSITORIES": "true",
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FREIGHT_", "PREFECT_"))}
        server_unit, worker_unit = unit("freight-server.service"), unit("freight-worker.service")
        processes: list[subprocess.Popen[bytes]] = []

        def start(service: configparser.SectionProxy, env: dict[str, str], log: str) -> Any:
            process = subprocess.Popen(
                command_of(service),
                env=base | env,
                cwd=tmp,
                stdout=(tmp / log).open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(process)
            return process

        def logs() -> str:
            return "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in tmp.glob("*.log")
            )

        api = f"http://127.0.0.1:{api_port}/api/0"
        headers = {"Authorization": f"Key {KEY}"}

        def workers() -> dict[str, str]:
            found = httpx.get(f"{api}/workers/", headers=headers, timeout=10).json()
            return {w["name"]: w["state"] for w in found}

        try:
            server = start(server_unit, server_env, "server.log")

            def healthy() -> bool:
                try:
                    return httpx.get(f"{api}/../../health", timeout=3).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, 180, "the control plane to answer", logs)
            worker_env = env_file(UNITS / "worker.env.example") | {
                "FREIGHT_HOME": str(tmp / "worker"),
                "FREIGHT_PREFECT_API_URL": prefect_api,
                "FREIGHT_PREFECT_AUTH": (tmp / "control" / "prefect-auth").read_text().strip(),
                "FREIGHT_DATABASE_URL": freight_db,
                "FREIGHT_ALLOW_LOCAL_REPOSITORIES": "true",
            }
            del worker_env["FREIGHT_RUN_AS"]  # started by root, it makes its deploy user
            worker = start(worker_unit, worker_env, "worker.log")
            wait_for(lambda: workers().get("worker-1") == "running", 120, "the worker", logs)
            repo = GitRepo.create(tmp / uuid.uuid4().hex)
            with session_scope(get_engine(freight_db)) as session:
                app = make_app(session, repo, command="echo deployed by $FREIGHT_DEPLOY_ID").name
            posted = httpx.post(
                f"{api}/deploys/",
                json={"app": app, "env": "production", "user": "ops"},
                headers=headers,
                timeout=60,
            )
            assert posted.status_code == 201, posted.text
            deploy = posted.json()["id"]

            def status() -> str:
                found = httpx.get(f"{api}/deploys/{deploy}/", headers=headers, timeout=10)
                return str(found.json()["status"])

            wait_for(lambda: status() == DeployStatus.FINISHED, 120, "the deploy", logs)
            with session_scope(get_engine(freight_db)) as session:
                assert deploys.get_deploy(session, int(deploy)).runner_host == "worker-1"
            # systemctl stop: the unit's KillSignal to the main process; the worker drains.
            worker.send_signal(signal.Signals[worker_unit.get("KillSignal", "SIGTERM")])
            assert worker.wait(60) == 0, logs()
            assert workers()["worker-1"] == "stopped"
            server.send_signal(signal.SIGTERM)
            assert server.wait(int(server_unit["TimeoutStopSec"])) == 0, logs()
        finally:
            for process in processes:  # its processes too, were it to fail to stop them
                for pid in procs.descendants({process.pid}):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.wait()
