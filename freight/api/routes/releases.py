"""Release state: what runs where (every app and environment), and one environment's history."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import Field

from freight.api import schemas
from freight.api.deps import Reader, RuntimeDep, SessionDep, Values
from freight.api.inputs import Arguments, documented, parse
from freight.api.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT, Page, paged
from freight.api.routing import Router
from freight.errors import MissingArgument
from freight.execution import refs
from freight.service import apps, releases
from freight.service.keys import Scope

router = Router(tags=["releases"])


class ReleaseQuery(Arguments):
    app: str | None = None
    env: str | None = None
    cursor: int = Field(default=1, ge=1, le=MAX_CURSOR)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


@router.get(
    "/releases/", operation_id="list_releases", openapi_extra=documented(ReleaseQuery, body=False)
)
def list_releases(request: Request, db: SessionDep, who: Reader, values: Values) -> JSONResponse:
    """Without `env`: per app and environment the live sha, its deploy, who and when. With
    `app` and `env`: that environment's finished deploys, newest first (paged)."""
    query = parse(ReleaseQuery, values)
    if query.app is not None:
        apps.get_app(db, query.app, apps=who.apps)
    if query.env is None:
        state = releases.release_state(db, query.app, apps_allowed=who.apps)
        return JSONResponse(schemas.release_page(db, state))
    if query.app is None:
        raise MissingArgument("Give the app whose environment's history you want")
    apps.environment_of(apps.get_app(db, query.app), query.env)
    page = Page(query.cursor, query.limit)
    rows = releases.history(
        db, app=query.app, environment=query.env, offset=page.offset, limit=page.limit + 1
    )
    body = schemas.deploy_page(db, rows[: page.limit])
    return paged(request, page, list(rows), list(body))


class CommitsQuery(Arguments):
    app: str
    env: str
    start: str | None = Field(default=None, alias="from")
    end: str | None = Field(default=None, alias="to")


@router.get(
    "/releases/commits/",
    operation_id="release_commits",
    openapi_extra=documented(CommitsQuery, body=False),
)
def release_commits(rt: RuntimeDep, who: Reader, values: Values) -> dict[str, Any]:
    """The commits between two refs of an app (by default: from what is live in `env` to its
    default ref, i.e. what a deploy would ship), newest first, from Freight's mirror."""
    query = parse(CommitsQuery, values)
    who.require(Scope.READ, query.app)
    start, end, commits = refs.commits_between(
        rt.engine,
        app=query.app,
        environment=query.env,
        start=query.start,
        end=query.end,
        workspace_root=rt.settings.workspaces,
        git=rt.settings.request_git_access(),
    )
    return {
        "from": start,
        "to": end,
        "commits": [
            {
                "sha": c.sha,
                "author": {"name": c.author_name, "email": c.author_email},
                "date": schemas.wire_date(c.date),
                "subject": c.subject,
            }
            for c in commits
        ],
    }
