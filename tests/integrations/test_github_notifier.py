"""The `github` notifier against the GitHub double: commit statuses and a Deployment with its
statuses, one per event, in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freight.errors import IntegrationError
from freight.notifiers import NotifyContext
from freight.notifiers.github import GitHubNotifier, GitHubNotifierConfig
from freight.plugins import ServiceUrls
from tests.doubles import Reply
from tests.doubles.github import GitHubDouble
from tests.integrations.events import SHA, event


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    with GitHubDouble().running() as double:
        yield double  # type: ignore[misc]


def send_all(
    github: GitHubDouble, config: GitHubNotifierConfig, *names: str, **fields: Any
) -> None:
    state: dict[str, Any] = {}
    with httpx.Client(timeout=5) as client:
        for name in names:
            kept = GitHubNotifier().send(
                config,
                event(name, **fields),
                NotifyContext(client=client, urls=ServiceUrls(github=github.url), state=state),
            )
            state = dict(kept) if kept is not None else state


def test_commit_status_follows_the_deploy(github: GitHubDouble) -> None:
    config = GitHubNotifierConfig(token="gh-token")
    send_all(github, config, "queued", "started", "finished")
    send_all(github, config, "queued", "failed", reason="Command exited with 3")
    send_all(github, config, "cancelled", reason="Cancelled by bob")
    states = [(s["state"], s["context"]) for s in github.created_statuses]
    assert states == [
        ("pending", "freight/deploy/production"),
        ("pending", "freight/deploy/production"),
        ("success", "freight/deploy/production"),
        ("pending", "freight/deploy/production"),
        ("failure", "freight/deploy/production"),
        ("error", "freight/deploy/production"),
    ]
    first = github.created_statuses[0]
    assert first["sha"] == SHA and first["target_url"].endswith("/deploys/web/production/42/")
    assert first["description"] == "web/production#42 queued by ana@example.com"
    assert github.created_statuses[4]["description"].endswith(": Command exited with 3")
    assert (
        github.received("POST", f"/repos/acme/web/statuses/{SHA}")[0].headers["authorization"]
        == "Bearer gh-token"
    )
    assert github.deployments == {}


def test_a_deployment_and_its_statuses(github: GitHubDouble) -> None:
    config = GitHubNotifierConfig(
        token="gh-token",
        statuses=False,
        deployments=True,
        environment_url="https://{environment}.web.example.com",
    )
    send_all(github, config, "queued", "started", "finished")
    send_all(github, config, "queued", "cancelled")
    (one, two) = github.deployments.values()
    assert one["request"] | {"payload": None} == {
        "ref": SHA,
        "environment": "production",
        "description": "web/production#42 (main)",
        "auto_merge": False,
        "required_contexts": [],
        "payload": None,
        "production_environment": True,
    }
    by_deployment = [(s["deployment_id"], s["state"]) for s in github.deployment_statuses]
    assert by_deployment == [
        (one["id"], "queued"),
        (one["id"], "in_progress"),
        (one["id"], "success"),
        (two["id"], "queued"),
        (two["id"], "inactive"),
    ]
    success = github.deployment_statuses[2]
    assert success["environment_url"] == "https://production.web.example.com"
    assert success["log_url"] == "https://freight.example.com/deploys/web/production/42/"
    assert github.created_statuses == []


def test_long_descriptions_are_cut_to_what_github_takes(github: GitHubDouble) -> None:
    send_all(github, GitHubNotifierConfig(token="gh-token"), "failed", reason="x" * 300)
    assert len(github.created_statuses[0]["description"]) == 140


def test_refusals_are_integration_errors_naming_the_problem(github: GitHubDouble) -> None:
    github.fail_next.append(Reply(401, {"message": "Bad credentials"}))
    with pytest.raises(IntegrationError, match="401 Bad credentials"):
        send_all(github, GitHubNotifierConfig(token="gh-token"), "queued")
    with pytest.raises(IntegrationError, match="not a GitHub repository"):
        send_all(github, GitHubNotifierConfig(token="t"), "queued", repository="/srv/git/web")


def test_config_needs_something_to_do() -> None:
    with pytest.raises(ValueError, match="statuses or deployments"):
        GitHubNotifierConfig(token="t", statuses=False)
