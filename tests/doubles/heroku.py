"""A Heroku Platform API double (v3): sources with upload URLs, builds with a streamed output
and a final status, `{"id", "message"}` errors, the version-3 Accept header required.

A build runs on its own clock, whoever reads its output: a line of output every `line_delay`
seconds, then its final status. Its output stream can be dropped mid-way (the socket really
closed) and resumed with `Range: bytes=N-`, as Heroku documents for `output_stream_url`."""

from __future__ import annotations

import io
import itertools
import re
import tarfile
import threading
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
    # For each request of a build's output stream in turn: after how many bytes of its body the
    # connection is dropped. Requests past the end of the list get the whole stream.
    drop_after: list[int] = field(default_factory=list)
    # False: the output stream cannot be resumed; asked from an offset (`Range`), it is gone.
    resumable: bool = True
    # When given, builds stay pending after their last line of output until it is set.
    finish: threading.Event | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    upload_headers: dict[str, str] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self._started: dict[str, float] = {}
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
        self._started[build_id] = time.monotonic()
        return Reply(201, build)

    def _show(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        build = self.builds.get(request.match["id"])
        if build is None:
            return Reply(404, {"id": "not_found", "message": "Couldn't find that build."})
        written = time.monotonic() >= self._line_due(build["id"], len(self.output))
        if written and (self.finish is None or self.finish.is_set()):
            build["status"] = self.outcome
        return Reply(200, build)

    def _line_due(self, build_id: str, count: int) -> float:
        """When the build has written its first `count` lines."""
        return self._started[build_id] + count * self.line_delay

    def _stream(self, request: Request) -> Reply:
        build_id = request.match["id"]
        if build_id not in self._started:
            return Reply(404, "Not Found")
        if not self.resumable and "range" in request.headers:
            return Reply(404, "Not Found")
        pieces = [(line + "\n").encode() for line in self.output]
        total = sum(len(piece) for piece in pieces)
        first = 0
        if asked := re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", "")):
            first = int(asked[1])
            if first >= total:
                return Reply(416, "", {"Content-Range": f"bytes */{total}"})
        drop = self.drop_after.pop(0) if self.drop_after else None

        def body() -> Iterator[bytes]:
            position = sent = 0
            for index, piece in enumerate(pieces):
                start, position = position, position + len(piece)
                if position <= first:
                    continue
                time.sleep(max(0.0, self._line_due(build_id, index + 1) - time.monotonic()))
                piece = piece[max(0, first - start) :]
                if drop is not None and sent + len(piece) > drop:
                    if drop > sent:  # an empty chunk would end the body properly
                        yield piece[: drop - sent]
                    # Raised out of the body, this ends the handler: the server closes the
                    # socket with the chunked body unfinished, as a dropped connection would.
                    raise ConnectionAbortedError("the double drops the output stream")
                sent += len(piece)
                yield piece

        if first:
            headers = {
                "Content-Type": "text/plain",
                "Content-Range": f"bytes {first}-{total - 1}/{total}",
            }
            return Reply(206, stream=body(), headers=headers)
        return Reply(200, stream=body(), headers={"Content-Type": "text/plain"})
