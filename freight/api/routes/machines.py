"""Machines and their agents: `GET /machines/` (what runs where, drift, status),
`GET /machines/NAME/` (with its history), and the agent's two routes: `POST /machines/checkin/`
(report versions; answered with the desired version of each app and any orders, held up to
`wait` seconds until there is one) and `POST /machines/NAME/runs/DEPLOY/` (a pull deploy's
output and result)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from freight.api.deps import PrincipalDep, Reader, RuntimeDep, SessionDep, Values
from freight.api.inputs import Arguments, RowId, documented, parse
from freight.api.routing import Router
from freight.api.schemas import wire_date
from freight.db import session_scope, utcnow
from freight.execution import refs
from freight.names import MachineName
from freight.service import machines, pulls
from freight.service.keys import Principal, Scope
from freight.service.machines import AppReport, CheckIn, Filters, MachineStatus, MachineView

router = Router(tags=["machines"])

# The longest a check-in is held waiting for an order (agents ask for their interval).
MAX_WAIT = 60.0
# How often a held check-in looks whether there is news for it.
WAIT_TICK = 0.5


def agent(who: PrincipalDep) -> Principal:
    who.require(Scope.AGENT)
    return who


Agent = Annotated[Principal, Depends(agent)]


class MachineQuery(Arguments):
    app: str | None = None
    env: str | None = None
    status: list[MachineStatus] | MachineStatus | None = None
    label: str | None = Field(default=None, description="KEY=VALUE")


def _view(view: MachineView) -> dict[str, Any]:
    return {
        "name": view.name,
        "labels": view.labels,
        "agentVersion": view.agent_version,
        "interval": view.interval,
        "address": view.address,
        "status": view.status.value,
        "drift": view.drifted,
        "dateFirstSeen": wire_date(view.date_first_seen),
        "lastSeen": wire_date(view.last_seen),
        "apps": [
            {
                "app": state.app,
                "env": state.environment,
                "version": state.version,
                "error": state.error,
                "canDeploy": state.can_deploy,
                "liveSha": state.live_sha,
                "drift": state.drift,
                "commitsBehind": state.behind,
                "commitsAhead": state.ahead,
                "dateChanged": wire_date(state.date_changed),
            }
            for state in view.apps
        ],
    }


@router.get(
    "/machines/", operation_id="list_machines", openapi_extra=documented(MachineQuery, body=False)
)
def list_machines(
    db: SessionDep, rt: RuntimeDep, who: Reader, values: Values
) -> list[dict[str, Any]]:
    """Every machine whose agent checked in (of the apps the key may see): name, labels, agent
    version, last check-in, status (online; stale: 3 check-ins missed; lost: 10), and per app
    the version it runs, the environment's live sha and whether they differ (drift)."""
    query = parse(MachineQuery, values)
    status = query.status
    filters = Filters(
        app=query.app,
        environment=query.env,
        statuses=frozenset(status if isinstance(status, list) else [status]) if status else None,
        labels=dict([machines.parse_label(query.label)]) if query.label else {},
    )
    found = machines.list_machines(
        db,
        filters,
        allowed=who.apps,
        now=utcnow(),
        distance=refs.commits_apart(rt.settings.workspaces),
    )
    return [_view(view) for view in found]


@router.get("/machines/{name}/", operation_id="get_machine")
def get_machine(name: str, db: SessionDep, rt: RuntimeDep, who: Reader) -> dict[str, Any]:
    """One machine, with its history: each version it reported, from when."""
    view = machines.get_machine(
        db,
        name,
        allowed=who.apps,
        now=utcnow(),
        distance=refs.commits_apart(rt.settings.workspaces),
    )
    body = _view(view)
    body["history"] = [
        {
            "app": seen.app,
            "env": seen.environment,
            "version": seen.version,
            "error": seen.error,
            "date": wire_date(seen.date),
        }
        for seen in machines.history(db, name, allowed=who.apps)
    ]
    return body


class AppIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    app: str = Field(min_length=1, max_length=200)
    env: str = Field(min_length=1, max_length=64)
    version: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, max_length=2000)
    # The agent has a deploy command for it.
    deploy: bool = False
    # The pull deploy whose command it runs now.
    running: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class CheckInBody(Arguments):
    name: MachineName
    labels: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=200)]] = (
        Field(default_factory=dict, max_length=50)
    )
    agent_version: str = Field(
        default="",
        max_length=64,
        validation_alias=AliasChoices("agentVersion", "agent_version"),
    )
    interval: float = Field(default=15, ge=1, le=3600)
    apps: list[AppIn] = Field(default_factory=list, max_length=200)
    wait: float = Field(default=0, ge=0, le=MAX_WAIT)


