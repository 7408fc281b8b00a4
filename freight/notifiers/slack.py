"""The `slack` notifier: one message per deploy, posted when it is queued and updated in place
(`chat.update`) as it moves; a failure adds a thread reply with the end of the log. Teams
without a bot give an incoming-webhook URL instead: a message per event (those cannot be
edited). Speaks Slack's Web API through slack-sdk; its base URL is a setting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler, RetryHandler, default_retry_handlers
from slack_sdk.webhook import WebhookClient

from freight.errors import IntegrationError
from freight.github import repo_of
from freight.notifiers import registry
from freight.notifiers.base import DeployEvent, Notice, NotifyContext
from freight.plugins import PluginConfig

TIMEOUT = 10
LOOKS = {
    "queued": ("#9e9e9e", "queued"),
    "started": ("#2196f3", "deploying"),
    "finished": ("#2eb67d", "finished"),
    "failed": ("#e01e5a", "FAILED"),
    "cancelled": ("#ecb22e", "cancelled"),
}


# How each notice that is not a deploy's starts.
EMOJI = {
    "locked": ":lock:",
    "unlocked": ":unlock:",
    "expired": ":unlock:",
    "frozen": ":snowflake:",
    "drift_found": ":warning:",
    "drift_resolved": ":white_check_mark:",
    "machine_lost": ":rotating_light:",
}


class SlackConfig(PluginConfig):
    type: Literal["slack"] = "slack"
    token: str | None = None  # a bot token, e.g. "${SLACK_TOKEN}"
    channel: str | None = None
    # Per environment, instead of (or over) `channel`: {production: "#deploys-prod"}.
    channels: dict[str, str] = Field(default_factory=dict)
    webhook_url: str | None = None  # an incoming webhook, e.g. "${SLACK_WEBHOOK_URL}"
    secret_fields: ClassVar[tuple[str, ...]] = ("token", "webhook_url")

    @model_validator(mode="after")
    def _one_way_in(self) -> SlackConfig:
        if self.webhook_url is None and not (self.token and (self.channel or self.channels)):
            raise ValueError("give a bot token and a channel (or channels), or a webhook_url")
        return self

    def channel_for(self, environment: str) -> str:
        channel = self.channels.get(environment, self.channel)
        if channel is None:
            raise IntegrationError(f"Slack: no channel for environment '{environment}'")
        return channel


def _retry_handlers() -> list[RetryHandler]:
    """slack-sdk's own, plus its wait on a 429: Slack says in `Retry-After` how many seconds to
    wait, and may disable an app that keeps calling meanwhile (slack-sdk waits that long plus up
    to a second of jitter). A 429 means Slack took nothing, so the retry cannot post a message
    twice; if it is refused too, the notifier fails and the delivery's own back-off takes over."""
    return [*default_retry_handlers(), RateLimitErrorRetryHandler(max_retry_count=1)]


def _links(event: DeployEvent) -> tuple[str, str]:
    """The sha (linked to its commit) and what it ships since the previous one (compare link)."""
    repo = repo_of(event.repository)
    short = (event.sha or "")[:7]
    prev = (event.prev_sha or "")[:7]
    sha = f"<https://github.com/{repo}/commit/{event.sha}|{short}>" if repo else f"`{short}`"
    if event.commits is None:
        count = ""
    else:
        count = f"{event.commits} commit{'s' if event.commits != 1 else ''}"
    if not event.prev_sha:
        return sha, f"{count} (first deploy)" if count else "first deploy"
    shipped = count or "changes"
    since = (
        f"<https://github.com/{repo}/compare/{event.prev_sha}...{event.sha}|{shipped} since {prev}>"
        if repo
        else f"{shipped} since `{prev}`"
    )
    return sha, since


