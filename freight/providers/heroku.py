"""The `heroku` provider: the checked-out commit deployed as a Heroku build, through the
Platform API (v3): a source is made, the checkout uploaded to it as a tarball, a build of it
created with the sha as its version, the build's output streamed into the deploy log, and the
build's final status read. Cancel stops following the build (Heroku has no way to stop one)."""

from __future__ import annotations

import io
import queue
import tarfile
import threading
import time
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
_END = object()


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
        if build.get("output_stream_url"):
            self._follow(runtime, build["output_stream_url"], deadline, timeout, read_timeout)
        status = self._settle(api, config.app, build["id"], runtime, deadline, timeout)
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
    ) -> None:
        """Copy the build's output into the log while watching cancel and the time limits."""
        lines: queue.Queue[object] = queue.Queue()
        stop = threading.Event()

        def read() -> None:
            try:
                with runtime.http().stream(
                    "GET", url, headers={"Accept": "text/plain"}, timeout=read_timeout
                ) as response:
                    for line in response.iter_lines():
                        if stop.is_set():
                            return
                        lines.put(line)
            except httpx.HTTPError as exc:
                lines.put(ExternalError(f"Heroku build output broke off: {exc}"))
            finally:
                lines.put(_END)

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
                if item is _END:
                    return
                if isinstance(item, ExternalError):
                    raise item
                runtime.output(str(item))
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
    ) -> str:
        settle_by = min(deadline, time.monotonic() + SETTLE_TIMEOUT)
        while True:
            status = str(api.call("GET", f"/apps/{app}/builds/{build_id}")["status"])
            if status != "pending":
                return status
            if runtime.should_cancel():
                raise DeployCancelled("Deploy cancelled")
            if time.monotonic() > settle_by:
                raise DeployTimeout(f"Heroku build {build_id} still pending after its output ended")
            time.sleep(POLL_INTERVAL)


registry.register("heroku", HerokuConfig)(HerokuProvider())
