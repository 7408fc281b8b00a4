"""Freight on several hosts: a control plane without a worker (`freight server`'s processes),
and three worker hosts (`freight worker`), each in a network namespace of its own that reaches
the control plane only through a bridge, as separate machines would. Each host has its own
FREIGHT_HOME and name; they share the filesystem, as the apps' test repositories live in it.

Deploys come in through the API; every command writes when it starts and ends to a timeline,
so a user's checks can be made: each ran once, in its turn, on some host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select, update

from freight import procs
from freight.db import ControlPlane, Deploy, DeployStatus, get_engine, session_scope, utcnow
from freight.service.workers import freight_version
from freight.settings import Settings
from freight.stack import Stack, prefect_auth, running_stack
from tests.conftest import postgres_database
from tests.factories import GitRepo, make_app
from tests.helpers import live_pids_with_env, reachable_by_others, wait_for
from tests.netns import forwarded, free_port, in_namespace, inside, network

pytestmark = [pytest.mark.prefect, pytest.mark.postgres]

API_KEY = "hosts-admin-key"
FREIGHT = str(Path(sys.executable).parent / "freight")
BRIDGE = "frbr0"
CONTROL_IP = "10.77.0.1"
HOSTS = ("h1", "h2", "h3")
UNBLOCKED_WITHIN = 30.0
TIMED = (
    'echo "start {app} {environment} {number} $(date +%s.%N)" >> {timeline}; '
    'if [ -n "$FREIGHT_PARAM_SLOW" ]; then sleep "$FREIGHT_PARAM_SLOW"; else sleep 0.3; fi; '
    'echo "end {app} {environment} {number} $(date +%s.%N)" >> {timeline}'
)


@dataclass
class Cluster:
    stack: Stack
    settings: Settings
    engine: Engine
    tmp: Path
    remote_db_url: str
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Processes of the control plane its supervisor must not start again (an outage).
    keep_down: set[str] = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"{self.stack.api_url}/api/0"

    @property
    def timeline(self) -> Path:
        return self.tmp / "timeline"

    def worker_env(self, host: str, name: str | None = None) -> dict[str, str]:
        """The environment of a worker on `host`, named `name` (default: the host's)."""
        home = reachable_by_others(self.tmp / (name or host))
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FREIGHT_", "PREFECT_"))},
            "FREIGHT_HOME": str(home),
            "FREIGHT_HOST_NAME": name or host,
            "FREIGHT_DATABASE_URL": self.remote_db_url,
            "FREIGHT_PREFECT_API_URL": self.settings.prefect_api_url,
            "FREIGHT_PREFECT_AUTH": prefect_auth(self.settings),
            "FREIGHT_ALLOW_LOCAL_REPOSITORIES": "true",
            "FREIGHT_WORKER_LIMIT": "2",
        }

    def start_worker(
        self, host: str, *args: str, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name or host}.log").open("ab")
        process = subprocess.Popen(
            [*inside(host), FREIGHT, "worker", *args],
            env=self.worker_env(host, name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers[name or host] = process
        return process

    def workers_seen(self) -> dict[str, dict[str, object]]:
        response = httpx.get(
            f"{self.api}/workers/", headers={"Authorization": f"Key {API_KEY}"}, timeout=10
        )
        return {w["name"]: w for w in response.json()}

    def apps(self, count: int, **extra: object) -> list[str]:
        made = []
        for _ in range(count):
            repo = GitRepo.create(self.tmp / uuid.uuid4().hex)
            with session_scope(self.engine) as session:
                command = TIMED.replace("{timeline}", str(self.timeline))
                made.append(make_app(session, repo, command=command, **extra).name)
        return made

    def seen(self, deploy_id: int) -> dict[str, object]:
        """The deploy as the API shows it."""
        response = httpx.get(
            f"{self.api}/deploys/{deploy_id}/",
            headers={"Authorization": f"Key {API_KEY}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, app: str, env: str, **params: str) -> int:
        response = httpx.post(
            f"{self.api}/deploys/",
            json={"app": app, "env": env, "user": "ana", "params": params},
            headers={"Authorization": f"Key {API_KEY}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def cancel(self, ids: list[int]) -> None:
        """Cancel what still runs (a slow deploy would hold a later test's drain)."""
        for deploy in self.deploys(ids):
            if not DeployStatus(deploy.status).is_final:
                httpx.put(
                    f"{self.api}/deploys/{deploy.id}/",
                    json={"status": "cancelled"},
                    headers={"Authorization": f"Key {API_KEY}"},
                    timeout=30,
                )
        self.wait_ended(ids, 60)

    def deploys(self, ids: list[int]) -> list[Deploy]:
        with session_scope(self.engine) as session:
            found = session.scalars(select(Deploy).where(Deploy.id.in_(ids)).order_by(Deploy.id))
            return [d for d in found if d.app is not None]

    def wait_ended(self, ids: list[int], timeout: float) -> list[Deploy]:
        wait_for(
            lambda: all(DeployStatus(d.status).is_final for d in self.deploys(ids)),
            timeout,
            f"{len(ids)} deploys to end",
            self.diagnostics,
        )
        return self.deploys(ids)

    def diagnostics(self) -> str:
        parts = []
        for name in ("reconciler", "api"):
            path = self.stack.log_dir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log\n{path.read_text()[-3000:]}")
        for host in HOSTS:
            path = self.tmp / f"{host}.log"
            if path.exists():
                parts.append(f"--- {host}.log\n{path.read_text()[-2000:]}")
        return "\n".join(parts)

    def starts(self, apps: list[str]) -> dict[tuple[str, str], list[tuple[str, int]]]:
        found: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
        for line in self.timeline.read_text().splitlines() if self.timeline.exists() else []:
            kind, app, env, number, _ = line.split()
            if app in apps:
                found[(app, env)].append((kind, int(number)))
        return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the multi-host suite needs root, for network namespaces")
    tmp = reachable_by_others(tmp_path_factory.mktemp("hosts"))
    # Commands run as the hosts' deploy user (`freight worker` run by root makes one).
    (tmp / "timeline").touch(mode=0o666)
    (tmp / "timeline").chmod(0o666)
    db_port = free_port()
    with (
        network(BRIDGE, CONTROL_IP, HOSTS),
        postgres_database() as url,
        forwarded((CONTROL_IP, db_port), ("127.0.0.1", 5432)),
    ):
        remote_db_url = url.replace("@127.0.0.1:5432/", f"@{CONTROL_IP}:{db_port}/")
        api_port = free_port()
        settings = Settings(
            home=tmp / "control",
            database_url=url,
            db_port=free_port(),
            prefect_api_url=f"http://{CONTROL_IP}:{free_port()}/api",
            api_port=api_port,
            public_url=f"http://127.0.0.1:{api_port}",
            api_key=API_KEY,
            allow_local_repositories=True,
            host_name="control",
        )
        stop = threading.Event()
        with running_stack(settings, worker=False) as stack:
            made = Cluster(stack, settings, get_engine(url), tmp, remote_db_url)
            supervisor = threading.Thread(
                target=stack.supervise,
                args=(stop,),
                kwargs={"keep_down": made.keep_down},
                daemon=True,
            )
            supervisor.start()
            try:
                for host in HOSTS:
                    made.start_worker(host)
                wait_for(
                    lambda: (
                        {name for name, w in made.workers_seen().items() if w["state"] == "running"}
                        == set(HOSTS)
                    ),
                    90,
                    "three workers to report",
                    made.diagnostics,
                )
                yield made
            finally:
                for process in made.workers.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                stop.set()
                supervisor.join(10)


def test_a_burst_runs_on_every_host_once_each_in_turn(cluster: Cluster) -> None:
    apps = cluster.apps(3)
    ids = [
        cluster.post(app, env)
        for _ in range(4)
        for app in apps
        for env in ("staging", "production")
    ]
    deploys = cluster.wait_ended(ids, 300)
    assert {d.runner_host for d in deploys} == set(HOSTS)  # every host took work
    assert_each_ran_once_in_turn(cluster, apps, deploys, per_queue=4)


def assert_each_ran_once_in_turn(
    cluster: Cluster, apps: list[str], deploys: list[Deploy], *, per_queue: int
) -> None:
    """Every deploy finished; per app/env each command started once, in number order, and
    ended before the next one started."""
    assert {d.status for d in deploys} == {DeployStatus.FINISHED}, cluster.diagnostics()
    runs = cluster.starts(apps)
    assert len(runs) == 2 * len(apps)
    for (app, env), events in runs.items():
        numbers = [n for kind, n in events if kind == "start"]
        assert numbers == sorted(numbers) == list(range(1, per_queue + 1)), (app, env, events)
        for (kind, n), (next_kind, next_n) in itertools.pairwise(events):
            if kind == "start":
                assert (next_kind, next_n) == ("end", n), (app, env, events)  # never overlapping


def test_a_whole_host_killed_fails_its_deploys_and_shows_lost_while_others_go_on(
    cluster: Cluster,
) -> None:
    [app] = cluster.apps(1)
    slow = [cluster.post(app, env, slow="120") for env in ("staging", "production")]

    def running_where() -> dict[int, str | None]:
        return {d.id: d.runner_host for d in cluster.deploys(slow) if d.date_started}

    wait_for(lambda: len(running_where()) == 2, 60, "both deploys to start", cluster.diagnostics)
    victim = next(host for host in running_where().values() if host)
    killed_at = utcnow()
    for pid in in_namespace(victim):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Its worker shows as lost at once (three beats), its deploys fail within 30 s.
    wait_for(lambda: cluster.workers_seen()[victim]["state"] == "lost", 15, "the lost worker")
    lost = [d for d in cluster.deploys(slow) if d.runner_host == victim]
    wait_for(
        lambda: all(d.status == DeployStatus.FAILED for d in cluster.deploys([x.id for x in lost])),
        UNBLOCKED_WITHIN,
        "its deploys to fail",
        cluster.diagnostics,
    )
    for deploy in cluster.deploys([d.id for d in lost]):
        assert deploy.reason and deploy.reason.startswith("Runner lost"), deploy.reason
        assert deploy.date_finished and (deploy.date_finished - killed_at).total_seconds() < (
            UNBLOCKED_WITHIN
        )
    # The other hosts go on: a new deploy of the same environments runs.
    after = [cluster.post(app, d.environment) for d in lost]
    assert {d.status for d in cluster.wait_ended(after, 120)} == {DeployStatus.FINISHED}
    cluster.cancel(slow)
    cluster.workers[victim].wait()
    cluster.start_worker(victim)  # back, for the tests after this one
    wait_for(lambda: cluster.workers_seen()[victim]["state"] == "running", 60, "it to be back")


def test_a_whole_host_stopped_and_continued_loses_its_deploys_then_works_again(
    cluster: Cluster,
) -> None:
    [app] = cluster.apps(1)
    marker = uuid.uuid4().hex
    slow = [cluster.post(app, env, slow="120", marker=marker) for env in ("staging", "production")]
    wait_for(
        lambda: all(d.date_started for d in cluster.deploys(slow)), 60, "both deploys to start"
    )
    victim = next(d.runner_host for d in cluster.deploys(slow) if d.runner_host)
    assert victim
    frozen = in_namespace(victim)  # a paused VM: every process of the host
    stopped_at = utcnow()
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: cluster.workers_seen()[victim]["state"] == "lost", 15, "the lost worker")
        lost = [d.id for d in cluster.deploys(slow) if d.runner_host == victim]
        ended = cluster.wait_ended(lost, UNBLOCKED_WITHIN)
        for deploy in ended:
            assert deploy.status == DeployStatus.FAILED, deploy.reason
            assert deploy.reason and deploy.reason.startswith("Runner lost"), deploy.reason
            assert deploy.date_finished
            assert (deploy.date_finished - stopped_at).total_seconds() < UNBLOCKED_WITHIN
        after = [cluster.post(app, d.environment) for d in ended]
        assert {d.status for d in cluster.wait_ended(after, 120)} == {DeployStatus.FINISHED}
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # Continued, its runners find they were stopped past the reap time and stop their commands;
    # the worker reports again and takes work.
    wait_for(
        lambda: (
            not any(
                pid in in_namespace(victim)
                for pid in live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}")
            )
        ),
        30,
        "the continued host's commands to stop",
    )
    wait_for(lambda: cluster.workers_seen()[victim]["state"] == "running", 30, "it to be back")
    cluster.cancel(slow)


def test_a_worker_drained_amid_a_burst_finishes_its_deploys_takes_no_more_and_exits(
    cluster: Cluster,
) -> None:
    apps = cluster.apps(3)
    pairs = [(app, env) for _ in range(3) for app in apps for env in ("staging", "production")]
    ids = [cluster.post(app, env, slow="2") for app, env in pairs]
    wait_for(lambda: any(d.date_started for d in cluster.deploys(ids)), 60, "the burst to start")
    host = next(d.runner_host for d in cluster.deploys(ids) if d.runner_host)
    assert host
    asked = utcnow()
    drain = subprocess.run(
        [FREIGHT, "worker", "--drain"],
        env=cluster.worker_env(host),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    drained = utcnow()
    assert drain.returncode == 0, drain.stdout + drain.stderr
    assert cluster.workers[host].wait(30) == 0
    assert cluster.workers_seen()[host]["state"] == "stopped"
    # The burst went on elsewhere: each deploy once, in turn. What the drained host ran, it
    # finished before it exited (nothing cut short), and other hosts took the rest.
    deploys = cluster.wait_ended(ids, 300)
    assert_each_ran_once_in_turn(cluster, apps, deploys, per_queue=3)
    ran_there = [d for d in deploys if d.runner_host == host]
    assert ran_there, cluster.diagnostics()
    for deploy in ran_there:
        assert deploy.date_started and deploy.date_started < drained, deploy.name
        assert deploy.date_finished and deploy.date_finished <= drained, deploy.name
    assert any(d.date_started and d.date_started > asked for d in deploys if d not in ran_there)
    cluster.start_worker(host)
    wait_for(lambda: cluster.workers_seen()[host]["state"] == "running", 60, "it to be back")


def test_a_worker_of_another_version_than_the_control_plane_refuses_to_take_runs(
    cluster: Cluster,
) -> None:
    with session_scope(cluster.engine) as session:
        session.execute(update(ControlPlane).values(version="9.9.9"))
    try:
        refused = subprocess.run(
            [*inside("h1"), FREIGHT, "worker"],
            env=cluster.worker_env("h1") | {"FREIGHT_HOME": str(cluster.tmp / "h1-other")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 1
        assert "control plane on control runs 9.9.9" in refused.stdout, refused.stdout
        # The running ones drain: they take nothing more, finish, and stop.
        wait_for(
            lambda: all(
                w["state"] == "stopped"
                for name, w in cluster.workers_seen().items()
                if name in HOSTS
            ),
            60,
            "the workers to drain",
            lambda: f"{cluster.workers_seen()}\n{cluster.diagnostics()}",
        )
    finally:
        with session_scope(cluster.engine) as session:
            session.execute(update(ControlPlane).values(version=freight_version()))
        for host in HOSTS:
            cluster.start_worker(host)


def test_a_worker_serving_one_work_queue_alone_runs_its_deploys_and_no_others(
    cluster: Cluster,
) -> None:
    [inside] = cluster.apps(1, work_queue="prod-net")  # deployable only from inside its network
    [everyday] = cluster.apps(1)
    first = cluster.post(inside, "production")
    # No worker serves its queue yet: it waits, and says why.
    wait_for(
        lambda: cluster.seen(first)["waitingFor"] == "no worker serves work queue 'prod-net'",
        30,
        "the deploy to say why it waits",
        lambda: f"{cluster.seen(first)}\n{cluster.diagnostics()}",
    )
    assert cluster.deploys([first])[0].date_started is None
    cluster.start_worker("h3", "--queue", "prod-net", name="prod-1")
    ids = [first, cluster.post(inside, "staging")]
    ids += [
        cluster.post(app, env) for app in (inside, everyday) for env in ("staging", "production")
    ]
    ended = cluster.wait_ended(ids, 180)
    assert {d.status for d in ended} == {DeployStatus.FINISHED}, cluster.diagnostics()
    hosts = {app: {d.runner_host for d in ended if d.app.name == app} for app in (inside, everyday)}
    assert hosts[inside] == {"prod-1"}
    assert "prod-1" not in hosts[everyday] and hosts[everyday] <= set(HOSTS)
    assert cluster.seen(first)["waitingFor"] is None
    assert cluster.workers_seen()["prod-1"]["queues"] == ["prod-net"]
    cluster.workers["prod-1"].send_signal(signal.SIGTERM)  # drained: nothing runs there
    assert cluster.workers["prod-1"].wait(60) == 0


def test_a_killed_freight_worker_leaves_no_prefect_worker_or_fork_server_behind(
    cluster: Cluster,
) -> None:
    host = "h2"
    process = cluster.workers[host]
    tree = procs.descendants({process.pid}) - {process.pid}
    assert len(tree) >= 2, tree  # its fork server and its Prefect worker
    os.kill(process.pid, signal.SIGKILL)  # only `freight worker`, not the host
    process.wait()
    wait_for(
        lambda: not tree & {p.pid for p in procs.live_processes()},
        10,
        "its fork server and Prefect worker to end",
    )
    wait_for(lambda: cluster.workers_seen()[host]["state"] == "lost", 15, "the lost worker")
    cluster.start_worker(host)  # started again, nothing of the old one is in its way
    wait_for(lambda: cluster.workers_seen()[host]["state"] == "running", 60, "it to be back")
    [app] = cluster.apps(1)
    ids = [cluster.post(app, env) for env in ("staging", "production")]
    assert {d.status for d in cluster.wait_ended(ids, 120)} == {DeployStatus.FINISHED}


def test_prefect_away_for_30s_while_hosts_deploy_loses_nothing(cluster: Cluster) -> None:
    apps = cluster.apps(2)
    server = cluster.stack.processes["server"]
    pairs = [(app, env) for _ in range(4) for app in apps for env in ("staging", "production")]
    ids: list[int] = []

    def outage() -> None:
        wait_for(lambda: len(ids) >= 4, 60, "the first deploys")
        cluster.keep_down.add("server")
        for pid in procs.descendants({server.pid}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(30)
        cluster.keep_down.discard("server")  # the supervisor starts it again

    outside = threading.Thread(target=outage)
    outside.start()
    for app, env in pairs:  # Freight's API takes them with Prefect away: the queue is its own
        ids.append(cluster.post(app, env))
    outside.join()
    deploys = cluster.wait_ended(ids, 400)
    assert_each_ran_once_in_turn(cluster, apps, deploys, per_queue=4)
    assert all(cluster.workers_seen()[host]["state"] == "running" for host in HOSTS)