class Watcher:
    """One look at the pull deploys in progress, shared by every held check-in of this API
    process and taken at most every WAIT_TICK: a thousand waiting agents cost one query."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._taken = 0.0
        self._value: frozenset[tuple[int, int, str, bool]] = frozenset()
        self._lock = asyncio.Lock()

    async def current(self) -> frozenset[tuple[int, int, str, bool]]:
        async with self._lock:
            if time.monotonic() - self._taken >= WAIT_TICK:
                self._value = await run_in_threadpool(self._look)
                self._taken = time.monotonic()
            return self._value

    def _look(self) -> frozenset[tuple[int, int, str, bool]]:
        with session_scope(self.engine, read_only=True) as session:
            return pulls.snapshot(session)


def _watcher(request: Request, rt: RuntimeDep) -> Watcher:
    found = getattr(request.app.state, "machine_watcher", None)
    if found is None:
        found = request.app.state.machine_watcher = Watcher(rt.engine)
    assert isinstance(found, Watcher)
    return found


@router.post(
    "/machines/checkin/",
    operation_id="check_in",
    openapi_extra=documented(CheckInBody, body=True),
)
async def check_in(
    request: Request,
    rt: RuntimeDep,
    who: Agent,
    values: Values,
    watcher: Annotated[Watcher, Depends(_watcher)],
) -> dict[str, Any]:
    """An agent's check-in: the versions it runs (and which it can deploy). The answer holds,
    per app, the desired version (a pull deploy's in progress, else the live one of a pull
    environment), the runs to start (`orders`), the runs to stop (`cancel`), and the apps it
    named that the key may not report. With `wait`, the answer is held until there is an
    order or a cancel for this machine, at most that many seconds."""
    body = parse(CheckInBody, values)
    report = CheckIn(
        name=body.name,
        labels=body.labels,
        agent_version=body.agent_version,
        interval=body.interval,
        apps=[AppReport(a.app, a.env, a.version, a.error, a.deploy) for a in body.apps],
        address=request.client.host if request.client else None,
    )
    running = [a.running for a in body.apps if a.running is not None]
    seen = await watcher.current()
    answer, places = await run_in_threadpool(_record, rt.engine, report, who.apps, running)
    deadline = time.monotonic() + body.wait
    while not (answer["orders"] or answer["cancel"]) and time.monotonic() < deadline:
        await asyncio.sleep(WAIT_TICK)
        now = await watcher.current()
        if {e for e in now if (e[1], e[2]) in places} == {
            e for e in seen if (e[1], e[2]) in places
        }:
            continue
        seen = now
        answer = await run_in_threadpool(_answer, rt.engine, body.name, places, running)
    return answer


def _mine(
    orders: frozenset[tuple[int, int, str, bool]], places: set[tuple[int, str]]
) -> set[tuple[int, int, str, bool]]:
    return {order for order in orders if (order[1], order[2]) in places}


def _record(
    engine: Engine,
    report: CheckIn,
    allowed: frozenset[str] | None,
    running: list[int],
) -> tuple[dict[str, Any], set[tuple[int, str]]]:
    with session_scope(engine) as session:
        recorded = machines.check_in(session, report, allowed=allowed, now=utcnow())
        pulls.abandon_runs(session, recorded.machine_id, running, now=utcnow())
        answer = _instructions(session, recorded.machine_id, recorded.places, running)
    answer["refused"] = recorded.refused
    return answer, set(recorded.places)


def _answer(
    engine: Engine, name: str, places: set[tuple[int, str]], running: list[int]
) -> dict[str, Any]:
    with session_scope(engine, read_only=True) as session:
        machine_id = machines.machine_id(session, name)
        answer = _instructions(session, machine_id, sorted(places), running)
    answer["refused"] = []
    return answer


def _instructions(
    session: Session, machine_id: int, places: Collection[tuple[int, str]], running: list[int]
) -> dict[str, Any]:
    todo = pulls.instructions(session, machine_id, places, running)
    desired = []
    for (app_id, environment), target in todo.desired.items():
        desired.append(
            {
                "app": pulls.app_name(session, app_id),
                "env": environment,
                "desired": target.sha if target else None,
                "deploy": str(target.id) if target else None,
            }
        )
    return {
        "apps": desired,
        "orders": [order.as_dict() for order in todo.orders],
        "cancel": [str(deploy_id) for deploy_id in todo.cancel],
    }


class RunReport(Arguments):
    first: int = Field(default=0, ge=0, le=2**31 - 1, alias="from")
    lines: list[Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=list, max_length=5000
    )
    status: Literal["running", "succeeded", "failed", "cancelled"] | None = None
    message: str | None = Field(default=None, max_length=2000)


@router.post(
    "/machines/{name}/runs/{deploy_id}/",
    operation_id="report_run",
    openapi_extra=documented(RunReport, body=True),
)
def report_run(
    name: str, deploy_id: RowId, db: SessionDep, who: Agent, values: Values
) -> dict[str, Any]:
    """A machine's run of a pull deploy: output lines numbered from `from` (a batch sent again
    is kept once) and, at the end, its status. The answer says whether to stop."""
    body = parse(RunReport, values)
    run = pulls.record_run(
        db,
        deploy_id,
        name,
        first=body.first,
        lines=body.lines,
        status=body.status,
        message=body.message,
        allowed=who.apps,
    )
    todo = pulls.instructions(db, run.machine_id, (), [deploy_id])
    return {"lines": run.lines, "status": run.status, "cancel": bool(todo.cancel)}
