"""A deploy request runs the app's checks once: GitHub reporting a failure refuses it with
`check_failed` (nothing written), pending is fine, `force` skips them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from freight.db import session_scope
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.contract.helpers import body, count_deploys, error
from tests.doubles.github import GitHubDouble
from tests.factories import GitRepo, RecordingOrchestrator, make_app


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    with GitHubDouble().running() as double:
        yield double  # type: ignore[misc]


@pytest.fixture
def checked(settings: Settings, engine: Engine, github: GitHubDouble) -> Iterator[ApiServer]:
    settings = settings.model_copy(update={"github_api_url": github.url})
    with serve_api(settings, engine, RecordingOrchestrator()) as running:
        yield running


def test_github_ci_screens_deploy_requests(
    checked: ApiServer, github: GitHubDouble, origin: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "gh-token")
    checks = [
        {"type": "github", "repo": "acme/web", "contexts": ["ci/build"], "token": "${GITHUB_TOKEN}"}
    ]
    with session_scope(checked.engine) as session:
        app = make_app(session, origin, checks=checks).name
    sha = origin.git("rev-parse", "HEAD")
    request = {"app": app, "env": "staging", "user": "ana"}
    with checked.client("s3cr3t-api-key") as client:
        github.set_status(sha, "ci/build", "failure", "3 tests failed")
        message = error(client.post("/deploys/", json=request), 400, "check_failed")
        assert message == (
            f"Check github failed: [failure] ci/build: 3 tests failed "
            f"(https://ci.example.com/ci/build/{sha[:7]})"
        )
        assert count_deploys(checked.engine) == 0
        assert body(client.post("/deploys/", json={**request, "force": True}), 201)
        github.set_status(sha, "ci/build", "pending", "building")
        assert body(client.post("/deploys/", json=request), 201)["status"] == "pending"
    looked = github.received("GET", f"/repos/acme/web/commits/{sha}/status")
    assert len(looked) == 2 and looked[0].headers["authorization"] == "Bearer gh-token"
