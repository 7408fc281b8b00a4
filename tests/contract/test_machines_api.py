"""`/api/0/machines/` as agents and people use it: a check-in answered with the desired version
and orders (at once when a pull deploy starts while it waits), run reports, the list with its
filters, and bad input answered 400 naming the field, never 500."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from freight.db import App, Deploy, DeployStatus, session_scope, utcnow
from freight.service import machines, pulls
from tests.apiserver import ApiServer
from tests.contract.helpers import body, error
from tests.factories import GitRepo, make_app

KEY = "s3cr3t-api-key"
SHA = "3" * 40


@pytest.fixture
def app(server: ApiServer, origin: GitRepo) -> str:
    origin.commit("initial")
    with session_scope(server.engine) as session:
        make_app(session, origin, name="vault")
        return make_app(session, origin, name="web").name


def report(name: str = "web-1", *, wait: float = 0, **item: Any) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"role": "web", "rack": name},
        "agentVersion": "0.1.0",
        "interval": 15,
        "wait": wait,
        "apps": [{"app": "web", "env": "production", "version": "1" * 40, "deploy": True, **item}],
    }


def bad(response: httpx.Response) -> str:
    """The message of a 400 (invalid_request, or missing_argument for a missing field)."""
    data = body(response, 400)
    assert data["error_name"] in ("invalid_request", "missing_argument"), data
    return str(data["error"])


def start_pull_deploy(server: ApiServer, app: str = "web") -> int:
    """A pull deploy of APP/production in progress with its order published, as its run
    leaves it."""
    with session_scope(server.engine) as session:
        app_row = session.scalar(select(App).where(App.name == app))
        assert app_row is not None
        deploy = Deploy(
            app_id=app_row.id,
            environment="production",
            number=1,
            ref="main",
            sha=SHA,
            status=DeployStatus.IN_PROGRESS,
            config={},
            date_started=utcnow(),
        )
        session.add(deploy)
        session.flush()
        pulls.publish(session, deploy, min_ready=None, now=utcnow())
        return deploy.id


def test_a_waiting_check_in_gets_a_pull_deploy_s_order_as_soon_as_it_starts(
    server: ApiServer, app: str
) -> None:
    agent = server.key("agent", name="fleet")
    with server.client(agent) as client:
        first = body(client.post("/machines/checkin/", json=report()), 200)
        assert first["orders"] == [] and first["cancel"] == [] and first["refused"] == []
        assert first["apps"] == [
            {"app": "web", "env": "production", "desired": None, "deploy": None}
        ]
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(
                client.post("/machines/checkin/", json=report(wait=60), timeout=90)
            )
        )
        waiting.start()
        deploy_id = start_pull_deploy(server)
        waiting.join(90)
        # Answered with the order, not at the end of its 60 s wait with nothing.
        (answer,) = answers
        (order,) = body(answer, 200)["orders"]
        assert order["deploy"] == str(deploy_id) and order["sha"] == SHA
        assert order["app"] == "web" and order["env"] == "production" and not order["catchUp"]
        assert body(answer, 200)["apps"][0]["desired"] == SHA
        # Its run's lines and end, then what people see.
        path = f"/machines/web-1/runs/{deploy_id}/"
        assert body(client.post(path, json={"from": 0, "lines": ["a", "b"]}), 200) == {
            "lines": 2,
            "status": "running",
            "cancel": False,
        }
        done = body(client.post(path, json={"from": 2, "lines": ["c"], "status": "succeeded"}), 200)
        assert done == {"lines": 3, "status": "succeeded", "cancel": False}
        # The key of an agent reads nothing else.
        assert error(client.get("/machines/"), 403, "forbidden")
        assert error(client.get("/deploys/"), 403, "forbidden")
    with server.client(KEY) as client:
        (machine,) = body(client.get("/machines/"), 200)
        assert machine["name"] == "web-1" and machine["status"] == "online"
        assert machine["labels"] == {"role": "web", "rack": "web-1"}
        assert machine["apps"][0]["version"] == "1" * 40


def test_a_cancelled_pull_deploy_tells_its_running_agents_to_stop(
    server: ApiServer, app: str
) -> None:
    deploy_id = start_pull_deploy(server)
    with server.client(KEY) as client:
        body(client.post("/machines/checkin/", json=report()), 200)
        body(client.post(f"/machines/web-1/runs/{deploy_id}/", json={"lines": ["x"]}), 200)
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(
                client.post(
                    "/machines/checkin/", json=report(wait=60, running=deploy_id), timeout=90
                )
            )
        )
        waiting.start()
        with session_scope(server.engine) as session:
            pulls.cancel(session, deploy_id)
        waiting.join(90)
        assert body(answers[0], 200)["cancel"] == [str(deploy_id)]
        again = client.post(f"/machines/web-1/runs/{deploy_id}/", json={"from": 1, "lines": []})
        assert body(again, 200)["cancel"] is True


def test_the_list_filters_by_app_env_status_and_label(server: ApiServer, app: str) -> None:
    with server.client(KEY) as client:
        for name in ("web-1", "web-2"):
            body(client.post("/machines/checkin/", json=report(name)), 200)
        other = report("vault-1")
        other["apps"][0]["app"] = "vault"
        body(client.post("/machines/checkin/", json=other), 200)

        def names(**query: str) -> list[str]:
            return [m["name"] for m in body(client.get("/machines/", params=query), 200)]

        assert names() == ["vault-1", "web-1", "web-2"]
        assert names(app="web") == ["web-1", "web-2"]
        assert names(app="web", env="staging") == []
        assert names(label="rack=web-2") == ["web-2"]
        assert names(status="online") == ["vault-1", "web-1", "web-2"]
        assert names(status="lost") == []
        assert body(client.get("/machines/web-1/"), 200)["history"][0]["version"] == "1" * 40
        assert (
            error(client.get("/machines/nobody/"), 404, "invalid_resource")
            == "Machine 'nobody' not found"
        )
    limited = server.key("read", apps=["web"], name="web-reader")
    with server.client(limited) as client:
        assert [m["name"] for m in body(client.get("/machines/"), 200)] == ["web-1", "web-2"]
        assert (
            error(client.get("/machines/vault-1/"), 404, "invalid_resource")
            == "Machine 'vault-1' not found"
        )


def test_an_agent_key_limited_to_some_apps_reports_and_writes_only_theirs(
    server: ApiServer, app: str
) -> None:
    vault_deploy = start_pull_deploy(server, "vault")
    agent = server.key("agent", apps=["web"], name="web-fleet")
    with server.client(agent) as client:
        mixed = report()
        mixed["apps"].append({"app": "vault", "env": "production", "version": "x"})
        answer = body(client.post("/machines/checkin/", json=mixed), 200)
        assert answer["refused"] == [{"field": "apps[1].app", "error": machines.UNKNOWN_APP}]
        assert [a["app"] for a in answer["apps"]] == ["web"]
        assert answer["orders"] == []  # vault's pull deploy is not its business
        sent = client.post(f"/machines/web-1/runs/{vault_deploy}/", json={"lines": ["x"]})
        assert error(sent, 404, "invalid_resource") == f"Deploy {vault_deploy} not found"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "../etc"}, "name"),
        ({"name": "web\x001"}, "name"),
        ({"name": ""}, "name"),
        ({"interval": 0}, "interval"),
        ({"wait": 3600}, "wait"),
        ({"labels": {"k": "v" * 500}}, "labels.k"),
        ({"labels": ["role"]}, "labels"),
        ({"apps": "web"}, "apps"),
        ({"apps": [{"app": "web"}]}, "apps.0.env"),
        ({"apps": [{"app": "web", "env": "production", "running": "abc"}]}, "apps.0.running"),
        ({"apps": [{"app": "web", "env": "production", "colour": "red"}]}, "apps.0.colour"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_check_in_is_a_400_naming_the_field(
    server: ApiServer, app: str, change: dict[str, Any], field: str
) -> None:
    with server.client(KEY) as client:
        message = bad(client.post("/machines/checkin/", json={**report(), **change}))
        assert message.startswith(f"{field}: ") or message.startswith(f"{field!r}: "), message


def test_bad_run_reports_and_queries_are_400s_naming_the_field(server: ApiServer, app: str) -> None:
    deploy_id = start_pull_deploy(server)
    path = f"/machines/web-1/runs/{deploy_id}/"
    with server.client(KEY) as client:
        body(client.post("/machines/checkin/", json=report()), 200)
        for sent, field in [
            ({"status": "done"}, "status"),
            ({"lines": "one line"}, "lines"),
            ({"lines": [1, 2]}, "lines.0"),
            ({"from": -1}, "from"),
            ({"from": 5, "lines": ["x"]}, "from"),
            ({"message": "m" * 5000}, "message"),
        ]:
            message = bad(client.post(path, json=sent))
            assert message.startswith(f"{field}: "), (sent, message)
        assert bad(client.post(f"/machines/web-1/runs/{2**40}/", json={})).startswith("deploy_id: ")
        assert bad(client.get("/machines/", params={"label": "rack"})).startswith("label: ")
        assert bad(client.get("/machines/", params={"status": "asleep"})).startswith("status")


def test_a_burst_of_agents_reporting_at_once_is_answered_without_a_server_error(
    server: ApiServer, app: str
) -> None:
    """More agents reporting at once than the API has request threads (40) and database
    connections: each is answered 200. (A sync route's answer used to be checked on a request
    thread while its transaction held a connection, so threads waiting for connections and
    connections waiting for threads stood still until the pool's 30 s timeout: 500s.)"""
    deploy_id = start_pull_deploy(server)
    agents = [f"web-{n}" for n in range(120)]
    with server.client(KEY) as client:
        for name in agents:
            body(client.post("/machines/checkin/", json=report(name)), 200)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=server.api,
            headers={"Authorization": f"Key {KEY}"},
            timeout=90,
            limits=httpx.Limits(max_connections=len(agents)),
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"/machines/{name}/runs/{deploy_id}/", json={"lines": ["x"] * 50})
                    for name in agents
                )
            )
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [200] * len(agents)
    with session_scope(server.engine) as session:
        progress = pulls.progress(session, deploy_id, after=0, now=utcnow())
        assert set(progress.runs) == set(agents)
