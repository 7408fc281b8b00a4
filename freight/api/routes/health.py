"""`GET /health`, without a key: the database and the Prefect server, each on its own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from freight.api.deps import RuntimeDep

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
    return JSONResponse(
        {"status": "ok" if ok else "degraded", **parts}, status_code=200 if ok else 503
    )
