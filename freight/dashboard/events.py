"""The dashboard's event streams (server-sent events; see freight/dashboard/stream.py): one
for the overview, one per deploy page."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from freight.api import schemas
from freight.api.deps import RuntimeDep
from freight.dashboard import pages, stream, views
from freight.dashboard.web import LoginRequired, Viewer, viewer
from freight.db import DeployStatus, session_scope
from freight.service import deploys, logs
from freight.service.steps import StepState

router = APIRouter(include_in_schema=False)
# Log sent per event at most: a long log arrives in parts, each resumable by its offset.
LOG_PART = 256 * 1024
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/events")
async def overview_events(
    request: Request,
    rt: RuntimeDep,
    who: Viewer,
    since: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """`since`: the change id the page was made at; on a reconnect the browser's Last-Event-ID
    says what it last had."""

    def render(seen: Hashable) -> str | None:
        if not _still_allowed(request, rt):
            return None
        return pages.overview_html(rt, who, seen=seen)

    async def rendered(seen: Hashable) -> str | None:
        return await run_in_threadpool(render, seen)

    return StreamingResponse(
        stream.overview(
            stream.hub_of(request.app), last_event_id or since, rendered, request.is_disconnected
        ),
        media_type="text/event-stream",
        headers=HEADERS,
    )


@router.get("/events/deploys/{deploy_id}")
async def deploy_events(
    request: Request,
    rt: RuntimeDep,
    who: Viewer,
    deploy_id: int,
    offset: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    # The page's own offset on a reconnect (what it had shown), else the one it asked for.
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else offset
    await run_in_threadpool(_check_visible, rt, who, deploy_id)

    def look(at: int) -> tuple[dict[str, Any], bool] | None:
        if not _still_allowed(request, rt):
            return None
        with session_scope(rt.engine, read_only=True) as session:
            deploy = deploys.get_deploy(session, deploy_id, apps=who.apps)
            state = views.deploy_state(session, deploy)
            page = logs.read_log(session, deploy_id, offset=at, limit=LOG_PART)
            complete = page.next_offset >= (deploy.log_size or 0)
            # Ended, all of its log sent, and no step left to end (the notices come last).
            settled = all(step["state"] != StepState.RUNNING for step in state["steps"])
            over = DeployStatus(deploy.status).is_final and complete and settled
        state["log"] = {
            "nextOffset": page.next_offset,
            "more": not complete,
            "chunks": [{"text": c.text, "date": schemas.wire_date(c.date)} for c in page.chunks],
        }
        return state, over

    async def looked(at: int) -> tuple[dict[str, Any], bool] | None:
        return await run_in_threadpool(look, at)

    return StreamingResponse(
        stream.deploy(
            stream.hub_of(request.app), deploy_id, start, looked, request.is_disconnected
        ),
        media_type="text/event-stream",
        headers=HEADERS,
    )


def _check_visible(rt: RuntimeDep, who: Viewer, deploy_id: int) -> None:
    """A deploy of an app outside the viewer's key answers as an unknown one (404)."""
    with session_scope(rt.engine, read_only=True) as session:
        deploys.get_deploy(session, deploy_id, apps=who.apps)


def _still_allowed(request: Request, rt: RuntimeDep) -> bool:
    """Whether the session that opened a stream still holds (not logged out, its key not
    revoked), asked before each event: a stream outlives the request that checked it."""
    try:
        viewer(request, rt)
    except LoginRequired:
        return False
    return True
