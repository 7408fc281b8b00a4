"""What changed, for the dashboards' event streams: every flush that touches what a dashboard
shows (a deploy, its log or steps, a lock, what is live, an auto-deploy look, an app) adds a
`change` row in the same transaction, so a change is seen exactly when it is committed, by
whichever process made it. Statements (UPDATE, DELETE) add one too."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, event, func, insert, inspect, or_, select
from sqlalchemy.orm import ORMExecuteState, Session

from freight.db.models import (
    App,
    AutoDeployState,
    Change,
    Deploy,
    DeployStep,
    LiveRelease,
    Lock,
    LogChunk,
    utcnow,
)

# A deploy's row changes without anything a person sees changing: its runner's beats and
# the log's size (the log's chunks make their own change).
_UNSEEN_COLUMNS = frozenset(
    {"heartbeat_at", "log_size", "date_claimed", "runner_pid", "runner_pgid"}
)
_ELSEWHERE = (Lock, LiveRelease, AutoDeployState, App)
# Rows are kept this long: a page whose stream was away longer reloads what it shows.
KEPT = timedelta(hours=1)


@dataclass(frozen=True)
class Seen:
    id: int
    deploy_id: int | None
    log_only: bool


def _shown_change(obj: Any) -> bool:
    if not isinstance(obj, Deploy):
        return True
    state = inspect(obj)
    return any(
        attr.key not in _UNSEEN_COLUMNS and attr.history.has_changes() for attr in state.attrs
    )


@event.listens_for(Session, "after_flush")
def _record(session: Session, _context: Any) -> None:
    deploys: dict[int, bool] = {}  # deploy id -> only its log changed
    elsewhere = False
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Deploy | DeployStep):
            deploys[obj.id if isinstance(obj, Deploy) else obj.deploy_id] = False
        elif isinstance(obj, LogChunk):
            deploys.setdefault(obj.deploy_id, True)
        elif isinstance(obj, _ELSEWHERE):
            elsewhere = True
    for obj in session.dirty:
        if isinstance(obj, Deploy | DeployStep) and _shown_change(obj):
            deploys[obj.id if isinstance(obj, Deploy) else obj.deploy_id] = False
        elif isinstance(obj, _ELSEWHERE) and session.is_modified(obj):
            elsewhere = True
    rows = [{"deploy_id": key, "log_only": only} for key, only in deploys.items()]
    if elsewhere:
        rows.append({"deploy_id": None, "log_only": False})
    if rows:
        session.connection().execute(insert(Change.__table__), rows)


# For a statement that changes nothing a person sees (a beat, a log's size; the log's chunk
# makes its own change): `update(...).execution_options(**UNSEEN)`.
UNSEEN = {"freight_unseen": True}


@event.listens_for(Session, "do_orm_execute")
def _record_statement(state: ORMExecuteState) -> None:
    """An UPDATE or DELETE statement on what dashboards show: which deploy it touched is not
    known here, so every open page looks again."""
    if not (state.is_update or state.is_delete) or state.bind_mapper is None:
        return
    if state.execution_options.get("freight_unseen"):
        return
    if not issubclass(state.bind_mapper.class_, (*_ELSEWHERE, Deploy, DeployStep, LogChunk)):
        return
    state.session.connection().execute(
        insert(Change.__table__), [{"deploy_id": None, "log_only": False}]
    )


def since(session: Session, after: int, missing: Collection[int] = ()) -> list[Seen]:
    """Changes with ids above `after`, and those of `missing`: ids below it not seen yet (on
    PostgreSQL an id is taken before its transaction commits, so a lower one may commit after
    a higher one was read)."""
    wanted = Change.id > after
    if missing:
        wanted = or_(wanted, Change.id.in_(sorted(missing)))
    query = select(Change.id, Change.deploy_id, Change.log_only).where(wanted)
    return [Seen(*row) for row in session.execute(query.order_by(Change.id))]


def latest(session: Session) -> int:
    return session.scalar(select(func.max(Change.id))) or 0


def forget_older(session: Session, now: datetime | None = None) -> int:
    done = session.execute(delete(Change).where(Change.date_created < (now or utcnow()) - KEPT))
    return int(done.rowcount)  # type: ignore[attr-defined]
