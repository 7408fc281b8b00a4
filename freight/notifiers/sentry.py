"""The `sentry` notifier: release tracking through Sentry's API. When a deploy starts, the
release is created (its version the sha by default) with the commit range it ships; when it
finishes, the release is finalized and a deploy of it to the environment is recorded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from freight.errors import IntegrationError
from freight.github import repo_of
from freight.notifiers import registry
from freight.notifiers.base import DeployEvent, Notice, NotifyContext
from freight.plugins import PluginConfig


class SentryConfig(PluginConfig):
    type: Literal["sentry"] = "sentry"
    organization: str = Field(min_length=1)
    project: str = Field(min_length=1)
    token: str = Field(min_length=1)  # e.g. "${SENTRY_TOKEN}"
    version: str = "{sha}"  # also {app}, {environment}, {number}, {ref}
    # The repository as Sentry knows it (its GitHub integration): default the app's owner/name.
    repository: str | None = None
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)


class SentryNotifier:
    def announce(self, config: PluginConfig, notice: Notice, context: NotifyContext) -> None:
        """Locks and machines are not Sentry's business."""

    def send(
        self, config: PluginConfig, event: DeployEvent, context: NotifyContext
    ) -> Mapping[str, Any] | None:
        assert isinstance(config, SentryConfig)
        if event.event not in ("started", "finished") or event.sha is None:
            return None
        version = config.version.format(
            sha=event.sha,
            app=event.app,
            environment=event.environment,
            number=event.number,
            ref=event.ref,
        )
        base = f"{context.urls.sentry.rstrip('/')}/organizations/{quote(config.organization)}"
        release_url = f"{base}/releases/{quote(version, safe='')}/"
        call = _caller(context.client, config.token)
        if event.event == "started":
            release: dict[str, Any] = {"version": version, "projects": [config.project]}
            repository = config.repository or repo_of(event.repository)
            if repository:
                ref: dict[str, Any] = {"repository": repository, "commit": event.sha}
                if event.prev_sha:
                    ref["previousCommit"] = event.prev_sha
                release["refs"] = [ref]
            # 201 made, 208 it existed already (a redeploy of the same sha): both are fine.
            call("POST", f"{base}/releases/", release)
            return {"version": version}
        call("PUT", release_url, {"dateReleased": event.date_finished})
        call(
            "POST",
            f"{release_url}deploys/",
            {
                "environment": event.environment,
                "name": event.name,
                "url": event.link,
                "dateStarted": event.date_started,
                "dateFinished": event.date_finished,
            },
        )
        return None


def _caller(client: httpx.Client, token: str) -> Any:
    def call(method: str, url: str, body: dict[str, Any]) -> None:
        try:
            response = client.request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise IntegrationError(f"Sentry unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise IntegrationError(
                f"Sentry {method} {url} answered {response.status_code}: {response.text[:200]}"
            )

    return call


registry.register("sentry", SentryConfig)(SentryNotifier())
