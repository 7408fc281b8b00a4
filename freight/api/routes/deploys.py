"""Deploys: list (with filters and paging), create, show, cancel, and their logs.

Every route also answers under `/tasks/` (Hubot and chat bots use those names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field, StringConstraints
from sqlalchemy.orm import Session

from freight.api import schemas
from freight.api.deps import (
    Deployer,
    PrincipalDep,
    Reader,
    Runtime,
    RuntimeDep,
    SessionDep,
    Values,
)
from freight.api.inputs import Arguments, Count, Flag, JsonField, Offset, RowId, documented, parse
from freight.api.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT, Page, link_header, paged
from freight.api.routing import Router
from freight.db import Deploy, DeployStatus
from freight.errors import MissingArgument
from freight.execution.intake import DeployRequest
from freight.service import deploys, logs, queue
from freight.service.keys import Principal, Scope

router = Router(tags=["deploys"])
BASES = ("/deploys", "/tasks")

Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _statuses(value: object) -> object:
    return [value] if isinstance(value, str) else value


class DeployQuery(Arguments):
    app: Text | None = None
    env: Text | None = None
    user: Text | None = None
    ref: Text | None = None
    status: Annotated[list[DeployStatus], BeforeValidator(_statuses)] = Field(default_factory=list)
    cursor: int = Field(default=1, ge=1, le=MAX_CURSOR)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)


class DeployCreate(Arguments):
    app: Text
    env: Text = "production"
    ref: Text | None = None
    user: Text | None = None
    params: Annotated[dict[str, str], JsonField] | None = None
    force: Flag = False
    # Why: required with `force` when someone else's lock covers the environment.
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


class DeployUpdate(Arguments):
    status: Literal["cancelled"] | None = None
    # Move a queued deploy before every other queued one of its app/env.
    position: Literal["front"] | None = None
    user: Text | None = None


class LogQuery(Arguments):
    offset: Offset = 0
    limit: Count | None = None


def list_deploys(request: Request, db: SessionDep, who: Reader, values: Values) -> JSONResponse:
    query = parse(DeployQuery, values)
    # An app filter of an app outside the key's limit finds nothing, as one of no app does.
    page = Page(query.cursor, query.limit)
    where = deploys.DeployFilter(
        app=query.app,
        environment=query.env,
        user=query.user,
        ref=query.ref,
        statuses=query.status,
        apps=who.apps,
    )
    rows = deploys.list_deploys(db, where, offset=page.offset, limit=page.limit + 1)
    body = schemas.deploy_page(db, rows[: page.limit])
    return paged(request, page, rows, body)


def request_deploy(
    rt: Runtime,
    later: BackgroundTasks,
    request: DeployRequest,
    *,
    also: Callable[[Session, Deploy], None] | None = None,
) -> int:
    """Accept a deploy (201 for the client) and move its queue after the response: that talks
    to Prefect, and a client must not wait for it. A hand-over that fails is the reconciler's."""
    created = rt.handover.request(request, screen=rt.screen(), later=later.add_task, also=also)
    return created.deploy_id


def create_deploy(
    db: SessionDep, rt: RuntimeDep, who: Deployer, values: Values, later: BackgroundTasks
) -> JSONResponse:
    args = parse(DeployCreate, values)
    who.require(Scope.DEPLOY, args.app)
    if args.user is None:
        raise MissingArgument("Missing required argument 'user' (who deploys)")
    deploy_id = request_deploy(
        rt,
        later,
        DeployRequest(
            app=args.app,
            environment=args.env,
            ref=args.ref,
            user=args.user,
            params=args.params,
            force=args.force,
            reason=args.reason,
        ),
    )
    body = schemas.deploy_public(db, deploys.get_deploy(db, deploy_id))
    return JSONResponse(body, status_code=201)


# A deploy of an app outside the caller's key answers as an unknown one.
def by_id(db: SessionDep, who: PrincipalDep, deploy_id: RowId) -> Deploy:
    return deploys.get_deploy(db, deploy_id, apps=who.apps)


