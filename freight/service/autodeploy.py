"""Automatic deploys, by looking for VCS changes (no inbound traffic needed).

Each poll looks up, with `git ls-remote` (every remote at once, bounded), where the branch of
each environment with `auto_deploy` points. A sha that is new (not live, not queued or
running, not already failed) is deployed as user `autodeploy` once its checks pass; when the
branch moves on, the older automatic deploys still queued are cancelled. A lock holds it
(always), as does a sha whose deploy failed, was cancelled by a person or was rolled back from
(until a person deploys or the branch moves). What each environment is doing, and why it is not
deploying, is kept for the API, the CLI and the dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from freight.service.releases import AutoState

log = logging.getLogger(__name__)

AUTODEPLOY_USER = "autodeploy"
REMOTE_TIMEOUT = 30.0


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
        sha = head if isinstance(head, str) else None
        try:
            outcome = _decide(engine, orchestrator, context, target, head)
        except FreightError as exc:
            outcome = _outcome(target, sha, AutoState.ERROR, exc.message)
        except Exception as exc:  # one app's trouble must not stop the others' deploys
            log.exception("autodeploy of %s/%s", target.app, target.environment)
            outcome = _outcome(target, sha, AutoState.ERROR, f"internal error: {exc}")
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
    with session_scope(engine) as session:
        _supersede(session, target, head)
        held = _held(session, target, head)
        if held is not None:
            return held
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
                reason = f"sha {head[:7]} failed check {check.type}: {result.summary}"
                return _outcome(target, head, AutoState.BLOCKED, reason)
        waiting = [result.summary for _, result in verdicts if result.verdict == Verdict.PENDING]
        if waiting:
            return _outcome(target, head, AutoState.WAITING, "; ".join(waiting))
    return _queue(engine, orchestrator, context, target, head)


def _supersede(session: Session, target: Target, head: str) -> None:
    """The branch moved on: automatic deploys of older commits still queued will not run."""
    for older in queue.pending(session, target.app_id, target.environment):
        if older.sha != head and older.user is not None and older.user.name == AUTODEPLOY_USER:
            by = f"{AUTODEPLOY_USER} (superseded: {target.branch} is at {head[:7]})"
            deploys.cancel_deploy(session, older, by=by)


def _held(session: Session, target: Target, head: str) -> Outcome | None:
    """Why the branch's head is not to be deployed now, if it is not."""
    short = head[:7]
    live = releases.live_deploy(session, target.app_id, target.environment)
    if live is not None and live.sha == head:
        return _outcome(target, head, AutoState.UP_TO_DATE, "up to date")
    of_head = (
        select(Deploy)
        .where(
            Deploy.app_id == target.app_id,
            Deploy.environment == target.environment,
            Deploy.sha == head,
        )
        .order_by(Deploy.id.desc())
    )
    under_way = session.scalar(
        of_head.where(Deploy.status.in_([DeployStatus.PENDING, DeployStatus.IN_PROGRESS]))
    )
    if under_way is not None:
        return _outcome(target, head, AutoState.DEPLOYING, f"deploying {under_way.name}")
    # The last word on this sha, by a person or by how its deploy went, stands until a person
    # deploys (or the branch moves): a failure, a cancel, a rollback away from it.
    for ended in session.scalars(of_head.where(Deploy.status.in_(FINAL)).limit(5)):
        if ended.status == DeployStatus.FAILED:
            why = f"sha {short} failed"
        elif ended.status == DeployStatus.FINISHED and live is not None:
            who = f" by {live.user.name}" if live.user else ""
            why = f"sha {short} was replaced by {live.name}{who}"
        elif ended.status == DeployStatus.CANCELLED and _cancelled_by_a_person(ended):
            why = f"sha {short} was cancelled by {ended.cancelled_by}"
        else:
            continue
        return _outcome(target, head, AutoState.BLOCKED, f"{why}, deploy manually to resume")
    held = locks.active_locks(session, target.app_id, target.environment)
    if held:
        return _outcome(target, head, AutoState.BLOCKED, locks.holding(held[0]))
    return None


FINAL = [DeployStatus.FINISHED, DeployStatus.FAILED, DeployStatus.CANCELLED]


def _cancelled_by_a_person(deploy: Deploy) -> bool:
    by = deploy.cancelled_by or ""
    return by != locks.REFUSED and not by.startswith(AUTODEPLOY_USER)


def _queue(
    engine: Engine, orchestrator: Orchestrator, context: PollContext, target: Target, head: str
) -> Outcome:
    with session_scope(engine) as session:
        deploy = deploys.create_deploy(
            session,
            app=target.app,
            environment=target.environment,
            ref=target.branch,
            sha=head,
            user=AUTODEPLOY_USER,
            workspace_root=context.workspace_root,
        )
        name = deploy.name
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
