"""What a deploy would do, shown before anyone asks for it: the commit it would take, the
commits between what is live and it (shipped, or taken away when it goes back), and what
stands in its way now: locks and freezes, a closed window, promotion rules, the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from freight import secrets, vcs
from freight.catalogue import EnvironmentConfig
from freight.checks import CheckContext
from freight.db import session_scope
from freight.errors import FreightError, InvalidRequest
from freight.execution import gating, refs
from freight.execution.intake import Screen
from freight.service import apps, barriers, releases

SHOWN = 100


@dataclass(frozen=True)
class CheckState:
    name: str
    verdict: str  # passed, pending, failed, or unknown (it could not be asked)
    summary: str


@dataclass(frozen=True)
class Preview:
    app: str
    environment: str
    ref: str
    sha: str
    live: str | None
    shipped: list[vcs.Commit]  # newest first
    removed: list[vcs.Commit]  # a step back takes these away
    standing: list[str]  # what would refuse it now (forcing, with a reason, goes past)
    checks: list[CheckState] = field(default_factory=list)
    window: str | None = None
    protected: bool = False


def preview(
    engine: Engine,
    *,
    app: str,
    environment: str,
    ref: str | None,
    user: str,
    workspace_root: Path,
    git: vcs.Access,
    screen: Screen,
) -> Preview:
    """What deploying `ref` (default: the environment's default ref; `:previous` goes back)
    to the environment would change and meet; raises what a bad ref or app would."""
    wanted, sha = refs.target(
        engine,
        app=app,
        environment=environment,
        ref=ref,
        workspace_root=workspace_root,
        git=git,  # fetched now: a person decides on what it shows
    )
    with session_scope(engine, read_only=True) as session:
        row = apps.get_app(session, app)
        config = apps.environment_of(row, environment)
        live = releases.current_sha(session, row.id, environment)
        repository = row.repository.url
        standing = [b.text for b in barriers.barriers(session, row, environment, user, sha=sha)]
        verdict = barriers.window(row, environment)
    mirror = vcs.mirror_with(workspace_root, repository, sha, access=git)
    shipped = vcs.commits_between(mirror, live, sha, limit=SHOWN, timeout=git.timeout)
    removed = (
        vcs.commits_between(mirror, sha, live, limit=SHOWN, timeout=git.timeout) if live else []
    )
    return Preview(
        app=app,
        environment=environment,
        ref=wanted,
        sha=sha,
        live=live,
        shipped=shipped,
        removed=removed,
        standing=standing,
        checks=_checks(config, app, environment, sha, repository, screen),
        window=verdict.describe() if verdict else None,
        protected=config.protected,
    )


def still_names(
    engine: Engine,
    *,
    app: str,
    environment: str,
    ref: str | None,
    sha: str,
    workspace_root: Path,
    git: vcs.Access,
) -> None:
    """Refuse a confirmed sha that its ref no longer names: the branch moved (or what was
    live changed) since the confirmation was shown, so what it showed is not what would ship."""
    wanted, now = refs.target(
        engine,
        app=app,
        environment=environment,
        ref=ref,
        workspace_root=workspace_root,
        git=git,
    )
    if now != sha:
        raise InvalidRequest(
            f"sha: {wanted} is {now[:7]} now, not the {sha[:7]} you confirmed; look again"
        )


def _checks(
    config: EnvironmentConfig, app: str, environment: str, sha: str, repository: str, screen: Screen
) -> list[CheckState]:
    if not config.checks:
        return []
    try:
        configs, _ = secrets.resolve_all(config.checks, screen.secrets_from)
        looked = gating.look_once(
            configs,
            CheckContext(
                app=app,
                environment=environment,
                sha=sha,
                output=lambda line: None,
                client=screen.client,
                urls=screen.urls,
                repository=repository,
            ),
        )
    except FreightError as exc:
        return [CheckState(c.type, "unknown", exc.message) for c in config.checks]
    return [CheckState(c.type, str(result.verdict), result.summary) for c, result in looked]
