"""A Heroku Platform API double (v3): sources with upload URLs, builds with a streamed output
and a final status, `{"id", "message"}` errors, the version-3 Accept header required."""

from __future__ import annotations

import io
import itertools
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.doubles import HttpDouble, Reply, Request

ACCEPT = "application/vnd.heroku+json; version=3"


@dataclass
class HerokuDouble(HttpDouble):
    api_key: str = "heroku-key"
    app: str = "acme-web"
    output: list[str] = field(
        default_factory=lambda: ["-----> Building on the Heroku-24 stack", "-----> Done"]
    )
    outcome: str = "succeeded"
    line_delay: float = 0.05
    blobs: dict[str, bytes] = field(default_factory=dict)
    upload_headers: dict[str, str] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.route("POST", "/sources", self._source)
        self.route("PUT", "/blobs/(?P<blob>\\w+)", self._upload)
        self.route("POST", "/apps/(?P<app>[^/]+)/builds", self._build)
        self.route("GET", "/apps/(?P<app>[^/]+)/builds/(?P<id>[\\w-]+)", self._show)
        self.route("GET", "/streams/(?P<id>[\\w-]+)", self._stream)

    def files(self, blob: str) -> dict[str, str]:
        with tarfile.open(fileobj=io.BytesIO(self.blobs[blob]), mode="r:gz") as archive:
            return {
                m.name: archive.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in archive.getmembers()
                if m.isfile()
            }

    def _refuse(self, request: Request) -> Reply | None:
        if request.headers.get("accept") != ACCEPT:
            return Reply(406, {"id": "not_acceptable", "message": "Accept header is required"})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"id": "unauthorized", "message": "Invalid credentials provided."})
        if "app" in request.match.groupdict() and request.match["app"] != self.app:
            return Reply(
                404, {"id": "not_found", "message": "Couldn't find that app.", "resource": "app"}
            )
        return None

    def _source(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        blob = f"b{next(self._ids)}"
        return Reply(
            201,
            {
                "source_blob": {
                    "get_url": f"{self.url}/blobs/{blob}?signed=get",
                    "put_url": f"{self.url}/blobs/{blob}?signed=put",
                }
            },
        )

    def _upload(self, request: Request) -> Reply:
        # A presigned object-store URL: it refuses a Content-Type it was not signed with.
        if request.headers.get("content-type"):
            return Reply(403, "<Error><Code>SignatureDoesNotMatch</Code></Error>")
        self.blobs[request.match["blob"]] = request.body
        self.upload_headers = request.headers
        return Reply(200, "")

    def _build(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        body = request.json()
        blob_url = body.get("source_blob", {}).get("url", "")
        blob = blob_url.split("/blobs/")[-1].split("?")[0]
        if blob not in self.blobs:
            return Reply(
                422, {"id": "invalid_params", "message": "source_blob.url could not be fetched"}
            )
        build_id = f"0000-{next(self._ids)}"
        build = {
            "id": build_id,
            "status": "pending",
            "source_blob": body["source_blob"],
            "output_stream_url": f"{self.url}/streams/{build_id}",
            "app": {"id": self.app},
            "blob": blob,
        }
        self.builds[build_id] = build
        return Reply(201, build)

    def _show(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        build = self.builds.get(request.match["id"])
        if build is None:
            return Reply(404, {"id": "not_found", "message": "Couldn't find that build."})
        return Reply(200, build)

    def _stream(self, request: Request) -> Reply:
        build = self.builds[request.match["id"]]

        def lines() -> Iterator[bytes]:
            for line in self.output:
                time.sleep(self.line_delay)
                yield (line + "\n").encode()
            build["status"] = self.outcome

        return Reply(200, stream=lines(), headers={"Content-Type": "text/plain"})
