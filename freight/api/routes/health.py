"""`GET /health`, without a key: the database and the Prefect server, each on its own, the
workers and each host's git cache (its mirrors by name with a key for every app)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from freight.api.deps import Runtime, RuntimeDep, presented_key, principal
from freight.db import session_scope
from freight.errors import FreightError
from freight.service import mirrors, workers
from freight.service.workers import WorkerState

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health")
def health(request: Request, rt: RuntimeDep) -> JSONResponse:
    parts: dict[str, dict[str, Any]] = {}
    try:
        with rt.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        parts["database"] = {"ok": True}
    except Exception as exc:  # any failure is the answer here
        parts["database"] = {"ok": False, "error": str(exc).splitlines()[0]}
    problem = rt.handover.orchestrator.problem()
    parts["prefect"] = {"ok": True} if problem is None else {"ok": False, "error": problem}
    ok = all(part["ok"] for part in parts.values())
    # Who runs deploys, for whoever watches the service; without a key, no deploy is named.
    hosts = []
    caches: dict[str, Any] = {}
    if parts["database"]["ok"]:
        with session_scope(rt.engine, read_only=True) as session:
            found = workers.list_workers(session, heartbeat_interval=rt.settings.heartbeat_interval)
        hosts = [
            {
                "name": w.name,
                "state": w.state.value,
                "lastHeartbeat": w.heartbeat_at.isoformat(),
                "limit": w.limit,
                "running": len(w.running),
            }
            for w in found
            if w.state != WorkerState.STOPPED
        ]
        with session_scope(rt.engine, read_only=True) as session:
            caches = _git_caches(session, named=_sees_everything(request, rt))
    return JSONResponse(
        {"status": "ok" if ok else "degraded", **parts, "workers": hosts, "gitCache": caches},
        status_code=200 if ok else 503,
    )


def _sees_everything(request: Request, rt: Runtime) -> bool:
    """A key for every app was presented: mirrors, named for their repositories, are shown."""
    if presented_key(request) is None:
        return False
    try:
        return principal(request, rt).apps is None
    except FreightError:
        return False


def _git_caches(session: Session, *, named: bool) -> dict[str, Any]:
    """Each host's git cache as its last sweep measured it: its size, and with `named` the size
    of each mirror (largest first)."""
    found = {}
    for host, held in mirrors.by_host(session).items():
        found[host] = {
            "bytes": sum(m.bytes for m in held),
            "count": len(held),
            "dateMeasured": max(m.date_measured for m in held).isoformat(),
        }
        if named:
            found[host]["mirrors"] = [
                {
                    "name": m.name,
                    "bytes": m.bytes,
                    "lastUsed": m.date_used.isoformat() if m.date_used else None,
                }
                for m in held
            ]
    return found
