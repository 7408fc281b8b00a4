"""Signed GitHub push hooks: `/webhooks/github/deploy/APP/ENV/DIGEST/`."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from freight.db import session_scope
from freight.service import hooks
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.contract.helpers import body, count_deploys, error
from tests.factories import GitRepo, RecordingOrchestrator, make_app


def push(sha: str, ref: str = "refs/heads/main", **committer: str) -> dict[str, Any]:
    who = committer or {"email": "ana@example.com", "name": "Ana", "username": "ana"}
    return {
        "ref": ref,
        "head_commit": {
            "id": sha,
            "committer": who,
            "author": {"email": "bob@example.com", "name": "Bob", "username": "bob"},
        },
    }


def send(url: str, payload: dict[str, Any], event: str = "push", **headers: str) -> httpx.Response:
    return httpx.post(
        url,
        content=json.dumps(payload),
        headers={"Content-Type": "application/json", "X-GitHub-Event": event, **headers},
    )


def hook_url(server: ApiServer, app: str, env: str = "staging", key: str = "s3cr3t-api-key") -> str:
    digest = hooks.digest(key, hook="github", action="deploy", app=app, environment=env)
    return f"{server.url}/webhooks/github/deploy/{app}/{env}/{digest}/"


def test_push_to_the_default_branch_deploys_once_per_delivery(
    server: ApiServer, origin: GitRepo, orchestrator: RecordingOrchestrator
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    sha = origin.git("rev-parse", "HEAD")
    url = hook_url(server, app)

    first = body(send(url, push(sha), **{"X-GitHub-Delivery": "d-1"}), 201)
    assert (first["sha"], first["user"]["name"], first["environment"]) == (
        sha,
        "ana@example.com",
        "staging",
    )
    again = body(send(url, push(sha), **{"X-GitHub-Delivery": "d-1"}), 200)
    assert again["id"] == first["id"]
    assert count_deploys(server.engine) == 1

    # GitHub's web flow (a merge button) commits as noreply: the author is who deployed.
    web = push(sha, email="noreply@github.com", name="GitHub", username="web-flow")
    merged = body(send(url, web, **{"X-GitHub-Delivery": "d-2"}), 201)
    assert merged["user"]["name"] == "bob@example.com"

    assert (
        "refs/heads/feature" in body(send(url, push(sha, ref="refs/heads/feature")), 200)["ignored"]
    )
    assert "ping" in body(send(url, {"zen": "hi"}, event="ping"), 200)["ignored"]
    deleted = {"ref": "refs/heads/main", "head_commit": None}
    assert "head commit" in body(send(url, deleted), 200)["ignored"]
    assert count_deploys(server.engine) == 2

    assert error(send(url.replace(url.split("/")[-2], "0" * 64), push(sha)), 403, "forbidden")
    assert error(send(hook_url(server, app, key="other"), push(sha)), 403, "forbidden")
    assert error(send(hook_url(server, "ghost"), push(sha)), 404, "invalid_resource")
    assert error(send(hook_url(server, app, env="qa"), push(sha)), 400, "invalid_environment")
    assert error(
        httpx.post(url, content=b"{oops", headers={"X-GitHub-Event": "push"}),
        400,
        "invalid_request",
    )
    assert count_deploys(server.engine) == 2


@pytest.fixture
def signed_server(settings: Settings, engine: Engine) -> Iterator[ApiServer]:
    settings = settings.model_copy(
        update={"github_webhook_secret": SecretStr("gh-secret"), "api_key": None}
    )
    with serve_api(settings, engine, RecordingOrchestrator()) as running:
        yield running


def test_without_an_api_key_the_server_signs_and_github_signatures_are_checked(
    signed_server: ApiServer, origin: GitRepo
) -> None:
    with session_scope(signed_server.engine) as session:
        app = make_app(session, origin).name
    admin = signed_server.key("admin")
    with signed_server.client(admin) as client:
        url = body(client.get(f"/hooks/github/deploy/{app}/staging/"), 200)["url"]
    assert url.startswith(
        f"{signed_server.settings.public_url}/webhooks/github/deploy/{app}/staging/"
    )
    local = signed_server.url + url.removeprefix(signed_server.settings.public_url)
    payload = push(origin.git("rev-parse", "HEAD"))
    raw = json.dumps(payload).encode()
    good = "sha256=" + hmac.new(b"gh-secret", raw, hashlib.sha256).hexdigest()
    assert error(send(local, payload), 403, "forbidden")
    assert error(
        send(local, payload, **{"X-Hub-Signature-256": "sha256=" + "0" * 64}), 403, "forbidden"
    )
    response = httpx.post(
        local,
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": good,
        },
    )
    assert body(response, 201)["user"]["name"] == "ana@example.com"


def test_the_access_log_hides_a_signed_hooks_digest(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    with server.client("s3cr3t-api-key") as admin:
        url = body(admin.get(f"/hooks/github/deploy/{app}/staging/"), 200)["url"]
    digest = url.rstrip("/").rsplit("/", 1)[1]
    access = logging.getLogger("uvicorn.access")  # uvicorn's: it does not propagate to root
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        local = server.url + url.removeprefix(server.settings.public_url)
        answer = send(local, push(origin.commit("x")), event="ping")
        assert body(answer, 200) == {"ignored": "'ping' event"}
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    logged = [record.getMessage() for record in records]
    assert any(f"/webhooks/github/deploy/{app}/staging/********/" in m for m in logged), logged
    assert not any(digest in m for m in logged)
