"""`GET /health`, without a key: the database and the Prefect server, each on its own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from freight.api.deps import RuntimeDep
from freight.db import session_scope
from freight.service import workers
from freight.service.workers import WorkerState

router = APIRouter(tags=["health"])


@router.get("/health", operation_id="health")
def health(rt: RuntimeDep) -> JSONResponse:
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
    return JSONResponse(
        {"status": "ok" if ok else "degraded", **parts, "workers": hosts},
        status_code=200 if ok else 503,
    )
