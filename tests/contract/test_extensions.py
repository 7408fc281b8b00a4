"""Freight's extensions on the same conventions: locks, releases, the queue, deploy stats,
config, health and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine

from freight.db import session_scope
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.contract.helpers import DATE, add_deploys, body, error, finish
from tests.doubles import HttpDouble, Reply
from tests.factories import GitRepo, RecordingOrchestrator, make_app
from tests.helpers import wait_for


def test_locks_block_others_expire_and_keep_their_history(
    server: ApiServer, origin: GitRepo
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    deploy = {"app": app, "env": "staging"}
    with server.client("s3cr3t-api-key") as c:
        env_lock = body(
            c.post("/locks/", json={**deploy, "reason": "db migration", "owner": "ana"}), 201
        )
        assert (env_lock["environment"], env_lock["owner"], env_lock["active"]) == (
            "staging",
            "ana",
            True,
        )
        assert "locked by ana: db migration" in error(
            c.post("/deploys/", json={**deploy, "user": "bob"}), 400, "locked"
        )
        assert body(c.post("/deploys/", json={**deploy, "user": "ana"}), 201)  # the owner may
        refused = c.post("/deploys/", json={**deploy, "user": "bob", "force": True})
        assert "forcing past it needs a reason" in error(refused, 400, "missing_argument")
        forced = body(
            c.post(
                "/deploys/",
                json={**deploy, "user": "bob", "force": True, "reason": "hotfix for #12"},
            ),
            201,
        )
        log = body(c.get(f"/deploys/{forced['id']}/log/"), 200)
        assert log["chunks"][0]["text"] == (
            f">> Forced by bob past: {app}/staging is locked by ana: db migration. "
            "Reason: hotfix for #12\n"
        )
        assert body(c.post("/deploys/", json={"app": app, "env": "production", "user": "bob"}), 201)

        timed = body(c.post("/locks/", json={"app": app, "reason": "freeze", "for": "2h"}), 201)
        expires = datetime.fromisoformat(timed["dateExpires"].replace("Z", "+00:00"))
        assert timedelta(hours=1, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=2)
        assert timed["environment"] is None and timed["owner"] == "api-key"
        assert body(c.get(f"/apps/{app}/"), 200)["lockedReason"] == "freeze"

        listed = body(c.get("/locks/", params={"app": app, "env": "production"}), 200)
        assert [lock["id"] for lock in listed] == [timed["id"]]
        released = body(c.delete(f"/locks/{env_lock['id']}/", params={"user": "ana"}), 200)
        assert (released["active"], released["releasedBy"]) == (False, "ana")
        assert DATE.match(released["dateReleased"])
        assert "already released" in error(
            c.delete(f"/locks/{env_lock['id']}/"), 400, "invalid_request"
        )
        history = body(c.get("/locks/", params={"app": app, "history": "true"}), 200)
        assert {lock["id"] for lock in history} == {env_lock["id"], timed["id"]}

        assert error(c.post("/locks/", json={"app": app, "reason": " "}), 400, "invalid_request")
        assert error(
            c.post("/locks/", json={"app": app, "reason": "x", "for": "soon"}),
            400,
            "invalid_request",
        )
        assert error(
            c.post("/locks/", json={"app": app, "env": "qa", "reason": "x"}),
            400,
            "invalid_environment",
        )
        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        assert error(
            c.post("/locks/", json={"app": app, "reason": "x", "expires": past}),
            400,
            "invalid_request",
        )
        assert error(c.delete("/locks/999/"), 404, "invalid_resource")


def test_releases_show_what_runs_where_and_each_history(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        made = make_app(session, origin)
        app, app_id = made.name, made.id
    add_deploys(server.engine, app_id, "production", 3)
    add_deploys(server.engine, app_id, "production", 1, status="failed")
    add_deploys(server.engine, app_id, "production", 2, status="pending")
    with server.client("s3cr3t-api-key") as c:
        state = {(r["app"], r["environment"]): r for r in body(c.get("/releases/"), 200)}
        production = state[(app, "production")]
        assert production["sha"] == f"{3:040x}" and production["deploy"]["number"] == 3
        assert production["queued"] == 2 and production["running"] is None
        assert state[(app, "staging")]["sha"] is None
        history = body(
            c.get("/releases/", params={"app": app, "env": "production", "limit": 2}), 200
        )
        assert [d["number"] for d in history] == [3, 2]
        created = body(c.post("/deploys/", json={"app": app, "env": "staging", "user": "ana"}), 201)
        finish(server.engine, int(created["id"]))
        staging = {r["environment"]: r for r in body(c.get("/releases/", params={"app": app}), 200)}
        assert staging["staging"]["user"] == "ana" and DATE.match(
            staging["staging"]["dateFinished"]
        )
        assert error(c.get("/releases/", params={"env": "production"}), 400, "missing_argument")
        assert error(c.get("/releases/", params={"app": "ghost"}), 404, "invalid_resource")


def test_deploy_stats_config_and_openapi(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        made = make_app(session, origin)
    today = datetime.now(UTC)
    add_deploys(server.engine, made.id, "staging", 2, date_started=today)
    add_deploys(server.engine, made.id, "staging", 1, date_started=today - timedelta(days=3))
    add_deploys(server.engine, made.id, "staging", 1, date_started=today - timedelta(days=40))
    with server.client("s3cr3t-api-key") as c:
        stats = body(c.get("/deploy-stats/"), 200)
        assert len(stats) == 31
        midnight = int(today.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
        assert stats[-1] == [midnight, 2] and stats[-4] == [midnight - 3 * 86400, 1]
        assert sum(count for _, count in stats) == 3
        assert body(c.get("/deploy-stats/", params={"app": made.name}), 200) == stats
        assert error(c.get("/deploy-stats/", params={"app": "ghost"}), 404, "invalid_resource")
        assert set(body(c.get("/config/"), 200)) == {"SENTRY_PUBLIC_DSN", "VERSION"}
    document = body(httpx.get(f"{server.api}/openapi.json"), 200)
    assert {
        "/api/0/deploys/",
        "/api/0/apps/{app}/",
        "/api/0/locks/",
        "/webhooks/{hook}/{action}/{app}/{env}/{digest}/",
    } <= set(document["paths"])


class DownOrchestrator(RecordingOrchestrator):
    def problem(self) -> str | None:
        return "http://127.0.0.1:1/api/health: ConnectError"


@pytest.fixture
def prefect_down(settings: Settings, engine: Engine) -> Iterator[ApiServer]:
    with serve_api(settings, engine, DownOrchestrator()) as running:
        yield running


def test_health_reports_database_and_prefect_apart(prefect_down: ApiServer) -> None:
    report = body(httpx.get(f"{prefect_down.url}/health"), 503)
    assert report["database"] == {"ok": True}
    assert report["prefect"] == {
        "ok": False,
        "error": "http://127.0.0.1:1/api/health: ConnectError",
    }
    assert report["status"] == "degraded"


def test_the_commits_between_releases_and_what_a_deploy_would_ship(
    server: ApiServer, origin: GitRepo
) -> None:
    first = origin.git("rev-parse", "HEAD")
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    with server.client("s3cr3t-api-key") as c:
        one = body(c.post("/deploys/", json={"app": app, "env": "staging", "user": "ana"}), 201)
        finish(server.engine, int(one["id"]))
        second = origin.commit("Second: add caching")
        third = origin.commit("Third: fix the cache key")
        ship = body(c.get("/releases/commits/", params={"app": app, "env": "staging"}), 200)
        assert (ship["from"], ship["to"]) == (first, third)
        assert [(x["sha"], x["subject"]) for x in ship["commits"]] == [
            (third, "Third: fix the cache key"),
            (second, "Second: add caching"),
        ]
        assert ship["commits"][0]["author"] == {"name": "Ana Dev", "email": "ana@example.com"}
        assert DATE.match(ship["commits"][0]["date"])
        span = body(
            c.get(
                "/releases/commits/",
                params={"app": app, "env": "staging", "from": first, "to": second},
            ),
            200,
        )
        assert [x["sha"] for x in span["commits"]] == [second]
        assert error(
            c.get("/releases/commits/", params={"app": app, "env": "staging", "to": "nope"}),
            400,
            "invalid_ref",
        )
        assert error(c.get("/releases/commits/", params={"app": app}), 400, "missing_argument")


def test_the_queue_in_order_and_moving_a_deploy_to_its_front(
    server: ApiServer, origin: GitRepo, orchestrator: RecordingOrchestrator
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    deploy = {"app": app, "env": "staging", "user": "ana"}
    queue_args = {"app": app, "env": "staging", "status": "pending"}
    with server.client("s3cr3t-api-key") as c:
        first = body(c.post("/deploys/", json=deploy), 201)
        wait_for(
            lambda: int(first["id"]) in orchestrator.submitted, 10, "the first to be handed over"
        )
        for _ in range(2):
            body(c.post("/deploys/", json=deploy), 201)
        assert [d["number"] for d in body(c.get("/deploys/", params=queue_args), 200)] == [2, 3]
        moved = body(c.put(f"/deploys/{app}/staging/3/", json={"position": "front"}), 200)
        assert moved["status"] == "pending"
        assert [d["number"] for d in body(c.get("/deploys/", params=queue_args), 200)] == [3, 2]
        assert "only a queued deploy moves" in error(
            c.put(f"/deploys/{app}/staging/1/", json={"position": "front"}), 400, "invalid_request"
        )
        assert error(
            c.put(f"/deploys/{app}/staging/2/", json={"position": "back"}), 400, "invalid_request"
        )


def test_locks_are_announced_to_the_apps_notifiers(server: ApiServer, origin: GitRepo) -> None:
    hook = HttpDouble()
    hook.route("POST", "/hook", lambda request: Reply(200, "ok"))
    with hook.running():
        with session_scope(server.engine) as session:
            app = make_app(
                session, origin, notifiers=[{"type": "webhook", "url": f"{hook.url}/hook"}]
            ).name
        with server.client("s3cr3t-api-key") as c:
            made = body(
                c.post(
                    "/locks/",
                    json={"app": app, "env": "staging", "reason": "db migration", "owner": "ana"},
                ),
                201,
            )
            body(c.delete(f"/locks/{made['id']}/", params={"user": "bob"}), 200)
            c.put(f"/apps/{app}/", json={"lockedReason": "freeze"})
            c.put(f"/apps/{app}/", json={"lockedReason": "false"})
        wait_for(lambda: len(hook.requests) == 4, 10, "four lock notices")
    notices = [(r.json()["event"], r.json()["title"]) for r in hook.requests]
    assert notices == [
        ("locked", f"{app}/staging locked by ana: db migration"),
        ("unlocked", f"{app}/staging unlocked by bob (was ana: db migration)"),
        ("locked", f"{app} locked by api-key: freeze"),
        ("unlocked", f"{app} unlocked by api-key (was api-key: freeze)"),
    ]
