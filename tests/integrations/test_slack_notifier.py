"""The `slack` notifier through slack-sdk against the Slack double: one message per deploy,
updated in place; a thread reply with the log's end on failure; incoming webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freight.errors import IntegrationError
from freight.notifiers import LockNotice, MachineNotice, NotifyContext
from freight.notifiers.slack import SlackConfig, SlackNotifier
from freight.plugins import ServiceUrls
from tests.doubles.slack import SlackDouble
from tests.integrations.events import PREV, SHA, event


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    with SlackDouble().running() as double:
        yield double  # type: ignore[misc]


def send_all(slack: SlackDouble, config: SlackConfig, *events: Any) -> dict[str, Any]:
    state: dict[str, Any] = {}
    with httpx.Client() as client:
        for one in events:
            kept = SlackNotifier().send(
                config,
                one,
                NotifyContext(client=client, urls=ServiceUrls(slack=slack.api_url), state=state),
            )
            state = dict(kept) if kept is not None else state
    return state


def text_of(posted: dict[str, Any]) -> str:
    return posted["attachments"][0]["blocks"][0]["text"]["text"]


def test_one_message_per_deploy_updated_as_it_moves(slack: SlackDouble) -> None:
    config = SlackConfig(
        token="xoxb-test", channel="#deploys", channels={"production": "#deploys-prod"}
    )
    state = send_all(slack, config, event("queued"), event("started"), event("finished"))
    assert state["channel"] == "C0PROD"
    main = slack.main_messages("C0PROD")
    assert list(main) == [state["ts"]]  # posted once, then updated
    final = main[state["ts"]]
    body = text_of(final)
    assert "<https://freight.example.com/deploys/web/production/42/|web/production #42>" in body
    assert f"<https://github.com/acme/web/commit/{SHA}|{SHA[:7]}>" in body
    assert (
        f"<https://github.com/acme/web/compare/{PREV}...{SHA}|3 commits since {PREV[:7]}>" in body
    )
    assert (
        "ana@example.com" in body and "`main`" in body and "took 84s" in body and "finished" in body
    )
    assert final["attachments"][0]["color"] == "#2eb67d"
    assert final["text"] == f"web/production#42 finished: main ({SHA[:7]}) by ana@example.com"
    assert [r.path for r in slack.requests] == [
        "/api/chat.postMessage",
        "/api/chat.update",
        "/api/chat.update",
    ]
    assert all(r.headers["authorization"] == "Bearer xoxb-test" for r in slack.requests)


def test_a_failure_is_marked_and_threads_the_end_of_the_log(slack: SlackDouble) -> None:
    config = SlackConfig(token="xoxb-test", channel="#deploys")
    tail = tuple(f"line {i}" for i in range(20))
    state = send_all(
        slack,
        config,
        event("started"),
        event("failed", reason="Command exited with 3", log_tail=tail),
    )
    final = slack.main_messages("C0DEPLOYS")[state["ts"]]
    assert "FAILED" in text_of(final) and "Command exited with 3" in text_of(final)
    assert final["attachments"][0]["color"] == "#e01e5a"
    (reply,) = slack.thread("C0DEPLOYS", state["ts"])
    assert reply["text"].startswith("Last lines of the log of web/production#42:\n```\nline 0\n")
    assert reply["text"].endswith("line 19\n```")


def test_cancelled_and_first_deploys_read_right(slack: SlackDouble) -> None:
    config = SlackConfig(token="xoxb-test", channel="#deploys")
    state = send_all(slack, config, event("cancelled", prev_sha=None, reason="Cancelled by bob"))
    body = text_of(slack.main_messages("C0DEPLOYS")[state["ts"]])
    assert "cancelled" in body and "Cancelled by bob" in body and "3 commits (first deploy)" in body


def test_slack_refusals_name_slacks_error(slack: SlackDouble) -> None:
    with pytest.raises(IntegrationError, match="channel_not_found"):
        send_all(slack, SlackConfig(token="xoxb-test", channel="#nowhere"), event("queued"))
    with pytest.raises(IntegrationError, match="invalid_auth"):
        send_all(slack, SlackConfig(token="xoxb-wrong", channel="#deploys"), event("queued"))
    slack.rate_limit(1, calls=2)  # still limited when the one retry comes
    with pytest.raises(IntegrationError, match="rate limited the notifier; retry after 1s"):
        send_all(slack, SlackConfig(token="xoxb-test", channel="#deploys"), event("queued"))
    assert [a.status for a in slack.arrivals[-2:]] == [429, 429]


def test_a_rate_limited_post_waits_as_long_as_slack_asks_then_posts_once(
    slack: SlackDouble,
) -> None:
    slack.rate_limit(2)
    state = send_all(slack, SlackConfig(token="xoxb-test", channel="#deploys"), event("queued"))
    assert list(slack.main_messages("C0DEPLOYS")) == [state["ts"]]
    refused, posted = slack.arrivals
    assert refused.path == posted.path == "/api/chat.postMessage"
    assert (refused.status, posted.status) == (429, 200)
    assert posted.at - refused.at >= 2


def test_a_rate_limited_webhook_waits_as_long_as_slack_asks(slack: SlackDouble) -> None:
    slack.rate_limit(1)
    send_all(slack, SlackConfig(webhook_url=slack.webhook_url), event("started"))
    assert len(slack.webhook_posts) == 1
    refused, posted = slack.arrivals
    assert (refused.status, posted.status) == (429, 200)
    assert posted.at - refused.at >= 1


def test_incoming_webhook_posts_each_event(slack: SlackDouble) -> None:
    config = SlackConfig(webhook_url=slack.webhook_url)
    send_all(slack, config, event("started"), event("finished"))
    assert [p["text"].split(":")[0] for p in slack.webhook_posts] == [
        "web/production#42 deploying",
        "web/production#42 finished",
    ]
    with pytest.raises(IntegrationError, match="404: no_service"):
        send_all(
            slack,
            SlackConfig(webhook_url=slack.webhook_url.replace("hooksecret", "gone")),
            event("queued"),
        )


def test_config_needs_a_way_in() -> None:
    with pytest.raises(ValueError, match="bot token and a channel"):
        SlackConfig(token="xoxb-test")


def test_locks_are_announced_in_the_channel(slack: SlackDouble) -> None:
    config = SlackConfig(
        token="xoxb-test", channel="#deploys", channels={"production": "#deploys-prod"}
    )
    notice = LockNotice(
        "locked", "web", "production", "db migration", "ana", "ana", "2026-12-02T18:00:00Z"
    )
    with httpx.Client() as client:
        SlackNotifier().announce(
            config, notice, NotifyContext(client=client, urls=ServiceUrls(slack=slack.api_url))
        )
    (posted,) = slack.main_messages("C0PROD").values()
    assert (
        posted["text"]
        == ":lock: web/production locked by ana until 2026-12-02T18:00:00Z: db migration"
    )


def test_the_fleet_s_news_goes_to_the_environment_s_channel(slack: SlackDouble) -> None:
    config = SlackConfig(
        token="xoxb-test", channel="#deploys", channels={"production": "#deploys-prod"}
    )
    context = NotifyContext(client=httpx.Client(), urls=ServiceUrls(slack=slack.api_url))
    for kind, detail in (
        ("drift_found", "web-2 runs 1111111, web/production is at 2222222"),
        ("machine_lost", "web-3 is lost: no check-in for 2m30s"),
        ("drift_resolved", "web-2 runs 2222222, as web/production does"),
    ):
        notice = MachineNotice(kind, "web-2", "web", "production", detail, "2026-12-03T12:00Z")
        SlackNotifier().announce(config, notice, context)
    context.client.close()
    assert [m["text"] for m in slack.main_messages("C0PROD").values()] == [
        ":warning: Drift found in web/production: web-2 runs 1111111, web/production is at 2222222",
        ":rotating_light: Machine lost in web/production: web-3 is lost: no check-in for 2m30s",
        ":white_check_mark: Drift resolved in web/production: web-2 runs 2222222, as "
        "web/production does",
    ]


def test_a_deploy_forced_past_a_lock_says_why(slack: SlackDouble) -> None:
    config = SlackConfig(token="xoxb-test", channel="#deploys")
    state = send_all(
        slack,
        config,
        event(
            "started",
            force_reason="hotfix for #12",
            forced_past="web/production is locked by ana: audit",
        ),
    )
    assert (
        ":warning: forced past: web/production is locked by ana: audit. Reason: hotfix for #12"
    ) in text_of(slack.main_messages("C0DEPLOYS")[state["ts"]])
