"""The dashboard: web pages served by the API, built from the same service functions.

Log in with an API key (the session is a signed, http-only cookie; forms carry a CSRF token).
The overview and the deploy page refresh themselves by fetching partials and the log API.
Assets are served from this package: no CDN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from freight.api import schemas
from freight.api.deps import Runtime, RuntimeDep, SessionDep, dashboard_principal
from freight.api.routes.deploys import request_deploy
from freight.api.routes.locks import announce_later
from freight.dashboard import charts
from freight.dashboard import session as login
from freight.db import DeployStatus, session_scope, utcnow
from freight.durations import parse_duration
from freight.errors import FreightError, InvalidRequest, Unauthorized
from freight.execution import refs
from freight.execution.intake import DeployRequest
from freight.queue_places import places
from freight.service import apps, deploys, keys, locks, logins, machines, queue, releases, workers
from freight.service.keys import Principal, Scope
from freight.service.machines import AppState, Filters, MachineStatus, MachineView

HERE = Path(__file__).parent
# "What a deploy would ship" is read from the mirror fetched at most this long ago: an app page
# (one per environment) must not wait on the remote at every view.
SHIP_FRESH_WITHIN = 60.0
PERSON_MAX = 200  # as a deploy's user
HISTORY_PAGE = 50
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """No (valid) session: the page sends the browser to the login form."""


def viewer(request: Request, rt: RuntimeDep) -> Principal:
    try:
        who = dashboard_principal(request, rt)
    except Unauthorized:
        raise LoginRequired from None
    if not who.allows(Scope.READ):  # an agent's key: it may not log in either
        raise LoginRequired
    return who


Viewer = Annotated[Principal, Depends(viewer)]


def _page(
    request: Request, rt: Runtime, name: str, who: Principal | None, **context: Any
) -> Response:
    cookie = request.cookies.get(login.COOKIE)
    return templates.TemplateResponse(
        request,
        name,
        {
            "who": who,
            "csrf": login.csrf_token(rt.session_secret, cookie) if cookie else "",
            "error": request.query_params.get("error"),
            "notice": request.query_params.get("notice"),
            "prefect_url": rt.settings.prefect_api_url.removesuffix("/api"),
            **context,
        },
    )


def _back(path: str, **message: str) -> RedirectResponse:
    query = f"?{urlencode(message)}" if message else ""
    return RedirectResponse(path + query, status_code=303)


def _checked(request: Request, rt: Runtime, token: str) -> None:
    if not login.csrf_ok(rt.session_secret, request.cookies.get(login.COOKIE), token):
        raise Unauthorized("The form is stale or not ours (CSRF check failed); reload the page")


def _release_rows(db: Session, who: Principal, app: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for release in schemas.release_page(db, releases.release_state(db, app, apps_allowed=who.apps)):
        running = release["running"]
        progress = None
        if running and running["estimatedDuration"] and running["duration"] is not None:
            progress = min(99, int(100 * running["duration"] / running["estimatedDuration"]))
        rows.append({**release, "progress": progress})
    return rows


# -- login ------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, rt: RuntimeDep) -> Response:
    return _page(request, rt, "login.html", None)


@router.post("/login")
def login_submit(
    request: Request,
    rt: RuntimeDep,
    key: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    person = name.strip()
    if len(person) > PERSON_MAX:
        return _back("/login", error=f"Your name: at most {PERSON_MAX} characters.")
    admin_key = rt.settings.api_key.get_secret_value() if rt.settings.api_key else None
    with session_scope(rt.engine, read_only=True) as db:
        who = keys.authenticate(db, key.strip(), admin_key=admin_key) if key.strip() else None
    if who is None:
        return _back("/login", error="That key is not valid (unknown or revoked).")
    if not who.allows(Scope.READ):
        return _back("/login", error="That key is an agent's: it cannot read the dashboard.")
    cookie = login.issue(rt.session_secret, str(who.key_id) if who.key_id else login.ADMIN, person)
    response = _back("/")
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
    _checked(request, rt, csrf)
    # The browser forgets the cookie; the server must too, or a copy of it stays good for hours.
    cookie = request.cookies.get(login.COOKIE)
    ended = login.read(rt.session_secret, cookie)
    if cookie is not None and ended is not None:
        expires = datetime.fromtimestamp(ended.expires, UTC)
        logins.revoke(db, digest=login.fingerprint(cookie), expires=expires)
    response = _back("/login", notice="Logged out.")
    response.delete_cookie(login.COOKIE)
    return response


# -- pages ------------------------------------------------------------------------------------


def _worker_rows(db: Session, rt: Runtime, who: Principal) -> list[workers.WorkerView]:
    return workers.list_workers(
        db, heartbeat_interval=rt.settings.heartbeat_interval, apps=who.apps
    )


@router.get("/")
def overview(request: Request, rt: RuntimeDep, db: SessionDep, who: Viewer) -> Response:
    return _page(
        request,
        rt,
        "overview.html",
        who,
        releases=_release_rows(db, who),
        workers=_worker_rows(db, rt, who),
    )


@router.get("/partials/overview")
def overview_partial(request: Request, rt: RuntimeDep, db: SessionDep, who: Viewer) -> Response:
    return _page(request, rt, "_grid.html", who, releases=_release_rows(db, who))


@router.get("/partials/workers")
def workers_partial(request: Request, rt: RuntimeDep, db: SessionDep, who: Viewer) -> Response:
    return _page(request, rt, "_workers.html", who, workers=_worker_rows(db, rt, who))


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
    db: SessionDep,
    who: Viewer,
    app: str,
    env: str | None = None,
    status: str | None = None,
    user: str | None = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    who.require(Scope.READ, app)
    row = apps.get_app(db, app)
    statuses = [DeployStatus(status)] if status in set(DeployStatus) else []
    history = deploys.list_deploys(
        db,
        deploys.DeployFilter(
            app=app, environment=env or None, user=user or None, statuses=statuses
        ),
        offset=(page - 1) * HISTORY_PAGE,
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
    release_rows = _release_rows(db, who, app)
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
    return _page(
        request,
        rt,
        "app.html",
        who,
        app=schemas.app_details(db, row),
        releases=release_rows,
        promotions=promotions,
        history=schemas.deploy_page(db, history[:HISTORY_PAGE]),
        newer=urlencode({**filters, "page": page - 1}) if page > 1 else None,
        older=urlencode({**filters, "page": page + 1}) if len(history) > HISTORY_PAGE else None,
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
    request: Request, rt: RuntimeDep, db: SessionDep, who: Viewer, app: str, env: str, number: int
) -> Response:
    deploy = deploys.get_deploy_by_number(
        db, app=app, environment=env, number=number, apps=who.apps
    )
    return _page(request, rt, "deploy.html", who, deploy=schemas.deploy_public(db, deploy))


# -- actions ----------------------------------------------------------------------------------


def _act(
    request: Request,
    rt: Runtime,
    csrf: str,
    back: str,
    action: Callable[[], tuple[str, str]],
    *,
    who: Principal,
    app: str,
) -> Response:
    """Run a form's action on `app` (it needs the deploy scope there): on to the page it names
    with its notice, or back to `back` with the error it raised."""
    try:
        _checked(request, rt, csrf)
        who.require(Scope.DEPLOY, app)
        path, notice = action()
    except FreightError as exc:
        return _back(back, error=exc.message)
    return _back(path, notice=notice)


@router.post("/actions/deploy")
def act_deploy(
    request: Request,
    rt: RuntimeDep,
    db: SessionDep,
    who: Viewer,
    later: BackgroundTasks,
    app: Annotated[str, Form()],
    env: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    ref: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
    reason: Annotated[str, Form()] = "",
    rollback: Annotated[bool, Form()] = False,
) -> Response:
    def start() -> tuple[str, str]:
        db.commit()  # no transaction of ours may stand in the way of the deploy's
        deploy_id = request_deploy(
            rt,
            later,
            DeployRequest(
                app=app,
                environment=env,
                ref=":previous" if rollback else (ref.strip() or None),
                user=who.user,
                force=force,
                reason=reason.strip() or None,
            ),
        )
        deploy = deploys.get_deploy(db, deploy_id)
        return f"/deploys/{app}/{env}/{deploy.number}", f"Queued {deploy.name}"

    return _act(request, rt, csrf, f"/apps/{quote(app)}", start, who=who, app=app)


@router.post("/actions/cancel")
def act_cancel(
    request: Request,
    rt: RuntimeDep,
    db: SessionDep,
    who: Viewer,
    deploy_id: Annotated[int, Form()],
    csrf: Annotated[str, Form()] = "",
    to_app: Annotated[bool, Form()] = False,
) -> Response:
    deploy = deploys.get_deploy(db, deploy_id, apps=who.apps)
    # Cancelling from the app's queue stays on the queue; elsewhere, show the deploy.
    path = (
        f"/apps/{quote(deploy.app.name)}"
        if to_app
        else f"/deploys/{deploy.app.name}/{deploy.environment}/{deploy.number}"
    )

    def cancel() -> tuple[str, str]:
        db.commit()  # no transaction of ours may stand in the cancel's way
        rt.handover.cancel(deploy.id, by=who.user)
        return path, f"Cancel of {deploy.name} asked"

    return _act(request, rt, csrf, path, cancel, who=who, app=deploy.app.name)


@router.post("/actions/front")
def act_front(
    request: Request,
    rt: RuntimeDep,
    db: SessionDep,
    who: Viewer,
    deploy_id: Annotated[int, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    deploy = deploys.get_deploy(db, deploy_id, apps=who.apps)
    back = f"/apps/{quote(deploy.app.name)}"

    def front() -> tuple[str, str]:
        queue.move_to_front(db, deploy)
        return back, f"{deploy.name} is next"

    return _act(request, rt, csrf, back, front, who=who, app=deploy.app.name)


@router.post("/actions/lock")
def act_lock(
    request: Request,
    rt: RuntimeDep,
    db: SessionDep,
    who: Viewer,
    later: BackgroundTasks,
    app: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    env: Annotated[str, Form()] = "",
    duration: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    back = f"/apps/{quote(app)}"

    def lock() -> tuple[str, str]:
        expires = utcnow() + parse_duration(duration) if duration.strip() else None
        made = locks.create_lock(
            db, app=app, environment=env or None, reason=reason, owner=who.user, expires=expires
        )
        announce_later(later, rt, made, "locked", by=who.user)
        return back, f"Locked {locks.notice(made, 'locked', by=who.user).scope}"

    return _act(request, rt, csrf, back, lock, who=who, app=app)


@router.post("/actions/freeze")
def act_freeze(
    request: Request,
    rt: RuntimeDep,
    db: SessionDep,
    who: Viewer,
    later: BackgroundTasks,
    app: Annotated[str, Form()],
    until: Annotated[str, Form()] = "",
    start: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    env: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    back = f"/apps/{quote(app)}"

    def freeze() -> tuple[str, str]:
        made = locks.create_lock(
            db,
            app=app,
            environment=env or None,
            reason=reason,
            owner=who.user,
            starts=_form_time("from", start) if start.strip() else None,
            expires=_form_time("until", until),
            freeze=True,
        )
        announce_later(later, rt, made, "locked", by=who.user)
        return back, f"Froze {locks.notice(made, 'locked', by=who.user).scope}"

    return _act(request, rt, csrf, back, freeze, who=who, app=app)


def _form_time(field: str, text: str) -> datetime:
    """A browser's datetime-local value (no zone), read as UTC as the form says."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(f"{field}: '{text}' is not a time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@router.post("/actions/unlock")
def act_unlock(
    request: Request,
    rt: RuntimeDep,
    db: SessionDep,
    who: Viewer,
    later: BackgroundTasks,
    lock_id: Annotated[int, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    held = locks.get_lock(db, lock_id, apps=who.apps)
    back = f"/apps/{quote(held.app.name)}"

    def unlock() -> tuple[str, str]:
        released = locks.release_lock(db, held, by=who.user)
        announce_later(later, rt, released, "unlocked", by=who.user)
        return back, f"Unlocked {locks.notice(released, 'unlocked', by=who.user).scope}"

    return _act(request, rt, csrf, back, unlock, who=who, app=held.app.name)


async def login_redirect(request: Request, exc: Exception) -> Response:
    return _back("/login")


STATIC = HERE / "static"
