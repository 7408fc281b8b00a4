"""The `heroku` provider: the checked-out commit deployed as a Heroku build, through the
Platform API (v3): a source is made, the checkout uploaded to it as a tarball, a build of it
created with the sha as its version, the build's output streamed into the deploy log, and the
build's final status read. That status alone decides the deploy: the output stream is only
there to be shown, and may drop (it is then resumed, or given up). Cancel stops following the
build (Heroku has no way to stop one)."""

from __future__ import annotations

import io
import queue
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from freight.errors import CommandFailed, DeployCancelled, DeployTimeout, ExternalError
from freight.plugins import PluginConfig
from freight.providers import registry
from freight.providers.base import DeployContext, ProviderRuntime

ACCEPT = "application/vnd.heroku+json; version=3"
POLL_INTERVAL = 1.0
# After the output ends, how long the build may take to show its final status.
SETTLE_TIMEOUT = 60.0
# Waits before each try to resume a dropped output stream; a try that brings lines starts over.
RESUME_DELAYS = (0.2, 1.0, 2.0)


class HerokuConfig(PluginConfig):
    type: Literal["heroku"] = "heroku"
    app: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9-]{1,29}$")  # the Heroku app
    api_key: str = Field(min_length=1)  # e.g. "${HEROKU_API_KEY}"
    timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    secret_fields: ClassVar[tuple[str, ...]] = ("api_key",)


