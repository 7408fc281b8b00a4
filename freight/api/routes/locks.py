"""Locks on an app (every environment) or one environment, with their history."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import BackgroundTasks
from fastapi.responses import JSONResponse
from pydantic import Field

from freight.api import schemas
from freight.api.deps import Deployer, Reader, Runtime, RuntimeDep, SessionDep, Values
from freight.api.inputs import Arguments, Flag, RowId, documented, parse
from freight.api.routing import Router
from freight.db import Lock, utcnow
from freight.durations import parse_duration
from freight.errors import InvalidRequest
from freight.execution import delivery
from freight.service import locks, notifications
from freight.service.keys import Scope

router = Router(tags=["locks"])
log = logging.getLogger(__name__)


class LockQuery(Arguments):
    app: str | None = None
    env: str | None = None
    history: Flag = False


class LockCreate(Arguments):
    app: str
    env: str | None = None
    reason: str = Field(min_length=1, max_length=2000)
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    expires: datetime | None = None
    duration: str | None = Field(default=None, alias="for")


class FreezeCreate(Arguments):
    app: str
    env: str | None = None
    reason: str = Field(min_length=1, max_length=2000)
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    starts: datetime | None = Field(default=None, alias="from")
    until: datetime


class LockRelease(Arguments):
    user: str | None = Field(default=None, min_length=1, max_length=200)


def announce_later(later: BackgroundTasks, rt: Runtime, lock: Lock, event: str, *, by: str) -> None:
    """Tell the lock's notifiers after the response (they may be slow; a client must not wait)."""
    configs = notifications.environment_notifiers(lock.app, lock.environment)
    if configs:
        later.add_task(
            delivery.announce,
            configs,
            locks.notice(lock, event, by=by),
            rt.courier(),
            log.warning,
        )


@router.get("/locks/", operation_id="list_locks", openapi_extra=documented(LockQuery, body=False))
def list_locks(db: SessionDep, who: Reader, values: Values) -> list[dict[str, Any]]:
    query = parse(LockQuery, values)
    # An app filter of an app outside the key's limit finds nothing, as one of no app does.
    found = locks.list_locks(
        db,
        app=query.app,
        environment=query.env,
        include_history=query.history,
        apps_allowed=who.apps,
    )
    return [schemas.lock_public(lock) for lock in found]


@router.post(
    "/locks/",
    status_code=201,
    operation_id="create_lock",
    openapi_extra=documented(LockCreate, body=True),
)
def create_lock(
    db: SessionDep, rt: RuntimeDep, who: Deployer, values: Values, later: BackgroundTasks
) -> JSONResponse:
    args = parse(LockCreate, values)
    who.require(Scope.DEPLOY, args.app)
    if args.expires is not None and args.duration is not None:
        raise InvalidRequest("Give 'expires' or 'for', not both")
    expires = args.expires
    if args.duration is not None:
        expires = utcnow() + parse_duration(args.duration)
    _zoned("expires", expires)
    lock = locks.create_lock(
        db,
        app=args.app,
        environment=args.env,
        reason=args.reason,
        owner=args.owner or who.user,
        expires=expires,
    )
    announce_later(later, rt, lock, "locked", by=who.user)
    return JSONResponse(schemas.lock_public(lock), status_code=201)


@router.post(
    "/freezes/",
    status_code=201,
    operation_id="create_freeze",
    openapi_extra=documented(FreezeCreate, body=True),
)
def create_freeze(
    db: SessionDep, rt: RuntimeDep, who: Deployer, values: Values, later: BackgroundTasks
) -> JSONResponse:
    """A freeze: no deploy of the app (or one environment) from `from` (default: now) until
    `until`, by anyone, unless forced with a reason. Listed and released as a lock."""
    args = parse(FreezeCreate, values)
    who.require(Scope.DEPLOY, args.app)
    _zoned("from", args.starts)
    _zoned("until", args.until)
    lock = locks.create_lock(
        db,
        app=args.app,
        environment=args.env,
        reason=args.reason,
        owner=args.owner or who.user,
        expires=args.until,
        starts=args.starts,
        freeze=True,
    )
    announce_later(later, rt, lock, "locked", by=who.user)
    return JSONResponse(schemas.lock_public(lock), status_code=201)


@router.delete(
    "/locks/{lock_id}/",
    operation_id="release_lock",
    openapi_extra=documented(LockRelease, body=False),
)
def release_lock(
    db: SessionDep,
    rt: RuntimeDep,
    who: Deployer,
    lock_id: RowId,
    values: Values,
    later: BackgroundTasks,
) -> dict[str, Any]:
    args = parse(LockRelease, values)
    lock = locks.get_lock(db, lock_id, apps=who.apps)
    by = args.user or who.user
    released = locks.release_lock(db, lock, by=by)
    announce_later(later, rt, released, "unlocked", by=by)
    return schemas.lock_public(released)


def _zoned(field: str, moment: datetime | None) -> None:
    if moment is not None and moment.tzinfo is None:
        raise InvalidRequest(f"{field}: give a time zone (e.g. 2026-12-24T18:00:00Z)")
