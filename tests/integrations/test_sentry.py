"""Sentry: the `sentry` notifier's release tracking against the Sentry double, and Freight's own
errors reported by sentry-sdk to the envelope endpoint a DSN points at."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk
from pydantic import SecretStr
from sqlalchemy import Engine

from freight.errors import IntegrationError
from freight.notifiers import NotifyContext
from freight.notifiers.sentry import SentryConfig, SentryNotifier
from freight.plugins import ServiceUrls
from freight.service import releases
from freight.settings import Settings
from tests.apiserver import serve_api
from tests.doubles.sentry import SentryDouble
from tests.factories import RecordingOrchestrator
from tests.helpers import wait_for
from tests.integrations.events import PREV, SHA, event


@pytest.fixture
def sentry() -> Iterator[SentryDouble]:
    with SentryDouble().running() as double:
        yield double  # type: ignore[misc]


def send_all(sentry: SentryDouble, config: SentryConfig, *events: Any) -> None:
    with httpx.Client(timeout=5) as client:
        for one in events:
            SentryNotifier().send(
                config, one, NotifyContext(client=client, urls=ServiceUrls(sentry=sentry.api_url))
            )


def test_release_with_commits_finalized_with_a_deploy(sentry: SentryDouble) -> None:
    config = SentryConfig(organization="acme", project="web", token="sntrys_test")
    dates = {"date_started": "2026-12-01T10:00:00Z", "date_finished": "2026-12-01T10:01:23Z"}
    send_all(sentry, config, event("queued"), event("started", **dates), event("finished", **dates))
    release = sentry.releases[SHA]
    assert release["projects"] == ["web"]
    assert release["refs"] == [{"repository": "acme/web", "commit": SHA, "previousCommit": PREV}]
    assert release["dateReleased"] == "2026-12-01T10:01:23Z"
    assert sentry.deploys == [
        {
            "environment": "production",
            "name": "web/production#42",
            "url": "https://freight.example.com/deploys/web/production/42/",
            "dateStarted": "2026-12-01T10:00:00Z",
            "dateFinished": "2026-12-01T10:01:23Z",
            "id": "1",
            "version": SHA,
        }
    ]
    assert all(r.headers["authorization"] == "Bearer sntrys_test" for r in sentry.requests)
    # The same sha again (a redeploy): Sentry answers 208, and a second deploy is recorded.
    send_all(sentry, config, event("started", **dates), event("finished", **dates))
    assert len(sentry.deploys) == 2 and len(sentry.releases) == 1


def test_versions_follow_the_template_and_failures_record_no_deploy(sentry: SentryDouble) -> None:
    config = SentryConfig(
        organization="acme", project="web", token="sntrys_test", version="{app}@{sha}"
    )
    send_all(sentry, config, event("started"), event("failed", reason="boom"))
    assert list(sentry.releases) == [f"web@{SHA}"] and sentry.deploys == []


def test_refusals_are_integration_errors(sentry: SentryDouble) -> None:
    with pytest.raises(IntegrationError, match="401"):
        send_all(
            sentry, SentryConfig(organization="acme", project="web", token="bad"), event("started")
        )
    with pytest.raises(IntegrationError, match="404"):
        send_all(
            sentry,
            SentryConfig(organization="other", project="web", token="sntrys_test"),
            event("started"),
        )


def test_freights_own_errors_reach_sentry(
    sentry: SentryDouble, settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("release state exploded")

    monkeypatch.setattr(releases, "release_state", broken)
    settings = settings.model_copy(update={"sentry_dsn": SecretStr(sentry.dsn())})
    try:
        with serve_api(settings, engine, RecordingOrchestrator()) as server:
            with server.client("s3cr3t-api-key") as client:
                response = client.get("/releases/")
            assert response.status_code == 500
            assert response.json()["error_name"] == "internal_error"
            sentry_sdk.flush(timeout=10)
            wait_for(lambda: sentry.exceptions(), 10, "an event at the envelope endpoint")
    finally:
        sentry_sdk.init(dsn=None)
    (exception,) = sentry.exceptions()
    assert (exception["type"], exception["value"]) == ("RuntimeError", "release state exploded")
