"""The dashboard's pages: log in, the overview, an app, a deploy, and the confirmation a
deploy, a rollback or a promotion goes through. Served by the API from the service functions
it uses; forms post to freight/dashboard/actions.py; pages stay current through the event
streams of freight/dashboard/events.py. Assets are served from this package: no CDN."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from freight.api import schemas
from freight.api.deps import ReadSessionDep, Runtime, RuntimeDep, SessionDep
from freight.dashboard import charts, stream, views
from freight.dashboard import session as login
from freight.dashboard.web import HERE, Viewer, back, checked, page, safe_next, templates
from freight.db import DeployStatus, session_scope, utcnow
from freight.errors import FreightError
from freight.execution import preview, refs
from freight.queue_places import places
from freight.service import apps, deploys, keys, locks, logins, machines
from freight.service.keys import Principal, Scope
from freight.service.machines import AppState, Filters, MachineStatus, MachineView

# "What a deploy would ship" is read from the mirror fetched at most this long ago: an app page
# (one per environment) must not wait on the remote at every view.
SHIP_FRESH_WITHIN = 60.0
PERSON_MAX = 200  # as a deploy's user
HISTORY_PAGE = 50
RENDERED = "rendered"  # the overview's part as HTML, kept with the build it shows
_rendering = threading.Lock()
VERBS = {"deploy": "Deploy", "redeploy": "Redeploy", "rollback": "Roll back", "promote": "Promote"}
router = APIRouter(include_in_schema=False)


# -- login ------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, rt: RuntimeDep, next: str = "/") -> Response:
    return page(request, rt, "login.html", None, next=safe_next(next))


@router.post("/login")
def login_submit(
    request: Request,
    rt: RuntimeDep,
    key: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    person = name.strip()
    again = {"next": safe_next(next)} if safe_next(next) != "/" else {}
    if len(person) > PERSON_MAX:
        return back("/login", error=f"Your name: at most {PERSON_MAX} characters.", **again)
    admin_key = rt.settings.api_key.get_secret_value() if rt.settings.api_key else None
    with session_scope(rt.engine, read_only=True) as db:
        who = keys.authenticate(db, key.strip(), admin_key=admin_key) if key.strip() else None
    if who is None:
        return back("/login", error="That key is not valid (unknown or revoked).", **again)
    if not who.allows(Scope.READ):
        return back(
            "/login", error="That key is an agent's: it cannot read the dashboard.", **again
        )
    cookie = login.issue(rt.session_secret, str(who.key_id) if who.key_id else login.ADMIN, person)
    response = back(safe_next(next))
    response.set_cookie(
        login.COOKIE,
        cookie,
        max_age=login.LIFETIME,
        httponly=True,
        samesite="strict",
        secure=rt.settings.public_url.startswith("https://"),
    )
    return response


@router.post("/logout")
def logout(
    request: Request, rt: RuntimeDep, db: SessionDep, csrf: Annotated[str, Form()] = ""
) -> Response:
    checked(request, rt, csrf)
    # The browser forgets the cookie; the server must too, or a copy of it stays good for hours.
    cookie = request.cookies.get(login.COOKIE)
    ended = login.read(rt.session_secret, cookie)
    if cookie is not None and ended is not None:
        expires = datetime.fromtimestamp(ended.expires, UTC)
        logins.revoke(db, digest=login.fingerprint(cookie), expires=expires)
    response = back("/login", notice="Logged out.")
    response.delete_cookie(login.COOKIE)
    return response


# -- pages ------------------------------------------------------------------------------------


@router.get("/")
def overview(request: Request, rt: RuntimeDep, who: Viewer) -> Response:
    hub = stream.hub_of(request.app)
    return page(
        request,
        rt,
        "overview.html",
        who,
        version=hub.last_id,  # its stream tells it whether it missed a change since
        **views.overview(rt, who, seen=hub.version),
    )


@router.get("/partials/overview")
def overview_partial(request: Request, rt: RuntimeDep, who: Viewer) -> Response:
    return HTMLResponse(overview_html(rt, who, seen=stream.hub_of(request.app).version))


def overview_html(rt: Runtime, who: Principal, *, seen: Hashable) -> str:
    """The overview's part, as its stream sends it after a change: rendered once per build."""
    shown = views.overview(rt, who, seen=seen)
    with _rendering:
        if RENDERED not in shown:
            shown[RENDERED] = templates.get_template("_overview.html").render(**shown)
    return str(shown[RENDERED])


@dataclass(frozen=True)
class Fleet:
    """The machines whose agents report one environment of an app, each with what it runs."""

    rows: list[tuple[MachineView, AppState]]

    @property
    def summary(self) -> str:
        drifted = sum(state.drift for _, state in self.rows)
        lost = sum(view.status == MachineStatus.LOST for view, _ in self.rows)
        noun = "machine" if len(self.rows) == 1 else "machines"
        return f"{len(self.rows)} {noun}, {drifted} drifted, {lost} lost"


def _fleets(db: Session, rt: Runtime, who: Principal, app: str) -> dict[str, Fleet]:
    found: dict[str, list[tuple[MachineView, AppState]]] = {}
    for view in machines.list_machines(
        db,
        Filters(app=app),
        allowed=who.apps,
        now=utcnow(),
        distance=refs.commits_apart(rt.settings.workspaces),
    ):
        for state in view.apps:
            found.setdefault(state.environment, []).append((view, state))
    return {environment: Fleet(rows) for environment, rows in found.items()}


