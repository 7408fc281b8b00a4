"""A Slack double: the Web API's chat.postMessage and chat.update (bearer token, JSON bodies,
`{"ok": false, "error": ...}` answers with HTTP 200) and an incoming webhook (`ok` as
text/plain, `invalid_payload`/`no_service` errors). Both can be rate limited as Slack documents
it: HTTP 429 with `Retry-After: <seconds>`, and each call's arrival time is recorded."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

from tests.doubles import Handler, HttpDouble, Reply, Request

CHANNELS = {"#deploys": "C0DEPLOYS", "#deploys-prod": "C0PROD"}


@dataclass(frozen=True)
class Arrival:
    path: str
    at: float  # time.monotonic() when the call arrived
    status: int  # what the double answered


@dataclass
class SlackDouble(HttpDouble):
    token: str = "xoxb-test"
    # channel id -> ts -> message as last posted or updated
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    webhook_posts: list[dict[str, Any]] = field(default_factory=list)
    # Every Web API call and webhook post, rate limited or not, in order of arrival.
    arrivals: list[Arrival] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        self._ts = itertools.count(1)
        self._limit_next: list[int] = []
        self._limited_until = 0.0
        self.route("POST", "/api/chat.postMessage", self._rate_limited(self._post))
        self.route("POST", "/api/chat.update", self._rate_limited(self._update))
        self.route(
            "POST", "/services/T000/B000/(?P<secret>\\w+)", self._rate_limited(self._webhook)
        )

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/T000/B000/hooksecret"

    def rate_limit(self, seconds: int, *, calls: int = 1) -> None:
        """Answer the next `calls` calls with 429 and `Retry-After: seconds`. As at Slack, a
        call made before the wait is over is refused too, and does not count."""
        self._limit_next.extend([seconds] * calls)

    def _rate_limited(self, handler: Handler) -> Handler:
        def answer(request: Request) -> Reply:
            now = time.monotonic()
            if now < self._limited_until:
                reply = self._too_many(request, math.ceil(self._limited_until - now), now)
            elif self._limit_next:
                seconds = self._limit_next.pop(0)
                self._limited_until = now + seconds
                reply = self._too_many(request, seconds, now)
            else:
                reply = handler(request)
            self.arrivals.append(Arrival(request.path, now, reply.status))
            return reply

        return answer

    def _too_many(self, request: Request, seconds: int, now: float) -> Reply:
        headers = {"Retry-After": str(seconds)}
        if request.path.startswith("/api/"):
            return Reply(429, {"ok": False, "error": "ratelimited"}, headers)
        # An incoming webhook names no error: it says how many posts it was sent lately.
        ages = [now - a.at for a in self.arrivals if a.path == request.path] + [0.0]
        counts = {
            f"count_{span}_ago": sum(age < limit for age in ages)
            for span, limit in (("hour", 3600), ("minute", 60), ("second", 1))
        }
        return Reply(429, {"ok": False, **counts}, headers)

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
