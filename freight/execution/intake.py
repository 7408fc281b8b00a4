"""Taking a deploy request in: checked against the database (arguments, locks, freezes,
windows), its ref resolved (a fetch), screened by the promotion rules and its checks (HTTP),
then written as a pending deploy. No
transaction is open during the fetch or the checks."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from freight import secrets, vcs
from freight.checks import CheckContext
from freight.db import Deploy, session_scope
from freight.execution import gating, refs
from freight.plugins import ServiceUrls
from freight.service import apps, barriers, deploys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployRequest:
    app: str
    environment: str
    user: str
    ref: str | None = None  # default: the environment's default ref
    params: Mapping[str, str] | None = None
    force: bool = False
    # Why it is forced: required when someone else's lock covers the environment.
    reason: str | None = None
    # The commit, when the caller already knows it (automatic deploys pin the branch's head).
    sha: str | None = None
    # The run that asks, when a deploy registers itself from the engine's side (Prefect's UI).
    run_id: str | None = None


@dataclass(frozen=True)
class Screen:
    """What a request is screened with before it is accepted: someone else's lock refuses it,
    and so does a check that already reports its sha as failed (`force` skips both)."""

    client: httpx.Client | None = None
    urls: ServiceUrls = field(default_factory=ServiceUrls)
    secrets_from: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Created:
    deploy_id: int
    app_id: int
    environment: str
    name: str


def create(
    engine: Engine,
    request: DeployRequest,
    *,
    workspace_root: Path,
    git: vcs.Access,
    screen: Screen | None = None,
    also: Callable[[Session, Deploy], None] | None = None,
) -> Created:
    """Write the request as a pending deploy with its number, sha and config snapshot; `also`
    runs in the same transaction (what else that deploy's creation must record)."""
    with session_scope(engine, read_only=True) as session:
        plan = deploys.plan_deploy(
            session,
            app=request.app,
            environment=request.environment,
            ref=request.ref,
            user=request.user,
            params=request.params,
            force=request.force,
            force_reason=request.reason,
            screen_locks=screen is not None,
        )
    sha = request.sha or plan.sha
    if sha is None:
        sha = refs.resolve(
            app=plan.app,
            repository=plan.repository,
            ref=plan.ref,
            workspace_root=workspace_root,
            git=git,
        )
    else:
        vcs.mirror_with(workspace_root, plan.repository, sha, access=git)
    if screen is not None and plan.config.requires:
        # Only now is the commit known: what the promotion rules say of it.
        with session_scope(engine, read_only=True) as session:
            app = apps.get_app(session, plan.app)
            found = barriers.promotion_barriers(session, app, plan.environment, sha)
            passed = barriers.screen(found, force=plan.force, reason=plan.force_reason)
        if passed:
            overridden = "; ".join(filter(None, (plan.overridden, passed)))
            plan = dataclasses.replace(plan, overridden=overridden)
    if screen is not None and not plan.force and plan.config.checks:
        configs, _ = secrets.resolve_all(plan.config.checks, screen.secrets_from)
        gating.check_once(
            configs,
            CheckContext(
                app=plan.app,
                environment=plan.environment,
                sha=sha,
                output=log.info,
                client=screen.client,
                urls=screen.urls,
                repository=plan.repository,
            ),
        )
    with session_scope(engine) as session:
        deploy = deploys.create_deploy(session, plan, sha=sha, flow_run_id=request.run_id)
        if also is not None:
            also(session, deploy)
        return Created(deploy.id, deploy.app_id, deploy.environment, deploy.name)
