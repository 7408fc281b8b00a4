"""`GET /api/0/workers/`: the hosts that run deploys, as they last reported themselves."""

from __future__ import annotations

from typing import Any

from freight.api.deps import Reader, RuntimeDep, SessionDep
from freight.api.routing import Router
from freight.service import workers

router = Router(tags=["workers"])


@router.get("/workers/", operation_id="list_workers")
def list_workers(db: SessionDep, rt: RuntimeDep, who: Reader) -> list[dict[str, Any]]:
    """Each worker: name (its host), version, limit, state (running, draining, stopped, or
    lost: silent for three heartbeats), last heartbeat, and the deploys it runs now (of the
    apps the key may see)."""
    found = workers.list_workers(
        db, heartbeat_interval=rt.settings.heartbeat_interval, apps=who.apps
    )
    return [worker.as_dict() for worker in found]
