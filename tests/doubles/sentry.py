"""A Sentry double: the releases API (create 201/208, update, deploys) with bearer-token auth,
and the envelope endpoint a DSN points sentry-sdk at (gzip-compressed envelopes)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from tests.doubles import HttpDouble, Reply, Request


@dataclass
class SentryDouble(HttpDouble):
    token: str = "sntrys_test"
    organization: str = "acme"
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    envelopes: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        org = r"/api/0/organizations/(?P<org>[^/]+)"
        self.route("POST", org + "/releases/", self._create)
        self.route("PUT", org + "/releases/(?P<version>[^/]+)/", self._update)
        self.route("POST", org + "/releases/(?P<version>[^/]+)/deploys/", self._deploy)
        self.route("POST", r"/api/(?P<project>\d+)/envelope/", self._envelope)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/0/"

    def dsn(self, project: int = 42) -> str:
        return f"http://publickey@{self.url.removeprefix('http://')}/{project}"

    def _refuse(self, request: Request) -> Reply | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"detail": "Invalid token"})
        if request.match["org"] != self.organization:
            return Reply(404, {"detail": "The requested resource does not exist"})
        return None

    def _create(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        body = request.json()
        if not body.get("version") or not body.get("projects"):
            return Reply(400, {"version": ["This field is required."]})
        if body["version"] in self.releases:
            return Reply(208, self.releases[body["version"]])
        release = {**body, "dateReleased": None, "deployCount": 0}
        self.releases[body["version"]] = release
        return Reply(201, release)

    def _update(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        release = self.releases.get(request.match["version"])
        if release is None:
            return Reply(404, {"detail": "The requested resource does not exist"})
        release.update(request.json())
        return Reply(200, release)

    def _deploy(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        release = self.releases.get(request.match["version"])
        if release is None:
            return Reply(404, {"detail": "The requested resource does not exist"})
        body = request.json()
        if not body.get("environment"):
            return Reply(400, {"environment": ["This field is required."]})
        release["deployCount"] += 1
        deploy = {**body, "id": str(len(self.deploys) + 1), "version": request.match["version"]}
        self.deploys.append(deploy)
        return Reply(201, deploy)

    def _envelope(self, request: Request) -> Reply:
        if not request.headers.get("x-sentry-auth", "").startswith("Sentry sentry_key=publickey"):
            return Reply(401, {"detail": "missing authorization"})
        raw = request.body
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        self.envelopes.append([json.loads(line) for line in raw.splitlines() if line.strip()])
        return Reply(200, {"id": self.envelopes[-1][0].get("event_id")})

    def exceptions(self) -> list[dict[str, Any]]:
        """The exception values of every event received."""
        found = []
        for envelope in self.envelopes:
            for item in envelope:
                for value in item.get("exception", {}).get("values", []):
                    found.append(value)
        return found
