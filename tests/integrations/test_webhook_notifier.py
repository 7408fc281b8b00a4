"""The `webhook` notifier: the JSON it posts and, with a secret, its signature."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import httpx
import pytest

from freight.errors import IntegrationError
from freight.notifiers import NotifyContext
from freight.notifiers.webhook import WebhookConfig, WebhookNotifier
from freight.plugins import ServiceUrls
from tests.doubles import HttpDouble, Reply
from tests.integrations.events import PREV, SHA, event


@pytest.fixture
def hook() -> Iterator[HttpDouble]:
    double = HttpDouble()
    double.route("POST", "/hook", lambda request: Reply(200, "ok"))
    with double.running() as running:
        yield running


def send(hook: HttpDouble, config: WebhookConfig, name: str) -> None:
    with httpx.Client(timeout=5) as client:
        WebhookNotifier().send(
            config, event(name), NotifyContext(client=client, urls=ServiceUrls())
        )


def test_signed_json_with_text_status_names(hook: HttpDouble) -> None:
    config = WebhookConfig(url=f"{hook.url}/hook", secret="hook-secret", headers={"X-Team": "web"})
    for name in ("queued", "started", "finished", "failed", "cancelled"):
        send(hook, config, name)
    bodies = [r.json() for r in hook.requests]
    assert [(b["event"], b["status"]) for b in bodies] == [
        ("queued", "pending"),
        ("started", "in_progress"),
        ("finished", "finished"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
    ]
    finished = bodies[2]
    assert (finished["sha"], finished["previous_sha"], finished["duration"]) == (SHA, PREV, 83.5)
    assert finished["app"] == finished["app_name"] == "web" and finished["deploy_number"] == 42
    for request in hook.requests:
        expected = "sha256=" + hmac.new(b"hook-secret", request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-freight-signature-256"] == expected
        assert request.headers["x-team"] == "web"
        assert request.headers["content-type"] == "application/json"


def test_unsigned_without_a_secret_and_refusals_raise(hook: HttpDouble) -> None:
    send(hook, WebhookConfig(url=f"{hook.url}/hook"), "queued")
    assert "x-freight-signature-256" not in hook.requests[0].headers
    hook.fail_next.append(Reply(500, "boom"))
    with pytest.raises(IntegrationError, match="answered 500"):
        send(hook, WebhookConfig(url=f"{hook.url}/hook"), "queued")
