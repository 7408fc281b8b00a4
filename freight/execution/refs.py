"""Refs to commits: `:current` and `:previous` from the database, anything else from git, with
the repository's mirror fetched first (no transaction is held across the fetch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from freight import vcs
from freight.db import App, session_scope
from freight.errors import FreightError, InvalidRef
from freight.service import apps, deploys, releases


def resolve(
    *,
    app: str,
    repository: str,
    ref: str,
    workspace_root: Path,
    git: vcs.Access,
    fresh_within: float = 0,
) -> str:
    """The sha of a branch, tag or sha, fetched now (or within `fresh_within` seconds)."""
    mirror = vcs.update_mirror(workspace_root, repository, access=git, max_age=fresh_within)
    try:
        return vcs.resolve_ref(mirror, ref, timeout=git.timeout)
    except InvalidRef:
        raise InvalidRef(f"Unknown ref '{ref}' for app {app}") from None


def target(
    engine: Engine,
    *,
    app: str,
    environment: str,
    ref: str | None,
    workspace_root: Path,
    git: vcs.Access,
    fresh_within: float = 0,
) -> tuple[str, str]:
    """The ref a deploy would take (`ref`, or the environment's default ref) and its sha:
    `:current` and `:previous` from the database, anything else from git, fetched now (or
    within `fresh_within` seconds)."""
    with session_scope(engine, read_only=True) as session:
        app_row = apps.get_app(session, app)
        wanted = ref or apps.environment_of(app_row, environment).default_ref
        known = deploys.symbolic_sha(session, app=app_row, environment=environment, ref=wanted)
        repository = app_row.repository.url
    if known is not None:
        return wanted, known
    return wanted, resolve(
        app=app,
        repository=repository,
        ref=wanted,
        workspace_root=workspace_root,
        git=git,
        fresh_within=fresh_within,
    )


def commits_between(
    engine: Engine,
    *,
    app: str,
    environment: str,
    start: str | None,
    end: str | None,
    workspace_root: Path,
    git: vcs.Access,
    limit: int = 250,
    fresh_within: float = 0,
) -> tuple[str | None, str, list[vcs.Commit]]:
    """The commits after `start` up to `end` (refs, shas, `:current`, `:previous`), newest
    first. By default from what is live to the environment's default ref: what a deploy
    would ship now. Refs are fetched now, or within `fresh_within` seconds. Returns (start
    sha, end sha, commits)."""
    _, end_sha = target(
        engine,
        app=app,
        environment=environment,
        ref=end,
        workspace_root=workspace_root,
        git=git,
        fresh_within=fresh_within,
    )
    with session_scope(engine, read_only=True) as session:
        app_row = apps.get_app(session, app)
        repository = app_row.repository.url
        if start is None:
            start_sha = releases.current_sha(session, app_row.id, environment)
        else:
            start_sha = deploys.symbolic_sha(
                session, app=app_row, environment=environment, ref=start
            )
    if start is not None and start_sha is None:
        start_sha = resolve(
            app=app,
            repository=repository,
            ref=start,
            workspace_root=workspace_root,
            git=git,
            fresh_within=fresh_within,
        )
    mirror = vcs.mirror_path(workspace_root, repository)
    commits = vcs.commits_between(mirror, start_sha, end_sha, limit=limit, timeout=git.timeout)
    return start_sha, end_sha, commits


# (mirror, version, sha) -> commits behind and ahead; only known answers are kept, as a mirror
# may learn a version later.
_APART: dict[tuple[Path, str, str], tuple[int, int]] = {}


def _apart(mirror: Path, version: str, sha: str) -> tuple[int | None, int | None]:
    key = (mirror, version, sha)
    if key not in _APART:
        if not mirror.exists():
            return None, None
        try:
            behind = len(vcs.commits_between(mirror, version, sha, limit=10000, timeout=5))
            ahead = len(vcs.commits_between(mirror, sha, version, limit=10000, timeout=5))
        except FreightError:
            return None, None
        _APART[key] = behind, ahead
    return _APART[key]


def commits_apart(workspace_root: Path) -> Callable[[App, str, str], tuple[int | None, int | None]]:
    """How far a machine's version is from an environment's live sha, as its app's mirror
    knows them: (commits behind, commits ahead), or (None, None) when it does not know both."""

    def distance(app: App, version: str, sha: str) -> tuple[int | None, int | None]:
        return _apart(vcs.mirror_path(workspace_root, app.repository.url), version, sha)

    return distance


# (mirror, ref) -> (the mirror's refs as of, sha): a ref is read again only after a fetch
# changed the mirror's refs, not at every view of a page of hundreds of environments.
_HEADS: dict[tuple[Path, str], tuple[int, str | None]] = {}


def _refs_stamp(mirror: Path) -> int:
    """When the mirror's refs last changed (a fetch writes FETCH_HEAD; a clone, packed-refs)."""
    stamps = [
        (mirror / name).stat().st_mtime_ns
        for name in ("FETCH_HEAD", "packed-refs", "refs/heads")
        if (mirror / name).exists()
    ]
    return max(stamps, default=0)


def _head(mirror: Path, ref: str) -> str | None:
    key, stamp = (mirror, ref), _refs_stamp(mirror)
    known = _HEADS.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        sha: str | None = vcs.resolve_ref(mirror, ref, timeout=5)
    except FreightError:
        sha = None
    _HEADS[key] = (stamp, sha)
    return sha


def behind_default(workspace_root: Path) -> Callable[[App, str, str], int | None]:
    """How many commits an environment's live sha is behind its default ref, as the app's
    mirror last fetched it (deploys, automatic deploys and the app page fetch it); None when
    the mirror does not know."""

    mirrors: dict[str, Path] = {}  # one app's environments share its mirror

    def behind(app: App, environment: str, live_sha: str) -> int | None:
        url = app.repository.url
        mirror = mirrors.get(url) or mirrors.setdefault(url, vcs.mirror_path(workspace_root, url))
        if not mirror.exists():
            return None
        head = _head(mirror, apps.default_ref_of(app, environment))
        return None if head is None else _apart(mirror, live_sha, head)[0]

    return behind