def message(event: DeployEvent) -> dict[str, Any]:
    """The message for the deploy as of this event: fallback text and a coloured attachment."""
    color, word = LOOKS[event.event]
    sha, since = _links(event)
    title = f"<{event.link}|{event.app}/{event.environment} #{event.number}>"
    lines = [f"*{title}* {word}", f"{event.user} · `{event.ref}` {sha} · {since}"]
    if event.duration is not None and event.final:
        lines.append(f"took {event.duration:.0f}s")
    if event.reason and event.event in ("failed", "cancelled"):
        lines.append(event.reason)
    if event.forced_past:
        lines.append(f":warning: forced past: {event.forced_past}. Reason: {event.force_reason}")
    text = f"{event.name} {word}: {event.ref} ({(event.sha or '')[:7]}) by {event.user}"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]
    return {"text": text, "attachments": [{"color": color, "blocks": blocks}]}


def _failure_reply(event: DeployEvent) -> str:
    tail = "\n".join(event.log_tail) or "(no output)"
    return f"Last lines of the log of {event.name}:\n```\n{tail[-2900:]}\n```"


class SlackNotifier:
    def send(
        self, config: PluginConfig, event: DeployEvent, context: NotifyContext
    ) -> Mapping[str, Any] | None:
        assert isinstance(config, SlackConfig)
        if config.token is None:
            assert config.webhook_url is not None
            self._webhook(config.webhook_url, message(event))
            return None
        client = WebClient(
            token=config.token,
            base_url=context.urls.slack,
            timeout=TIMEOUT,
            retry_handlers=_retry_handlers(),
        )
        content = message(event)
        state = dict(context.state)
        try:
            if "ts" in state:
                client.chat_update(channel=state["channel"], ts=state["ts"], **content)
            else:
                posted = client.chat_postMessage(
                    channel=config.channel_for(event.environment), **content
                )
                state = {"channel": posted["channel"], "ts": posted["ts"]}
            if event.event == "failed":
                client.chat_postMessage(
                    channel=state["channel"], thread_ts=state["ts"], text=_failure_reply(event)
                )
        except SlackApiError as exc:
            raise _slack_error(exc) from exc
        except OSError as exc:
            raise IntegrationError(f"Slack unreachable at {context.urls.slack}: {exc}") from exc
        return state

    def announce(self, config: PluginConfig, notice: Notice, context: NotifyContext) -> None:
        assert isinstance(config, SlackConfig)
        text = f"{EMOJI.get(notice.event, ':information_source:')} {notice.sentence()}"
        if config.token is None:
            assert config.webhook_url is not None
            self._webhook(config.webhook_url, {"text": text})
            return
        client = WebClient(
            token=config.token,
            base_url=context.urls.slack,
            timeout=TIMEOUT,
            retry_handlers=_retry_handlers(),
        )
        channel = config.channel_for(notice.environment) if notice.environment else config.channel
        channels = [channel] if channel else sorted(set(config.channels.values()))
        try:
            for one in channels:
                client.chat_postMessage(channel=one, text=text)
        except SlackApiError as exc:
            raise _slack_error(exc) from exc
        except OSError as exc:
            raise IntegrationError(f"Slack unreachable at {context.urls.slack}: {exc}") from exc

    def _webhook(self, url: str, content: dict[str, Any]) -> None:
        try:
            response = WebhookClient(url, timeout=TIMEOUT, retry_handlers=_retry_handlers()).send(
                **content
            )
        except OSError as exc:
            raise IntegrationError(f"Slack webhook unreachable: {exc}") from exc
        if response.status_code != 200:
            raise IntegrationError(
                f"Slack webhook answered {response.status_code}: {response.body}"
            )


def _slack_error(exc: SlackApiError) -> IntegrationError:
    response = exc.response
    if response.status_code == 429:
        wait = response.headers.get("Retry-After", response.headers.get("retry-after", "?"))
        return IntegrationError(f"Slack rate limited the notifier; retry after {wait}s")
    return IntegrationError(f"Slack refused: {response.get('error', response.status_code)}")


registry.register("slack", SlackConfig)(SlackNotifier())
