"""What routes depend on: a database session, the caller (from their key), the settings and
the orchestrator, as `Annotated` types so that route signatures read like sentences."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from freight.api.inputs import collect
from freight.dashboard import session as login
from freight.db import session_scope
from freight.errors import Unauthorized
from freight.execution import delivery
from freight.execution.delivery import Courier
from freight.execution.handover import HandOver
from freight.execution.intake import Screen
from freight.service import keys, logins
from freight.service.keys import Principal, Scope
from freight.settings import Settings, secret_source

AUTH_SCHEMES = ("key", "bearer")


@dataclass
class Runtime:
    """What the app was made with; kept on `app.state.runtime`."""

    settings: Settings
    engine: Engine
    # The one path by which deploys are created, moved on and cancelled.
    handover: HandOver
    # For the checks a deploy request is screened with, and lock notices.
    http: httpx.Client
    # Signs dashboard sessions and their CSRF tokens; the same for every process of a server.
    session_secret: str

    def screen(self) -> Screen:
        return Screen(
            client=self.http, urls=self.settings.service_urls(), secrets_from=secret_source()
        )

    def courier(self) -> Courier:
        return delivery.courier(self.settings, self.http)


def runtime(request: Request) -> Runtime:
    value = request.app.state.runtime
    assert isinstance(value, Runtime)
    return value


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def session(rt: RuntimeDep) -> Iterator[Session]:
    with session_scope(rt.engine) as db:
        yield db


# "function": the transaction commits when the route returns, before the response is sent, so a
# client that is told 201 can read what it made (and a failed commit is an error, not a 201).
SessionDep = Annotated[Session, Depends(session, scope="function")]
Values = Annotated[dict[str, Any], Depends(collect)]


def reading(rt: RuntimeDep) -> Iterator[Session]:
    with session_scope(rt.engine, read_only=True) as db:
        yield db


# For pages that only read: on SQLite they take no write lock (every open dashboard fetches
# after each change; they must not queue behind the runners' log writes).
ReadSessionDep = Annotated[Session, Depends(reading)]


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in AUTH_SCHEMES and value.strip():
        return value.strip()
    return None


def principal(request: Request, rt: RuntimeDep) -> Principal:
    key = presented_key(request)
    if key is None:
        return dashboard_principal(request, rt, for_api=True)
    admin_key = rt.settings.api_key.get_secret_value() if rt.settings.api_key else None
    with session_scope(rt.engine, read_only=True) as db:
        found = keys.authenticate(db, key, admin_key=admin_key)
    if found is None:
        raise Unauthorized("Unknown or revoked API key")
    if keys.use_is_stale(found):
        with session_scope(rt.engine) as db:
            keys.record_use(db, found)
    return found


def dashboard_principal(request: Request, rt: RuntimeDep, *, for_api: bool = False) -> Principal:
    """Who a dashboard session belongs to. Through the API, a session may read; a write also
    needs the page's CSRF token in X-CSRF-Token (a cookie alone proves nothing about intent)."""
    cookie = request.cookies.get(login.COOKIE)
    found = login.read(rt.session_secret, cookie)
    if cookie is None or found is None:
        raise Unauthorized("No API key given")
    if (
        for_api
        and request.method not in ("GET", "HEAD")
        and not login.csrf_ok(rt.session_secret, cookie, request.headers.get("x-csrf-token"))
    ):
        raise Unauthorized("A write through a dashboard session needs its CSRF token")
    with session_scope(rt.engine, read_only=True) as db:
        if logins.is_revoked(db, login.fingerprint(cookie)):
            raise Unauthorized("This session was logged out")
        who = None if found.key == login.ADMIN else keys.principal_of(db, int(found.key))
    if found.key == login.ADMIN:
        if rt.settings.api_key is None:
            raise Unauthorized("The shared API key is no longer configured")
        return replace(keys.SHARED_KEY, person=found.person or None)
    if who is None:
        raise Unauthorized("The key of this session was revoked")
    return replace(who, person=found.person or None)


PrincipalDep = Annotated[Principal, Depends(principal)]


def reader(who: PrincipalDep) -> Principal:
    who.require(Scope.READ)
    return who


def deployer(who: PrincipalDep) -> Principal:
    who.require(Scope.DEPLOY)
    return who


def admin(who: PrincipalDep) -> Principal:
    who.require(Scope.ADMIN)
    return who


Reader = Annotated[Principal, Depends(reader)]
Deployer = Annotated[Principal, Depends(deployer)]
Admin = Annotated[Principal, Depends(admin)]
