"""Each error of the Freight API contract, and bad input of every kind: always a 4xx with a JSON
body naming the problem, never a 500, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import httpx
import pytest

from freight import checks
from freight.checks import CheckContext, CheckResult, Verdict
from freight.db import session_scope
from freight.plugins import PluginConfig
from freight.service import apps
from tests.apiserver import ApiServer
from tests.contract.helpers import count_deploys, error
from tests.factories import GitRepo, make_app


@pytest.fixture
def c(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client("s3cr3t-api-key") as client:
        yield client


@pytest.fixture
def app(server: ApiServer, origin: GitRepo) -> str:
    with session_scope(server.engine) as session:
        return make_app(session, origin).name


def test_each_error_name_with_its_status(
    server: ApiServer, c: httpx.Client, app: str, origin: GitRepo
) -> None:
    assert error(c.get("/apps/ghost/"), 404, "invalid_resource")
    assert error(c.get("/deploys/12345/"), 404, "invalid_resource")
    assert error(c.get(f"/deploys/{app}/staging/9/log/"), 404, "invalid_resource")
    assert error(
        c.post("/deploys/", json={"app": app, "user": "a", "ref": "nope"}), 400, "invalid_ref"
    )
    assert "staging2" in error(
        c.post("/deploys/", json={"app": app, "env": "staging2", "user": "a"}),
        400,
        "invalid_environment",
    )
    assert "'user'" in error(c.post("/deploys/", json={"app": app}), 400, "missing_argument")
    assert "app" in error(c.post("/deploys/", json={"user": "a"}), 400, "missing_argument")
    new = {"name": "x", "repository": origin.url}
    assert "nope" in error(
        c.post("/apps/", json={**new, "provider": "nope"}), 400, "invalid_provider"
    )
    assert "command" in error(
        c.post("/apps/", json={**new, "provider": "shell", "provider_config": "{}"}),
        400,
        "invalid_provider",
    )
    shell = {**new, "provider": "shell", "provider_config": {"command": "true"}}
    assert error(
        c.post("/apps/", json={**shell, "checks": [{"type": "nope"}]}), 400, "invalid_check"
    )
    assert error(
        c.post("/apps/", json={**shell, "notifiers": '[{"type": "nope", "config": {}}]'}),
        400,
        "invalid_notifier",
    )
    assert error(c.post("/apps/", json={**shell, "environments": "[]"}), 400, "invalid_environment")
    assert error(c.post("/apps/", json={**shell, "name": app}), 409, "conflict")
    c.put(f"/apps/{app}/", json={"lockedReason": "freeze"})
    assert "freeze" in error(c.post("/deploys/", json={"app": app, "user": "a"}), 400, "locked")
    assert error(httpx.get(f"{server.api}/apps/"), 401, "unauthorized") == "You are not authorized."
    assert error(c.get("/no/such/route/"), 404, None) == "Not Found"
    assert error(c.delete("/deploys/"), 404, None) == "Not Found"
    assert count_deploys(server.engine) == 0
    with session_scope(server.engine) as session:
        assert [a.name for a in apps.list_apps(session)] == [app]


def test_failing_check_refuses_the_deploy_unless_forced(
    server: ApiServer, c: httpx.Client, origin: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    class GateConfig(PluginConfig):
        type: Literal["gate"] = "gate"

    class Gate:
        def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
            return CheckResult(Verdict.FAILED, f"[failure] ci/build: {context.sha[:7]} is red")

    monkeypatch.setitem(checks.registry._kinds, "gate", (GateConfig, Gate()))
    with session_scope(server.engine) as session:
        app = make_app(session, origin, checks=[{"type": "gate"}]).name
    sha = origin.git("rev-parse", "HEAD")
    message = error(c.post("/deploys/", json={"app": app, "user": "a"}), 400, "check_failed")
    assert message == f"Check gate failed: [failure] ci/build: {sha[:7]} is red"
    assert count_deploys(server.engine) == 0
    forced = c.post("/deploys/", json={"app": app, "user": "a", "force": "1"})
    assert forced.status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    [
        (
            "POST",
            "/deploys/",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "JSON",
        ),
        (
            "POST",
            "/deploys/",
            {"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}},
            400,
            "object",
        ),
        (
            "POST",
            "/deploys/",
            {"json": {"app": "APP", "user": "a", "colour": "red"}},
            400,
            "colour: unknown field",
        ),
        (
            "POST",
            "/deploys/",
            {"json": {"app": "APP", "user": "a", "force": "maybe"}},
            400,
            "force",
        ),
        (
            "POST",
            "/deploys/",
            {"json": {"app": "APP", "user": "a", "params": "{bad"}},
            400,
            "params",
        ),
        (
            "POST",
            "/deploys/",
            {"json": {"app": "APP", "user": "a", "params": {"x y": "1"}}},
            400,
            "x y",
        ),
        ("POST", "/deploys/", {"json": {"app": ["APP"], "user": "a"}}, 400, "app"),
        ("POST", "/deploys/", {"data": {"app": "APP", "user": "a", "env": "x" * 300}}, 400, "env"),
        ("GET", "/deploys/?limit=abc", {}, 400, "limit"),
        ("GET", "/deploys/?limit=101", {}, 400, "limit"),
        ("GET", "/deploys/?cursor=0", {}, 400, "cursor"),
        ("GET", "/deploys/?status=exploded", {}, 400, "status"),
        ("GET", "/deploys/abc/", {}, 400, "deploy_id"),
        ("GET", "/deploys/APP/staging/x/", {}, 400, "number"),
        ("GET", "/deploys/APP/staging/1/log/?offset=-5", {}, 400, "offset"),
        ("PUT", "/deploys/APP/staging/1/", {"json": {"status": "finished"}}, 400, "status"),
        ("GET", "/apps/..%2Fx/", {}, 404, "not found"),
        (
            "POST",
            "/apps/",
            {
                "json": {
                    "name": "../x",
                    "repository": "r",
                    "provider": "shell",
                    "provider_config": {"command": "true"},
                }
            },
            400,
            "../x",
        ),
        (
            "POST",
            "/deploys/",
            {"content": b"app=1", "headers": {"Content-Type": "text/csv"}},
            400,
            "text/csv",
        ),
    ],
)
def test_bad_input_is_a_4xx_naming_the_problem_and_writes_nothing(
    server: ApiServer,
    c: httpx.Client,
    app: str,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    field: str,
) -> None:
    # One deploy exists, so that routes on it reach their argument checks.
    assert c.post("/deploys/", json={"app": app, "env": "staging", "user": "a"}).status_code == 201
    with session_scope(server.engine) as session:
        before = len(apps.list_apps(session))
    if "json" in kwargs:
        kwargs = {**kwargs, "content": json.dumps(kwargs["json"]).replace("APP", app).encode()}
        kwargs["headers"] = {"Content-Type": "application/json"}
        del kwargs["json"]
    response = c.request(method, path.replace("APP", app), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert field.lower() in response.json()["error"].lower()
    assert count_deploys(server.engine) == 1
    with session_scope(server.engine) as session:
        assert len(apps.list_apps(session)) == before


def test_huge_bodies_are_refused_before_they_are_read(
    server: ApiServer, c: httpx.Client, app: str
) -> None:
    huge = json.dumps({"app": app, "user": "a", "params": {"p": "x" * (2 << 20)}}).encode()
    response = c.post("/deploys/", content=huge, headers={"Content-Type": "application/json"})
    assert error(response, 413, "too_large")

    def chunks() -> object:
        for _ in range(40):
            yield b"x" * 65536

    streamed = c.post("/deploys/", content=chunks(), headers={"Content-Type": "application/json"})  # type: ignore[arg-type]
    assert error(streamed, 413, "too_large")
    assert count_deploys(server.engine) == 0
