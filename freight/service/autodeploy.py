"""Automatic deploys, by looking for VCS changes (no inbound traffic needed).

Each poll looks up, with `git ls-remote` (every remote at once, bounded), where the branch of
each environment with `auto_deploy` points. A sha that is new (not live, not queued or
running, not already failed) is deployed as user `autodeploy` once its checks pass; a newer
commit supersedes the older automatic deploys still queued. A lock holds it (always), as does a
sha whose deploy failed (until a person deploys). What each environment is doing, and why it
is not deploying, is kept for the API, the CLI and the dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from freight import secrets, vcs
from freight.checks import CheckContext, Verdict
from freight.db import App, AutoDeployState, Deploy, DeployStatus, session_scope, utcnow
from freight.errors import FreightError
from freight.plugins import ServiceUrls
from freight.service import apps, deploys, gating, locks, queue, releases
from freight.service.orchestration import Orchestrator

log = logging.getLogger(__name__)

AUTODEPLOY_USER = "autodeploy"
REMOTE_TIMEOUT = 30.0


class AutoState(StrEnum):
    UP_TO_DATE = "up_to_date"
    DEPLOYING = "deploying"  # a deploy of the branch's head is queued or running
    QUEUED = "queued"  # this poll queued one
    WAITING = "waiting"  # for checks
    BLOCKED = "blocked"  # a lock, a failed sha, failed checks
    ERROR = "error"  # the remote could not be read


@dataclass(frozen=True)
class Target:
    app_id: int
    app: str
    environment: str
    url: str
    branch: str


@dataclass(frozen=True)
class Outcome:
    app: str
    environment: str
    branch: str
    sha: str | None
    state: AutoState
    reason: str


@dataclass(frozen=True)
class PollContext:
    workspace_root: Path
    client: httpx.Client
    urls: ServiceUrls
    secrets_from: Mapping[str, str]
    parallel: int = 8


def targets(session: Session) -> list[Target]:
    found = []
    for app in session.scalars(select(App).order_by(App.name)):
        spec = apps.spec_of(app)
        for name in spec.environments:
            auto = spec.environment(name).auto_deploy
            if auto is not None and auto.enabled:
                found.append(Target(app.id, app.name, name, app.repository.url, auto.branch))
    return found


def heads(
    pairs: set[tuple[str, str]], parallel: int
) -> dict[tuple[str, str], str | Exception | None]:
    """Where each (remote, branch) points, read from all remotes at once (at most `parallel`)."""

    def read(pair: tuple[str, str]) -> str | Exception | None:
        try:
            return vcs.list_remote_branch(pair[0], pair[1], timeout=REMOTE_TIMEOUT)
        except FreightError as exc:
            return exc

    ordered = sorted(pairs)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(ordered) or 1))) as pool:
        return dict(zip(ordered, pool.map(read, ordered), strict=True))


def poll(engine: Engine, orchestrator: Orchestrator, context: PollContext) -> list[Outcome]:
    """One look at every environment with automatic deploys; deploys what is due."""
    with session_scope(engine, read_only=True) as session:
        wanted = targets(session)
    found = heads({(t.url, t.branch) for t in wanted}, context.parallel)
    outcomes = []
    for target in wanted:
        head = found[(target.url, target.branch)]
        try:
            outcome = _decide(engine, orchestrator, context, target, head)
        except FreightError as exc:
            outcome = _outcome(
                target, head if isinstance(head, str) else None, AutoState.ERROR, exc.message
            )
        _remember(engine, target, outcome)
        outcomes.append(outcome)
    return outcomes


def _outcome(target: Target, sha: str | None, state: AutoState, reason: str) -> Outcome:
    return Outcome(target.app, target.environment, target.branch, sha, state, reason)


def _decide(
    engine: Engine,
    orchestrator: Orchestrator,
    context: PollContext,
    target: Target,
    head: str | Exception | None,
) -> Outcome:
    if isinstance(head, Exception):
        return _outcome(target, None, AutoState.ERROR, f"cannot read {target.branch}: {head}")
    if head is None:
        return _outcome(target, None, AutoState.ERROR, f"branch {target.branch} not found")
    short = head[:7]
    with session_scope(engine, read_only=True) as session:
        if releases.current_sha(session, target.app_id, target.environment) == head:
            return _outcome(target, head, AutoState.UP_TO_DATE, "up to date")
        under_way = session.scalar(
            select(Deploy)
            .where(
                Deploy.app_id == target.app_id,
                Deploy.environment == target.environment,
                Deploy.sha == head,
                Deploy.status.in_([DeployStatus.PENDING, DeployStatus.IN_PROGRESS]),
            )
            .limit(1)
        )
        if under_way is not None:
            return _outcome(target, head, AutoState.DEPLOYING, f"deploying {under_way.name}")
        failed = session.scalar(
            select(Deploy.id)
            .where(
                Deploy.app_id == target.app_id,
                Deploy.environment == target.environment,
                Deploy.sha == head,
                Deploy.status == DeployStatus.FAILED,
            )
            .limit(1)
        )
        if failed is not None:
            return _outcome(
                target, head, AutoState.BLOCKED, f"sha {short} failed, deploy manually to resume"
            )
        held = locks.active_locks(session, target.app_id, target.environment)
        if held:
            lock = held[0]
            return _outcome(
                target, head, AutoState.BLOCKED, f"locked by {lock.owner}: {lock.reason}"
            )
        app = session.get_one(App, target.app_id)
        config = apps.environment_of(app, target.environment)
    if config.checks:
        resolved, _ = secrets.resolve_all(config.checks, context.secrets_from)
        verdicts = gating.look_once(
            resolved,
            CheckContext(
                app=target.app,
                environment=target.environment,
                sha=head,
                output=log.info,
                client=context.client,
                urls=context.urls,
                repository=target.url,
            ),
        )
        for check, result in verdicts:
            if result.verdict == Verdict.FAILED:
                reason = f"sha {short} failed check {check.type}: {result.summary}"
                return _outcome(target, head, AutoState.BLOCKED, reason)
        waiting = [result.summary for _, result in verdicts if result.verdict == Verdict.PENDING]
        if waiting:
            return _outcome(target, head, AutoState.WAITING, "; ".join(waiting))
    return _queue(engine, orchestrator, context, target, head)


def _queue(
    engine: Engine, orchestrator: Orchestrator, context: PollContext, target: Target, head: str
) -> Outcome:
    with session_scope(engine) as session:
        deploy = deploys.create_deploy(
            session,
            app=target.app,
            environment=target.environment,
            ref=head,
            user=AUTODEPLOY_USER,
            workspace_root=context.workspace_root,
        )
        name, number = deploy.name, deploy.number
        for older in queue.pending(session, target.app_id, target.environment):
            if (
                older.id != deploy.id
                and older.user is not None
                and older.user.name == AUTODEPLOY_USER
            ):
                deploys.cancel_deploy(
                    session, older, by=f"{AUTODEPLOY_USER} (superseded by #{number})"
                )
        queue.advance(session, orchestrator, target.app_id, target.environment)
    return _outcome(target, head, AutoState.QUEUED, f"queued {name}")


def _remember(engine: Engine, target: Target, outcome: Outcome) -> None:
    with session_scope(engine) as session:
        row = session.get(AutoDeployState, (target.app_id, target.environment))
        if row is None:
            row = AutoDeployState(app_id=target.app_id, environment=target.environment)
            session.add(row)
        row.branch, row.sha = target.branch, outcome.sha
        row.state, row.reason, row.date_checked = str(outcome.state), outcome.reason, utcnow()
