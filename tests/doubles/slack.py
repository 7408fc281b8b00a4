"""A Slack double: the Web API's chat.postMessage and chat.update (bearer token, JSON bodies,
`{"ok": false, "error": ...}` answers with HTTP 200, 429 with Retry-After) and an incoming
webhook (`ok` as text/plain, `invalid_payload`/`no_service` errors)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.doubles import HttpDouble, Reply, Request

CHANNELS = {"#deploys": "C0DEPLOYS", "#deploys-prod": "C0PROD"}


@dataclass
class SlackDouble(HttpDouble):
    token: str = "xoxb-test"
    # channel id -> ts -> message as last posted or updated
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    webhook_posts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        self._ts = itertools.count(1)
        self.route("POST", "/api/chat.postMessage", self._post)
        self.route("POST", "/api/chat.update", self._update)
        self.route("POST", "/services/T000/B000/(?P<secret>\\w+)", self._webhook)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/T000/B000/hooksecret"

    def _refuse(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(200, {"ok": False, "error": "invalid_auth"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return Reply(200, {"ok": False, "error": "invalid_arguments"})
        return None

    def _post(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        body = request.json()
        channel = CHANNELS.get(body.get("channel", ""), body.get("channel"))
        if channel not in CHANNELS.values():
            return Reply(200, {"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks") and not body.get("attachments"):
            return Reply(200, {"ok": False, "error": "no_text"})
        ts = f"1700000000.{next(self._ts):06d}"
        self.messages.setdefault(channel, {})[ts] = body
        return Reply(200, {"ok": True, "channel": channel, "ts": ts, "message": body})

    def _update(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        body = request.json()
        kept = self.messages.get(body.get("channel", ""), {})
        if body.get("ts") not in kept:
            return Reply(200, {"ok": False, "error": "message_not_found"})
        kept[body["ts"]] = body
        return Reply(
            200,
            {"ok": True, "channel": body["channel"], "ts": body["ts"], "text": body.get("text")},
        )

    def _webhook(self, request: Request) -> Reply:
        if request.match["secret"] != "hooksecret":
            return Reply(404, "no_service")
        body = request.json()
        if not body.get("text") and not body.get("blocks"):
            return Reply(400, "no_text")
        self.webhook_posts.append(body)
        return Reply(200, "ok")

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.get(channel, {}).values() if m.get("thread_ts") == ts]

    def main_messages(self, channel: str) -> dict[str, dict[str, Any]]:
        return {t: m for t, m in self.messages.get(channel, {}).items() if "thread_ts" not in m}


def ratelimited(seconds: int = 3) -> Reply:
    return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(seconds)})
