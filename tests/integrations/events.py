"""Deploy events as the outbox makes them, and deploy contexts as a run makes them, for the
integrations' tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from freight.notifiers import DeployEvent
from freight.providers import DeployContext

SHA = "3f2a" + "1" * 36
PREV = "9e8d" + "2" * 36


def event(name: str = "queued", **fields: object) -> DeployEvent:
    status = {"queued": "pending", "started": "in_progress"}.get(name, name)
    base = DeployEvent(
        event=name,
        deploy_id=7,
        app="web",
        environment="production",
        number=42,
        ref="main",
        sha=SHA,
        status=status,
        user="ana@example.com",
        duration=None if name in ("queued", "started") else 83.5,
        link="https://freight.example.com/deploys/web/production/42/",
        prev_sha=PREV,
        repository="git@github.com:acme/web.git",
        commits=3,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def deploy_context(workspace: Path, **params: str) -> DeployContext:
    return DeployContext(
        deploy_id=1,
        app="web",
        environment="production",
        number=7,
        ref="main",
        sha=SHA,
        prev_sha=None,
        user="ana",
        workspace=workspace,
        params=params,
    )