def by_number(db: SessionDep, who: PrincipalDep, app: str, env: str, number: RowId) -> Deploy:
    return deploys.get_deploy_by_number(db, app=app, environment=env, number=number, apps=who.apps)


DeployById = Annotated[Deploy, Depends(by_id)]
DeployByNumber = Annotated[Deploy, Depends(by_number)]


def _show(db: Session, deploy: Deploy) -> dict[str, Any]:
    return schemas.deploy_public(db, deploy)


def _update(
    db: Session, rt: Runtime, who: Principal, deploy: Deploy, values: dict[str, Any]
) -> dict[str, Any]:
    args = parse(DeployUpdate, values)
    who.require(Scope.DEPLOY, deploy.app.name)
    if args.status == "cancelled":
        db.commit()  # no transaction of ours may stand in the cancel's way
        rt.handover.cancel(deploy.id, by=args.user or who.user)
        db.refresh(deploy)
    elif args.position == "front":
        deploy = queue.move_to_front(db, deploy)
    return schemas.deploy_public(db, deploy)


def _log(request: Request, db: Session, deploy: Deploy, values: dict[str, Any]) -> JSONResponse:
    args = parse(LogQuery, values)
    page = logs.read_log(db, deploy.id, offset=args.offset, limit=args.limit)
    body = schemas.LogPublic(
        nextOffset=page.next_offset,
        chunks=[
            schemas.ChunkPublic(text=c.text, date=schemas.wire_date(c.date)) for c in page.chunks
        ],
    )
    response = JSONResponse(body)
    response.headers["Link"] = link_header(request, {"next": {"offset": page.next_offset}})
    return response


def show_by_id(db: SessionDep, who: Reader, deploy: DeployById) -> dict[str, Any]:
    return _show(db, deploy)


def show_by_number(db: SessionDep, who: Reader, deploy: DeployByNumber) -> dict[str, Any]:
    return _show(db, deploy)


def update_by_id(
    db: SessionDep, rt: RuntimeDep, who: Deployer, deploy: DeployById, values: Values
) -> dict[str, Any]:
    return _update(db, rt, who, deploy, values)


def update_by_number(
    db: SessionDep, rt: RuntimeDep, who: Deployer, deploy: DeployByNumber, values: Values
) -> dict[str, Any]:
    return _update(db, rt, who, deploy, values)


def log_by_id(
    request: Request, db: SessionDep, who: Reader, deploy: DeployById, values: Values
) -> JSONResponse:
    return _log(request, db, deploy, values)


def log_by_number(
    request: Request, db: SessionDep, who: Reader, deploy: DeployByNumber, values: Values
) -> JSONResponse:
    return _log(request, db, deploy, values)


ARGUMENTS = {
    list_deploys: documented(DeployQuery, body=False),
    create_deploy: documented(DeployCreate, body=True),
    update_by_id: documented(DeployUpdate, body=True),
    update_by_number: documented(DeployUpdate, body=True),
    log_by_id: documented(LogQuery, body=False),
    log_by_number: documented(LogQuery, body=False),
}

for base in BASES:
    in_schema = base == "/deploys"
    for path, endpoint, method in (
        ("/", list_deploys, "GET"),
        ("/", create_deploy, "POST"),
        ("/{deploy_id}/", show_by_id, "GET"),
        ("/{deploy_id}/", update_by_id, "PUT"),
        ("/{deploy_id}/log/", log_by_id, "GET"),
        ("/{app}/{env}/{number}/", show_by_number, "GET"),
        ("/{app}/{env}/{number}/", update_by_number, "PUT"),
        ("/{app}/{env}/{number}/log/", log_by_number, "GET"),
    ):
        router.add_api_route(
            base + path,
            endpoint,
            methods=[method],
            status_code=201 if endpoint is create_deploy else 200,
            include_in_schema=in_schema,
            operation_id=f"{endpoint.__name__}{'' if in_schema else '_task'}",
            openapi_extra=ARGUMENTS.get(endpoint),
        )