def tarball(workspace: Path) -> bytes:
    """The checkout as a .tar.gz, without git's own files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(workspace.rglob("*")):
            relative = path.relative_to(workspace)
            if relative.parts[0] == ".git" or path.is_dir():
                continue
            archive.add(path, arcname=str(relative), recursive=False)
    return buffer.getvalue()


class _Api:
    def __init__(self, client: httpx.Client, base: str, key: str) -> None:
        self.client, self.base = client, base.rstrip("/")
        self.headers = {"Accept": ACCEPT, "Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.client.request(
                method, f"{self.base}{path}", json=body, headers=self.headers
            )
        except httpx.HTTPError as exc:
            raise ExternalError(f"Heroku unreachable at {self.base}: {exc}") from exc
        if not response.is_success:
            try:
                detail = response.json()
                message = f"{detail.get('id', response.status_code)}: {detail.get('message', '')}"
            except ValueError:
                message = f"{response.status_code}: {response.text[:200]}"
            raise ExternalError(f"Heroku {method} {path} refused ({message})")
        return response.json()


class HerokuProvider:
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        assert isinstance(config, HerokuConfig)
        timeout = config.timeout or runtime.timeout
        read_timeout = config.read_timeout or runtime.read_timeout
        deadline = time.monotonic() + timeout
        api = _Api(runtime.http(), runtime.urls.heroku, config.api_key)
        blob = api.call("POST", "/sources")["source_blob"]
        body = tarball(context.workspace)
        runtime.output(f">> Uploading {len(body)} bytes of {context.sha[:7]} to Heroku")
        try:
            # A presigned upload URL: no Content-Type, or the signature does not match.
            uploaded = runtime.http().put(
                blob["put_url"], content=body, headers={"Content-Type": ""}, timeout=read_timeout
            )
        except httpx.HTTPError as exc:
            raise ExternalError(f"Heroku source upload failed: {exc}") from exc
        if not uploaded.is_success:
            raise ExternalError(f"Heroku source upload answered {uploaded.status_code}")
        build = api.call(
            "POST",
            f"/apps/{config.app}/builds",
            {
                "source_blob": {
                    "url": blob["get_url"],
                    "version": context.sha,
                    "version_description": f"{context.app}/{context.environment}#{context.number}",
                }
            },
        )
        runtime.output(f">> Heroku build {build['id']} of {config.app} started")
        url = build.get("output_stream_url")
        output_ended = bool(url) and self._follow(runtime, url, deadline, timeout, read_timeout)
        status = self._settle(
            api, config.app, build["id"], runtime, deadline, timeout, output_ended=output_ended
        )
        runtime.output(f">> Heroku build {build['id']} {status}")
        if status != "succeeded":
            raise CommandFailed(f"Heroku build {build['id']} of {config.app} {status}")

    def _follow(
        self,
        runtime: ProviderRuntime,
        url: str,
        deadline: float,
        timeout: float,
        read_timeout: float,
    ) -> bool:
        """Copy the build's output into the log while watching cancel and the time limits; False
        if it could not be read to its end (the log says why)."""
        lines: queue.Queue[str | _End] = queue.Queue()
        stop = threading.Event()
        output = _Output(runtime.http(), url, read_timeout)

        def read() -> None:
            lost: str | None = "its reader failed"  # kept only if copy() raises: a bug
            try:
                lost = output.copy(lines.put, stop)
            finally:
                lines.put(_End(lost))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        last_output = time.monotonic()
        try:
            while True:
                if runtime.should_cancel():
                    runtime.output(">> Cancelled: no longer following the Heroku build")
                    raise DeployCancelled("Deploy cancelled")
                now = time.monotonic()
                if now > deadline:
                    runtime.output(f">> Process exceeded time limit of {timeout:g}s")
                    raise DeployTimeout(f"Deploy exceeded its time limit of {timeout:g}s")
                if now - last_output > read_timeout:
                    runtime.output(f">> No output for {read_timeout:g}s")
                    raise DeployTimeout(f"No output for {read_timeout:g}s")
                try:
                    item = lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(item, _End):
                    if item.lost is not None:
                        runtime.output(
                            f">> Heroku build output broke off ({item.lost}); "
                            "following the build's status instead"
                        )
                    return item.lost is None
                runtime.output(item)
                last_output = time.monotonic()
        finally:
            stop.set()

    def _settle(
        self,
        api: _Api,
        app: str,
        build_id: str,
        runtime: ProviderRuntime,
        deadline: float,
        timeout: float,
        *,
        output_ended: bool,
    ) -> str:
        """Poll the build's status until it is no longer pending. Once its output has ended it
        should be soon; without the output, the build may still have long to run."""
        if output_ended:
            settle_by = min(deadline, time.monotonic() + SETTLE_TIMEOUT)
            late = "still pending after its output ended"
        else:
            settle_by, late = deadline, f"still pending at the time limit of {timeout:g}s"
        while True:
            status = str(api.call("GET", f"/apps/{app}/builds/{build_id}")["status"])
            if status != "pending":
                return status
            if runtime.should_cancel():
                raise DeployCancelled("Deploy cancelled")
            if time.monotonic() > settle_by:
                raise DeployTimeout(f"Heroku build {build_id} {late}")
            time.sleep(POLL_INTERVAL)


@dataclass(frozen=True)
class _End:
    lost: str | None  # why the output could not be read to its end; None if it was


class _Output:
    """A build's output stream, read line by line. Heroku documents that the connection may drop
    mid-way and that the stream can be resumed with `Range: bytes=N-`: it is asked again from
    the first byte after the last whole line shown, so no line is shown twice or torn in two."""

    def __init__(self, client: httpx.Client, url: str, read_timeout: float) -> None:
        self.client, self.url, self.read_timeout = client, url, read_timeout
        self.shown = 0  # bytes of the output up to the end of the last line shown

    def copy(self, emit: Callable[[str], None], stop: threading.Event) -> str | None:
        """Emit each line until the output ends (None) or can be read no further (why)."""
        delays = iter(RESUME_DELAYS)
        while True:
            shown = self.shown
            try:
                return self._read(emit, stop)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                problem = str(exc) or type(exc).__name__
            except httpx.HTTPError as exc:  # e.g. a malformed URL: no try would do better
                return str(exc)
            if self.shown > shown:
                delays = iter(RESUME_DELAYS)
            delay = next(delays, None)
            if delay is None:
                return problem
            if stop.wait(delay):
                return None

    def _read(self, emit: Callable[[str], None], stop: threading.Event) -> str | None:
        """One request of the stream, from what was shown so far. Raises what is worth another
        try (a dropped connection, a 5xx); returns why not for an answer that will not change."""
        # Offsets count bytes of the output itself, so no compressed form of it.
        headers = {"Accept": "text/plain", "Accept-Encoding": "identity"}
        if self.shown:
            headers["Range"] = f"bytes={self.shown}-"
        with self.client.stream(
            "GET", self.url, headers=headers, timeout=self.read_timeout
        ) as response:
            if response.status_code == 416:  # nothing after what was shown: it had all been
                return None
            if response.is_server_error:
                response.raise_for_status()
            start = _body_start(response)
            if start is None or start > self.shown:
                return f"the stream answered {response.status_code}"
            skip, rest = self.shown - start, b""
            for chunk in response.iter_bytes():
                if stop.is_set():
                    return None
                skipped = min(skip, len(chunk))
                skip -= skipped
                *lines, rest = (rest + chunk[skipped:]).split(b"\n")
                for line in lines:
                    emit(line.decode(errors="replace").removesuffix("\r"))
                    self.shown += len(line) + 1
            if rest:
                emit(rest.decode(errors="replace"))
                self.shown += len(rest)
        return None


def _body_start(response: httpx.Response) -> int | None:
    """Where the body starts in the whole output: 0 for a whole one (a server may ignore
    `Range`), the `Content-Range` start for a part, None for no output at all."""
    if response.status_code == 200:
        return 0
    found = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
    if response.status_code == 206 and found:
        return int(found[1])
    return None


registry.register("heroku", HerokuConfig)(HerokuProvider())
