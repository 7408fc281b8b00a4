"""The dashboard's forms: deploy (after its confirmation), cancel, move to the front, lock,
freeze and unlock. Each needs the session's CSRF token and the deploy scope on the app, and
answers with a redirect: on to what it made, or back with the error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import Response

from freight.api.deps import Runtime, RuntimeDep, SessionDep
from freight.api.routes.deploys import request_deploy
from freight.api.routes.locks import announce_later
from freight.dashboard import web
from freight.dashboard.web import Viewer, app_path, checked
from freight.db import utcnow
from freight.durations import parse_duration
from freight.errors import FreightError, InvalidRequest
from freight.execution import preview
from freight.execution.intake import DeployRequest
from freight.service import apps, deploys, locks, queue
from freight.service.keys import Principal, Scope

router = APIRouter(include_in_schema=False)


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
        checked(request, rt, csrf)
        who.require(Scope.DEPLOY, app)
        path, notice = action()
    except FreightError as exc:
        return web.back(back, error=exc.message)
    return web.back(path, notice=notice)


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
    sha: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
    reason: Annotated[str, Form()] = "",
    typed: Annotated[str, Form()] = "",
) -> Response:
    """A deploy as its confirmation showed it: of the sha shown (a branch that moved since is
    not what was confirmed); a protected environment's name typed."""

    def start() -> tuple[str, str]:
        if apps.environment_of(apps.get_app(db, app), env).protected and typed.strip() != env:
            raise InvalidRequest(f"typed: type '{env}' to deploy to this protected environment")
        db.commit()  # no transaction of ours may stand in the way of the deploy's
        if sha.strip():
            preview.still_names(
                rt.engine,
                app=app,
                environment=env,
                ref=ref.strip() or None,
                sha=sha.strip(),
                workspace_root=rt.settings.workspaces,
                git=rt.settings.request_git_access(),
            )
        deploy_id = request_deploy(
            rt,
            later,
            DeployRequest(
                app=app,
                environment=env,
                ref=ref.strip() or None,
                sha=sha.strip() or None,
                user=who.user,
                force=force,
                reason=reason.strip() or None,
            ),
        )
        deploy = deploys.get_deploy(db, deploy_id)
        return f"/deploys/{app}/{env}/{deploy.number}", f"Queued {deploy.name}"

    return _act(request, rt, csrf, app_path(app), start, who=who, app=app)


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
        app_path(deploy.app.name)
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
    back = app_path(deploy.app.name)

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
    back = app_path(app)

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
    back = app_path(app)

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
    back = app_path(held.app.name)

    def unlock() -> tuple[str, str]:
        released = locks.release_lock(db, held, by=who.user)
        announce_later(later, rt, released, "unlocked", by=who.user)
        return back, f"Unlocked {locks.notice(released, 'unlocked', by=who.user).scope}"

    return _act(request, rt, csrf, back, unlock, who=who, app=held.app.name)
