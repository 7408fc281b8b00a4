"""The `github` notifier: a commit status `freight/deploy/ENV` on the deploy's sha, and/or a
GitHub Deployment of the environment with a deployment status for each event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from freight.errors import IntegrationError
from freight.github import GitHub, repo_of
from freight.notifiers import registry
from freight.notifiers.base import DeployEvent, Notice, NotifyContext
from freight.plugins import PluginConfig

COMMIT_STATES = {
    "queued": "pending",
    "started": "pending",
    "finished": "success",
    "failed": "failure",
    "cancelled": "error",
}
# A cancelled deploy never became the live one: its deployment is inactive, like one superseded.
DEPLOYMENT_STATES = {
    "queued": "queued",
    "started": "in_progress",
    "finished": "success",
    "failed": "failure",
    "cancelled": "inactive",
}
DESCRIPTION_LIMIT = 140  # GitHub refuses longer descriptions


class GitHubNotifierConfig(PluginConfig):
    type: Literal["github"] = "github"
    repo: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    token: str = Field(min_length=1)  # e.g. "${GITHUB_TOKEN}"
    statuses: bool = True
    deployments: bool = False
    context: str = "freight/deploy/{environment}"
    environment_url: str | None = None  # e.g. https://{environment}.example.com
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)

    @model_validator(mode="after")
    def _something_to_do(self) -> GitHubNotifierConfig:
        if not (self.statuses or self.deployments):
            raise ValueError("enable statuses or deployments (or both)")
        return self


def _description(event: DeployEvent) -> str:
    who = f" by {event.user}" if event.user else ""
    text = f"{event.name} {event.event}{who}"
    if event.reason and event.event in ("failed", "cancelled"):
        text += f": {event.reason}"
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


class GitHubNotifier:
    def announce(self, config: PluginConfig, notice: Notice, context: NotifyContext) -> None:
        """Locks and machines are not GitHub's business."""

    def send(
        self, config: PluginConfig, event: DeployEvent, context: NotifyContext
    ) -> Mapping[str, Any] | None:
        assert isinstance(config, GitHubNotifierConfig)
        repo = config.repo or repo_of(event.repository)
        if repo is None or event.sha is None:
            raise IntegrationError(
                f"GitHub notifier: {event.repository} is not a GitHub repository; set 'repo'"
            )
        api = GitHub(context.client, context.urls.github, config.token)
        if config.statuses:
            api.request(
                "POST",
                f"/repos/{repo}/statuses/{event.sha}",
                json={
                    "state": COMMIT_STATES[event.event],
                    "target_url": event.link,
                    "description": _description(event),
                    "context": config.context.format(environment=event.environment),
                },
            )
        if not config.deployments:
            return None
        state = dict(context.state)
        if "deployment_id" not in state:
            made = api.json(
                "POST",
                f"/repos/{repo}/deployments",
                json={
                    "ref": event.sha,
                    "environment": event.environment,
                    "description": f"{event.name} ({event.ref})",
                    "auto_merge": False,
                    # Freight's own checks gate the deploy; GitHub must not refuse it again.
                    "required_contexts": [],
                    "payload": {"freight": {"deploy": event.name, "user": event.user}},
                    "production_environment": event.environment == "production",
                },
            )
            state["deployment_id"] = made["id"]
        status: dict[str, Any] = {
            "state": DEPLOYMENT_STATES[event.event],
            "log_url": event.link,
            "description": _description(event),
        }
        if config.environment_url:
            status["environment_url"] = config.environment_url.format(
                environment=event.environment, app=event.app
            )
        api.request(
            "POST", f"/repos/{repo}/deployments/{state['deployment_id']}/statuses", json=status
        )
        return state


registry.register("github", GitHubNotifierConfig)(GitHubNotifier())
