"""Automatic deploys, by looking for VCS changes (no inbound traffic needed).

Each poll looks up, with `git ls-remote` (every remote at once, bounded), where the branch of
each environment with `auto_deploy` points. A sha that is new (not live, not queued or
running, not already failed) is deployed as user `autodeploy` once its checks pass; when the
branch moves on, the older automatic deploys still queued are cancelled. A lock holds it
(always), as does a sha whose deploy failed, was cancelled by a person or was rolled back from
(until a person deploys or the branch moves); those rules are freight/service/autodeploy.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import httpx

from freight import secrets, vcs
from freight.checks import CheckContext, Verdict
from freight.db import App, session_scope
from freight.errors import FreightError
from freight.execution import gating
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest
from freight.execution.side_by_side import side_by_side
from freight.plugins import ServiceUrls
from freight.service import apps, releases
from freight.service.autodeploy import (
    AUTODEPLOY_USER,
    Outcome,
    Target,
    held,
    outcome,
    remember,
    supersede,
    targets,
)
from freight.service.releases import AutoState

log = logging.getLogger(__name__)

REMOTE_TIMEOUT = 30.0


@dataclass(frozen=True)
class PollContext:
    client: httpx.Client
    urls: ServiceUrls
    secrets_from: Mapping[str, str]
    parallel: int = 8


def heads(
    pairs: set[tuple[str, str]], parallel: int, *, git: vcs.Access
) -> dict[tuple[str, str], str | Exception | None]:
    """Where each (remote, branch) points, read from all remotes at once (at most `parallel`)."""
    access = replace(git, timeout=REMOTE_TIMEOUT)

    def read(pair: tuple[str, str]) -> str | Exception | None:
        try:
            return vcs.list_remote_branch(pair[0], pair[1], access=access)
        except FreightError as exc:
            return exc

    ordered = sorted(pairs)
    return dict(zip(ordered, side_by_side(read, ordered, at_once=parallel), strict=True))


def poll(handover: HandOver, context: PollContext) -> list[Outcome]:
    """One look at every environment with automatic deploys; deploys what is due."""
    with session_scope(handover.engine, read_only=True) as session:
        wanted = targets(session)
        # What a promoting environment follows: the live sha of the one it requires.
        live = {
            (t.app_id, t.promote_from): releases.current_sha(session, t.app_id, t.promote_from)
            for t in wanted
            if t.promote_from is not None
        }
    branches = {(t.url, t.branch) for t in wanted if t.promote_from is None}
    found = heads(branches, context.parallel, git=handover.git)
    outcomes = []
    for target in wanted:
        head = (
            live[(target.app_id, target.promote_from)]
            if target.promote_from is not None
            else found[(target.url, target.branch)]
        )
        sha = head if isinstance(head, str) else None
        try:
            result = _decide(handover, context, target, head)
        except FreightError as exc:
            result = outcome(target, sha, AutoState.ERROR, exc.message)
        except Exception as exc:  # one app's trouble must not stop the others' deploys
            log.exception("autodeploy of %s/%s", target.app, target.environment)
            result = outcome(target, sha, AutoState.ERROR, f"internal error: {exc}")
        with session_scope(handover.engine) as session:
            remember(session, target, result)
        outcomes.append(result)
    return outcomes


def _decide(
    handover: HandOver, context: PollContext, target: Target, head: str | Exception | None
) -> Outcome:
    if isinstance(head, Exception):
        return outcome(target, None, AutoState.ERROR, f"cannot read {target.branch}: {head}")
    if head is None and target.promote_from is not None:
        nothing = f"nothing is live on {target.promote_from} yet"
        return outcome(target, None, AutoState.UP_TO_DATE, nothing)
    if head is None:
        return outcome(target, None, AutoState.ERROR, f"branch {target.branch} not found")
    with session_scope(handover.engine) as session:
        supersede(session, target, head)
        holding = held(session, target, head)
        if holding is not None:
            return holding
        config = apps.environment_of(session.get_one(App, target.app_id), target.environment)
        live = releases.current_sha(session, target.app_id, target.environment)
    if target.paths and live is not None:
        untouched = _untouched(handover, target, live, head)
        if untouched is not None:
            return untouched
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
                return outcome(target, head, AutoState.BLOCKED, reason)
        waiting = [result.summary for _, result in verdicts if result.verdict == Verdict.PENDING]
        if waiting:
            return outcome(target, head, AutoState.WAITING, "; ".join(waiting))
    created = handover.request(
        DeployRequest(
            app=target.app,
            environment=target.environment,
            user=AUTODEPLOY_USER,
            # A promotion's ref is the commit itself: no branch says what it is.
            ref=head if target.promote_from is not None else target.branch,
            sha=head,
        )
    )
    return outcome(target, head, AutoState.QUEUED, f"queued {created.name}")


def _untouched(handover: HandOver, target: Target, live: str, head: str) -> Outcome | None:
    """Why the head is not deployed when nothing under the target's paths changed since what
    is live; None when something did."""
    for sha in (live, head):
        mirror = vcs.mirror_with(handover.workspace_root, target.url, sha, access=handover.git)
    changed = vcs.changed_paths(mirror, live, head, timeout=REMOTE_TIMEOUT)
    if vcs.any_matches(target.paths, changed):
        return None
    under = ", ".join(target.paths)
    return outcome(target, head, AutoState.UP_TO_DATE, f"no change under {under} since {live[:7]}")
