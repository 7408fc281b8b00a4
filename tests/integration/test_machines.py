"""The machine-consistency service against the real stack: three agents (`freight agent`), each
on a machine of its own (a network namespace that reaches Freight only through a bridge), with
its own directory, version file and deploy script. They check in, drift and come back, go
stale and lost, and deploy pull environments themselves, while a user watches through the API,
`freight machines` and the notifiers (a webhook receiver).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from freight import procs, system_users
from freight.db import Deploy, get_engine, session_scope
from freight.service import keys
from freight.service.pulls import ABANDONED
from freight.settings import Settings
from freight.stack import Stack, running_stack
from tests.conftest import postgres_database
from tests.doubles import RecordingServer, recording_server
from tests.factories import GitRepo, make_app
from tests.helpers import reachable_by_others, wait_for
from tests.netns import free_port, inside, network

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

API_KEY = "machines-admin-key"
FREIGHT = str(Path(sys.executable).parent / "freight")
BRIDGE = "frbr1"
CONTROL_IP = "10.78.0.1"
MACHINES = ("m1", "m2", "m3")
INTERVAL = 1.0
LINES = 20
# A secret of the agents' config (`${FLEET_TOKEN}`), which their commands print.
TOKEN = "tok-3f9a1c"

# The deploy script of every machine: LINES numbered lines, then the new version in place. A
# machine's FAIL file makes it fail; its SLOW file makes it sleep that long first (its pid in
# PID, to see that a cancel stopped it).
DEPLOY_SCRIPT = """\
set -e
cd "$(dirname "$0")"
echo $$ > PID
if [ -f SLOW ]; then sleep "$(cat SLOW)"; fi
echo "token is $TOKEN"
for i in $(seq 1 {lines}); do echo "line $i of $FREIGHT_APP at $1"; done
if [ -f FAIL ]; then echo "no disk left" >&2; exit 3; fi
echo "$1" > REVISION
"""


@dataclass
class Agent:
    name: str
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def revision(self) -> Path:
        return self.home / "REVISION"

    def log(self) -> str:
        path = self.home / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Freight:
    stack: Stack
    settings: Settings
    engine: Engine
    tmp: Path
    hook: RecordingServer
    agent_key: str
    keep_down: set[str] = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"{self.stack.api_url}/api/0"

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.api}{path}",
            params=params,
            headers={"Authorization": f"Key {API_KEY}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def deploy(self, app: str, ref: str = "main") -> int:
        response = httpx.post(
            f"{self.api}/deploys/",
            json={"app": app, "env": "production", "ref": ref, "user": "ana"},
            headers={"Authorization": f"Key {API_KEY}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def cancel(self, deploy_id: int) -> None:
        response = httpx.put(
            f"{self.api}/deploys/{deploy_id}/",
            json={"status": "cancelled"},
            headers={"Authorization": f"Key {API_KEY}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.stack.api_url}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def status(self, deploy_id: int) -> str:
        return str(self.get(f"/deploys/{deploy_id}/")["status"])

    def wait_final(self, deploy_id: int, timeout: float = 90) -> str:
        wait_for(
            lambda: self.status(deploy_id) in ("finished", "failed", "cancelled"),
            timeout,
            f"deploy {deploy_id} to end",
            lambda: self.diagnostics(deploy_id),
        )
        return self.status(deploy_id)

    def log(self, deploy_id: int) -> str:
        page = self.get(f"/deploys/{deploy_id}/log/", offset=0, limit=1_000_000)
        return "".join(chunk["text"] for chunk in page["chunks"])

    def machines(self, **filters: str) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in self.get("/machines/", **filters)}

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r.json() for r in self.hook.requests if r.json().get("event") == event]

    def diagnostics(self, deploy_id: int | None = None) -> str:
        parts = []
        if deploy_id is not None:
            parts.append(f"--- log of {deploy_id}\n{self.log(deploy_id)[-3000:]}")
        for name in ("api", "reconciler", "worker"):
            path = self.stack.log_dir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def freight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Freight]:
    if os.geteuid() != 0:
        pytest.fail("the machines suite needs root, for network namespaces")
    tmp = reachable_by_others(tmp_path_factory.mktemp("machines"))
    with (
        network(BRIDGE, CONTROL_IP, MACHINES),
        postgres_database() as url,
        recording_server() as hook,
    ):
        api_port = free_port()
        settings = Settings(
            home=tmp / "control",
            database_url=url,
            db_port=free_port(),
            prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            api_host=CONTROL_IP,
            api_port=api_port,
            public_url=f"http://{CONTROL_IP}:{api_port}",
            api_key=API_KEY,
            allow_local_repositories=True,
            fleet_watch_interval=1,
        )
        stop = threading.Event()
        with running_stack(settings) as stack:
            engine = get_engine(url)
            with session_scope(engine) as session:
                _, agent_key = keys.create_key(session, name="fleet", scopes=["agent"])
            made = Freight(stack, settings, engine, tmp, hook, agent_key)
            supervisor = threading.Thread(
                target=stack.supervise,
                args=(stop,),
                kwargs={"keep_down": made.keep_down},
                daemon=True,
            )
            supervisor.start()
            try:
                yield made
            finally:
                stop.set()
                supervisor.join(10)


@dataclass
class Fleet:
    """One app with a pull production environment, and an agent for it on each machine."""

    freight: Freight
    app: str
    origin: GitRepo
    agents: dict[str, Agent]

    def start(self, name: str) -> None:
        agent = self.agents[name]
        log = (agent.home / "agent.log").open("ab")
        agent.process = subprocess.Popen(
            [*inside(name), FREIGHT, "agent", "--config", str(agent.home / "agent.yaml")],
            env={**os.environ, "FLEET_KEY": self.freight.agent_key, "FLEET_TOKEN": TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, name: str) -> None:
        process = self.agents[name].process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def signal(self, name: str, signum: signal.Signals) -> None:
        process = self.agents[name].process
        assert process is not None
        os.killpg(process.pid, signum)

    def state(self, name: str) -> dict[str, Any]:
        machine = self.freight.machines(app=self.app)[name]
        return next(s for s in machine["apps"] if s["app"] == self.app)

    def wait_versions(self, sha: str, names: tuple[str, ...] = MACHINES) -> None:
        wait_for(
            lambda: all(self.state(n)["version"] == sha for n in names),
            30,
            f"{', '.join(names)} to report {sha[:7]}",
            lambda: "\n".join(self.agents[n].log()[-1500:] for n in names),
        )


@pytest.fixture
def fleet(freight: Freight) -> Iterator[Fleet]:
    with fleet_of(freight, min_ready="all", timeout=60) as made:
        yield made


@contextlib.contextmanager
def fleet_of(
    freight: Freight, *, run_as: str | None = None, script: str = DEPLOY_SCRIPT, **provider: object
) -> Iterator[Fleet]:
    origin = GitRepo.create(freight.tmp / uuid.uuid4().hex)
    origin.commit("initial")
    with session_scope(freight.engine) as session:
        app = make_app(
            session,
            origin,
            environments=("production",),
            provider={"type": "pull", **provider},
            notifiers=[{"type": "webhook", "url": freight.hook.url + "/hook"}],
        ).name
    agents = {}
    for name in MACHINES:
        home = reachable_by_others(freight.tmp / app / name)
        (home / "deploy.sh").write_text(script.format(lines=LINES))
        (home / "deploy.sh").chmod(0o644)
        config = {
            "url": f"http://{CONTROL_IP}:{freight.settings.api_port}",
            "key": "${FLEET_KEY}",
            "name": name,
            "labels": {"role": "web", "rack": name},
            "interval": INTERVAL,
            "apps": [
                {
                    "app": app,
                    "env": "production",
                    "version": {"file": str(home / "REVISION")},
                    "deploy": {
                        "command": f"sh {home}/deploy.sh {{sha}}",
                        "grace": 2,
                        "env": {"TOKEN": "${FLEET_TOKEN}"},
                    },
                }
            ],
        }
        if run_as is not None:
            config["run_as"] = run_as
            user = pwd.getpwnam(run_as)
            os.chown(home, user.pw_uid, user.pw_gid)  # its commands write the version there
        (home / "agent.yaml").write_text(yaml.safe_dump(config))
        agents[name] = Agent(name, home)
    made = Fleet(freight, app, origin, agents)
    for name in MACHINES:
        made.start(name)
    try:
        wait_for(
            lambda: set(freight.machines(app=app)) == set(MACHINES),
            30,
            "three agents to check in",
            lambda: "\n".join(a.log()[-1500:] for a in agents.values()),
        )
        yield made
    finally:
        for name in MACHINES:
            with contextlib.suppress(ProcessLookupError):
                made.signal(name, signal.SIGCONT)
            made.stop(name)


def test_agents_check_in_and_show_their_machines(freight: Freight, fleet: Fleet) -> None:
    for name in MACHINES:
        fleet.agents[name].revision.write_text("0000000\n")
    wait_for(lambda: all(fleet.state(n)["version"] == "0000000" for n in MACHINES), 20, "versions")
    seen = freight.machines(app=fleet.app)
    for name in MACHINES:
        machine = seen[name]
        assert machine["status"] == "online"
        assert machine["labels"] == {"role": "web", "rack": name}
        assert machine["agentVersion"]
        assert machine["address"].startswith("10.78.0.")
        (state,) = machine["apps"]
        assert state["env"] == "production"
        assert state["canDeploy"] is True
        assert state["liveSha"] is None and state["drift"] is False  # nothing deployed yet
    assert set(freight.machines(app=fleet.app, label="rack=m2")) == {"m2"}
    assert freight.machines(app=fleet.app, status="lost") == {}
    # The command line shows the same machines.
    shown = subprocess.run(
        [FREIGHT, "machines", fleet.app],
        env={**os.environ, "FREIGHT_URL": freight.stack.api_url, "FREIGHT_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in MACHINES:
        assert name in shown
    assert "3 machine(s), 0 drifted, 0 lost" in shown
    # Check-ins are kept as history: one row per version each machine reported.
    history = freight.get("/machines/m1/")["history"]
    assert next(h["version"] for h in history if h["app"] == fleet.app) == "0000000"


def test_a_pull_deploy_succeeds_on_every_machine_with_every_line_in_the_log(
    freight: Freight, fleet: Fleet
) -> None:
    sha = fleet.origin.commit("second")
    deploy_id = freight.deploy(fleet.app)
    assert freight.wait_final(deploy_id) == "finished", freight.diagnostics(deploy_id)
    log = freight.log(deploy_id)
    for name in MACHINES:
        lines = [line for line in log.splitlines() if line.startswith(f"[{name}] line ")]
        assert lines == [f"[{name}] line {i} of {fleet.app} at {sha}" for i in range(1, LINES + 1)]
        assert f">> {name}: succeeded" in log
    assert ">> 3 of 3 machine(s) deployed it" in log
    assert "[m1] token is ********" in log and TOKEN not in log  # masked by the agent
    fleet.wait_versions(sha)
    assert not any(fleet.state(n)["drift"] for n in MACHINES)
    assert all(fleet.state(n)["liveSha"] == sha for n in MACHINES)


def test_drift_is_found_and_resolved_and_told(freight: Freight, fleet: Fleet) -> None:
    sha = fleet.origin.commit("second")
    assert freight.wait_final(freight.deploy(fleet.app)) == "finished"
    fleet.wait_versions(sha)
    # Someone restores m2 from an old image: its version goes back a commit.
    old = fleet.origin.git("rev-parse", "HEAD~1").strip()
    fleet.agents["m2"].revision.write_text(old + "\n")
    wait_for(lambda: fleet.state("m2")["drift"], 20, "m2 to drift")
    state = fleet.state("m2")
    assert (state["version"], state["liveSha"]) == (old, sha)
    assert (state["commitsBehind"], state["commitsAhead"]) == (1, 0)
    assert not fleet.state("m1")["drift"]
    wait_for(lambda: freight.events("drift_found"), 20, "the drift to be told")
    (found,) = [e for e in freight.events("drift_found") if e["app"] == fleet.app]
    assert found["machine"] == "m2" and old in found["detail"]
    fleet.agents["m2"].revision.write_text(sha + "\n")
    wait_for(lambda: not fleet.state("m2")["drift"], 20, "m2 to be back")
    wait_for(
        lambda: [e for e in freight.events("drift_resolved") if e["app"] == fleet.app],
        20,
        "the resolution to be told",
    )


def test_a_silent_machine_goes_stale_then_lost_and_is_told(freight: Freight, fleet: Fleet) -> None:
    fleet.signal("m3", signal.SIGSTOP)  # a frozen VM: its agent says nothing more
    wait_for(lambda: fleet.freight.machines(app=fleet.app)["m3"]["status"] == "stale", 15, "stale")
    assert freight.machines(app=fleet.app)["m1"]["status"] == "online"
    wait_for(lambda: freight.machines(app=fleet.app)["m3"]["status"] == "lost", 30, "lost")
    assert set(freight.machines(app=fleet.app, status="lost")) == {"m3"}
    wait_for(
        lambda: [e for e in freight.events("machine_lost") if e["app"] == fleet.app],
        20,
        "the loss to be told",
    )
    fleet.signal("m3", signal.SIGCONT)
    wait_for(lambda: freight.machines(app=fleet.app)["m3"]["status"] == "online", 20, "back")


def test_one_machine_failing_fails_the_deploy_naming_it(freight: Freight, fleet: Fleet) -> None:
    (fleet.agents["m2"].home / "FAIL").touch()
    deploy_id = freight.deploy(fleet.app)
    assert freight.wait_final(deploy_id) == "failed"
    log = freight.log(deploy_id)
    assert "[m2] no disk left" in log
    assert ">> m2: failed (Command exited with status 3)" in log
    assert ">> 3 machine(s) can no longer succeed (failed: m2)" in log


def test_a_machine_offline_fails_the_deploy_at_its_timeout_naming_it(freight: Freight) -> None:
    with fleet_of(freight, min_ready="all", timeout=8) as fleet:
        fleet.stop("m3")  # it was counted on, and never answers
        started = time.monotonic()
        deploy_id = freight.deploy(fleet.app)
        assert freight.wait_final(deploy_id) == "failed"
        assert time.monotonic() - started >= 8
        log = freight.log(deploy_id)
        assert "Timed out after 8s with 2 of 3 machine(s) ready; never reported: m3" in log
        assert ">> m1: succeeded" in log and ">> m2: succeeded" in log


def test_min_ready_two_finishes_with_one_machine_failing(freight: Freight) -> None:
    with fleet_of(freight, min_ready=2, timeout=60) as fleet:
        (fleet.agents["m1"].home / "FAIL").touch()
        (fleet.agents["m3"].home / "SLOW").write_text("1")
        sha = fleet.origin.commit("second")
        deploy_id = freight.deploy(fleet.app)
        assert freight.wait_final(deploy_id) == "finished", freight.diagnostics(deploy_id)
        log = freight.log(deploy_id)
        assert ">> m1: failed" in log
        assert ">> 2 of 3 machine(s) deployed it (m2, m3); 2 needed" in log
        fleet.wait_versions(sha, ("m2", "m3"))


def test_cancel_in_the_middle_stops_every_machine_s_command(freight: Freight, fleet: Fleet) -> None:
    for name in MACHINES:
        (fleet.agents[name].home / "SLOW").write_text("300")
    deploy_id = freight.deploy(fleet.app)
    pid_files = [fleet.agents[name].home / "PID" for name in MACHINES]
    wait_for(lambda: all(p.exists() for p in pid_files), 60, "every command to start")
    pids = [int(p.read_text()) for p in pid_files]
    freight.cancel(deploy_id)
    assert freight.wait_final(deploy_id, 60) == "cancelled"
    log = freight.log(deploy_id)
    assert ">> Told the agents to stop (m1, m2, m3)" in log
    for name in MACHINES:
        assert f">> {name}: cancelled" in log
    wait_for(lambda: not any(_alive(pid) for pid in pids), 20, "every command to be gone")


def test_an_agent_killed_mid_command_fails_its_run_when_it_is_back_and_runs_nothing_twice(
    freight: Freight, fleet: Fleet
) -> None:
    for name in MACHINES:
        (fleet.agents[name].home / "SLOW").write_text("300")
    deploy_id = freight.deploy(fleet.app)
    pid_file = fleet.agents["m2"].home / "PID"
    wait_for(pid_file.exists, 60, "m2's command to start")
    orphan = int(pid_file.read_text())
    fleet.stop("m2")  # kill -9: its command, in a session of its own, runs on unheard
    try:
        restarted = time.monotonic()
        fleet.start("m2")
        assert freight.wait_final(deploy_id, 60) == "failed"
        assert time.monotonic() - restarted < 30  # not the provider's 60 s timeout
        log = freight.log(deploy_id)
        assert f"[m2] >> Failed: {ABANDONED}" in log
        assert f">> m2: failed ({ABANDONED})" in log
        # Started once: the restarted agent was not told to run it again.
        assert int(pid_file.read_text()) == orphan
        assert fleet.agents["m2"].log().count(f"deploy {deploy_id}: deploying") == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan, signal.SIGKILL)


def test_the_runner_killed_mid_pull_deploy_stops_the_agents_and_frees_the_environment(
    freight: Freight, fleet: Fleet
) -> None:
    slow = [fleet.agents[name].home / "SLOW" for name in MACHINES]
    for path in slow:
        path.write_text("300")
    doomed = freight.deploy(fleet.app)
    pid_files = [fleet.agents[name].home / "PID" for name in MACHINES]
    wait_for(lambda: all(p.exists() for p in pid_files), 60, "every command to start")
    pids = [int(p.read_text()) for p in pid_files]
    with session_scope(freight.engine) as session:
        runner = session.get_one(Deploy, doomed).runner_pid
    assert runner
    for path in slow:
        path.unlink()
    os.kill(runner, signal.SIGKILL)
    killed = time.monotonic()
    assert freight.wait_final(doomed, 60) == "failed"
    assert freight.get(f"/deploys/{doomed}/")["reason"].startswith("Runner lost")
    # The agents were told: their commands stopped.
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "every command to be gone")
    # And the environment is free: the next deploy runs on every machine.
    sha = fleet.origin.commit("second")
    assert freight.wait_final(freight.deploy(fleet.app)) == "finished"
    assert time.monotonic() - killed < 60
    fleet.wait_versions(sha)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_late_machine_catches_up_by_itself(freight: Freight) -> None:
    with fleet_of(freight, min_ready=2, timeout=60) as fleet:
        fleet.stop("m3")  # away while the deploy runs
        sha = fleet.origin.commit("second")
        deploy_id = freight.deploy(fleet.app)
        assert freight.wait_final(deploy_id) == "finished", freight.diagnostics(deploy_id)
        assert fleet.state("m3")["version"] != sha
        fleet.start("m3")  # back, with the old version: it deploys the desired one itself
        fleet.wait_versions(sha)
        assert f"deploy {deploy_id}: catching up" in fleet.agents["m3"].log()
        assert not fleet.state("m3")["drift"]


def test_the_api_away_for_30s_while_agents_deploy_loses_nothing(
    freight: Freight, fleet: Fleet
) -> None:
    for name in MACHINES:
        (fleet.agents[name].home / "SLOW").write_text("3")
    sha = fleet.origin.commit("second")
    deploy_id = freight.deploy(fleet.app)
    wait_for(
        lambda: all((fleet.agents[n].home / "PID").exists() for n in MACHINES),
        60,
        "every command to start",
    )
    freight.keep_down.add("api")
    api = freight.stack.processes["api"]
    for pid in procs.descendants({api.pid}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    down_since = time.monotonic()
    try:
        # Meanwhile the commands print every line and end; the agents keep them.
        wait_for(
            lambda: all(fleet.agents[n].revision.exists() for n in MACHINES), 30, "the commands"
        )
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{freight.api}/machines/", timeout=5)
        time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))  # the outage lasts 30 s
    finally:
        freight.keep_down.discard("api")  # the supervisor starts it again
    wait_for(freight.answers, 60, "the API to be back")
    assert freight.wait_final(deploy_id, 90) == "finished", freight.diagnostics(deploy_id)
    log = freight.log(deploy_id)
    for name in MACHINES:
        lines = [line for line in log.splitlines() if line.startswith(f"[{name}] line ")]
        assert len(lines) == LINES
    fleet.wait_versions(sha)


# Looks for the agent's key where a command could find it: its own environment, and every
# process's it may read (the agent's among them, unless it runs as another user).
SNOOPING_SCRIPT = """\
echo "user=$(id -un)"
echo "key in my environment: $(env | grep -c FLEET_KEY)"
echo "environments with the key: $(grep -l FLEET_KEY /proc/[0-9]*/environ 2>/dev/null | wc -l)"
echo "$1" > "$(dirname "$0")/REVISION"
"""


def test_commands_run_as_their_own_user_and_cannot_read_the_agent_s_key(freight: Freight) -> None:
    system_users.ensure_user(system_users.DEPLOY_USER, "for deploy commands")
    with fleet_of(
        freight, run_as=system_users.DEPLOY_USER, script=SNOOPING_SCRIPT, timeout=60
    ) as fleet:
        sha = fleet.origin.commit("second")
        deploy_id = freight.deploy(fleet.app)
        assert freight.wait_final(deploy_id) == "finished", freight.diagnostics(deploy_id)
        log = freight.log(deploy_id)
        for name in MACHINES:
            assert f"[{name}] user={system_users.DEPLOY_USER}" in log
            assert f"[{name}] key in my environment: 0" in log
            assert f"[{name}] environments with the key: 0" in log
        fleet.wait_versions(sha)
    # As the agent's own user, the agent itself is readable: why run_as exists.
    with fleet_of(freight, script=SNOOPING_SCRIPT, timeout=60) as fleet:
        deploy_id = freight.deploy(fleet.app)
        assert freight.wait_final(deploy_id) == "finished", freight.diagnostics(deploy_id)
        log = freight.log(deploy_id)
        assert "[m1] key in my environment: 0" in log
        assert "[m1] environments with the key: 0" not in log
        assert "could read its key: set run_as" in fleet.agents["m1"].log()


def test_freight_agent_once_checks_in_catches_up_and_exits_for_cron(freight: Freight) -> None:
    with fleet_of(freight, min_ready=2, timeout=60) as fleet:
        fleet.stop("m3")  # no daemon there: cron runs `freight agent --once`
        sha = fleet.origin.commit("second")
        deploy_id = freight.deploy(fleet.app)
        assert freight.wait_final(deploy_id) == "finished", freight.diagnostics(deploy_id)
        agent = fleet.agents["m3"]

        def once() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    *inside("m3"),
                    FREIGHT,
                    "agent",
                    "--once",
                    "--config",
                    str(agent.home / "agent.yaml"),
                ],
                env={**os.environ, "FLEET_KEY": freight.agent_key, "FLEET_TOKEN": TOKEN},
                capture_output=True,
                text=True,
                timeout=120,
            )

        ran = once()
        assert ran.returncode == 0, ran.stderr
        assert f"deploy {deploy_id}: catching up to {fleet.app}/production at {sha}" in ran.stderr
        assert agent.revision.read_text().strip() == sha
        assert fleet.state("m3")["version"] == sha  # its second check-in said so
        again = once()
        assert again.returncode == 0 and "catching up" not in again.stderr