@router.get("/apps/{app}")
def app_page(
    request: Request,
    rt: RuntimeDep,
    db: ReadSessionDep,
    who: Viewer,
    app: str,
    env: str | None = None,
    status: str | None = None,
    user: str | None = None,
    page_number: Annotated[int, Query(ge=1, le=10_000, alias="page")] = 1,
) -> Response:
    who.require(Scope.READ, app)
    row = apps.get_app(db, app)
    statuses = [DeployStatus(status)] if status in set(DeployStatus) else []
    history = deploys.list_deploys(
        db,
        deploys.DeployFilter(
            app=app, environment=env or None, user=user or None, statuses=statuses
        ),
        offset=(page_number - 1) * HISTORY_PAGE,
        limit=HISTORY_PAGE + 1,  # one more tells whether there is an older page
    )
    filters = {"env": env or "", "status": status or "", "user": user or ""}
    waiting = deploys.list_deploys(
        db, deploys.DeployFilter(app=app, statuses=[DeployStatus.PENDING]), limit=100
    )
    shipping = {}
    for name in apps.environment_names(row):
        try:
            start, end, commits = refs.commits_between(
                rt.engine,
                app=app,
                environment=name,
                start=None,
                end=None,
                workspace_root=rt.settings.workspaces,
                git=rt.settings.request_git_access(),
                fresh_within=SHIP_FRESH_WITHIN,
            )
            shipping[name] = {
                "from": start,
                "to": end,
                "commits": commits[:20],
                "count": len(commits),
            }
        except FreightError as exc:
            shipping[name] = {"error": exc.message}
    release_rows = views.release_rows(db, rt, who, app)
    live = {r["environment"]: r["sha"] for r in release_rows if r["sha"]}
    # Per environment, what the environments it requires have live: a button promotes each.
    promotions = {
        name: [
            (source, live[source])
            for source in apps.environment_of(row, name).requires
            if source in live
        ]
        for name in apps.environment_names(row)
    }
    return page(
        request,
        rt,
        "app.html",
        who,
        app=schemas.app_details(db, row),
        can_act=views.can_act(who, app),
        releases=release_rows,
        promotions=promotions,
        history=schemas.deploy_page(db, history[:HISTORY_PAGE]),
        newer=urlencode({**filters, "page": page_number - 1}) if page_number > 1 else None,
        older=urlencode({**filters, "page": page_number + 1})
        if len(history) > HISTORY_PAGE
        else None,
        waiting=[
            {**deploy, "place": place}
            for place, deploy in places(
                schemas.deploy_page(db, waiting), lambda d: d["environment"]
            )
        ],
        filters=filters,
        statuses=[str(s) for s in DeployStatus],
        shipping=shipping,
        per_day=charts.deploys_per_day(
            deploys.daily_outcomes(db, days=31, today=utcnow(), app=app)
        ),
        durations=charts.durations(deploys.recent_durations(db, app=app)),
        locks=[
            schemas.lock_public(lock)
            for lock in locks.list_locks(db, app=app, include_history=True, limit=20)
        ],
        fleets=_fleets(db, rt, who, app),
    )


@router.get("/deploys/{app}/{env}/{number}")
@router.get("/deploys/{app}/{env}/{number}/")
def deploy_page(
    request: Request,
    rt: RuntimeDep,
    db: ReadSessionDep,
    who: Viewer,
    app: str,
    env: str,
    number: int,
) -> Response:
    deploy = deploys.get_deploy_by_number(
        db, app=app, environment=env, number=number, apps=who.apps
    )
    return page(
        request,
        rt,
        "deploy.html",
        who,
        deploy=views.deploy_state(db, deploy),
        shipped=views.shipped(rt, deploy),
        repo_url=schemas.github_repo_url(deploy.app.repository.url),
        can_act=views.can_act(who, app),
    )


@router.get("/confirm")
def confirm_page(
    request: Request,
    rt: RuntimeDep,
    db: ReadSessionDep,
    who: Viewer,
    app: str,
    env: str,
    ref: str = "",
    action: str = "deploy",
) -> Response:
    """What a deploy would change and what stands in its way, before it is asked for."""
    try:
        who.require(Scope.DEPLOY, app)
        db.commit()  # the preview reads and fetches in its own time: hold nothing meanwhile
        shown = preview.preview(
            rt.engine,
            app=app,
            environment=env,
            ref=ref.strip() or None,
            user=who.user,
            workspace_root=rt.settings.workspaces,
            git=rt.settings.request_git_access(),
            screen=rt.screen(),
        )
    except FreightError as exc:
        return back(f"/apps/{app}" if who.allows_app(app) else "/", error=exc.message)
    with session_scope(rt.engine, read_only=True) as session:
        repository = apps.get_app(session, app).repository.url
    return page(
        request,
        rt,
        "confirm.html",
        who,
        p=shown,
        verb=VERBS.get(action, "Deploy"),
        # A rollback is asked as one (`:previous`), so that it is recorded as one.
        ref_field=ref.strip() if ref.strip() == ":previous" else shown.ref,
        repo_url=schemas.github_repo_url(repository),
        shown=preview.SHOWN,
    )


STATIC = HERE / "static"
