"""The HTTP API: Freight API 0 under `/api/0`, signed hooks under `/webhooks`, `/health`, and
the dashboard's pages (`/`, `/apps/APP`, `/deploys/APP/ENV/N`) with their assets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from freight import tls
from freight.api import access_log, errors
from freight.api.deps import Runtime
from freight.api.gate import RequestGate
from freight.api.routes import (
    apps,
    deploys,
    health,
    keys,
    locks,
    machines,
    releases,
    stats,
    webhooks,
    workers,
)
from freight.api.routing import PREFIX
from freight.dashboard import actions, events, pages, stream, web
from freight.db import session_scope
from freight.execution import api_beat
from freight.execution.handover import HandOver
from freight.service import server_secrets
from freight.settings import Settings
from freight.telemetry import report_errors

DASHBOARD_SECRET = "dashboard_key"


def create_app(settings: Settings, *, handover: HandOver | None = None) -> FastAPI:
    """The API for these settings; without a hand-over path it hands deploys to Prefect."""
    report_errors(settings, "api")
    access_log.install()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with ExitStack() as stack:
            path = handover
            if path is None:
                from freight import wiring
                from freight.orchestrator import PrefectOrchestrator

                orchestrator = stack.enter_context(PrefectOrchestrator(settings.deploy_deployment))
                # Deploy requests fetch their ref while the client waits.
                path = wiring.hand_over(settings, orchestrator, git=settings.request_git_access())
            http = stack.enter_context(tls.client(timeout=settings.notify_timeout))
            with session_scope(path.engine) as db:
                secret = server_secrets.get_or_create(db, DASHBOARD_SECRET)
            app.state.runtime = Runtime(settings, path.engine, path, http, secret)
            app.state.hub = stream.Hub(path.engine, heartbeat_interval=settings.heartbeat_interval)
            app.state.hub.start()  # pages built from it know what changed, streams or not
            stack.enter_context(api_beat.beating(path.engine))
            try:
                yield
            finally:
                await app.state.hub.stop()

    app = FastAPI(
        title="Freight",
        description="Deploys on Prefect; wire-compatible with Freight API 0.",
        version="0",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    errors.install(app)
    for module in (apps, deploys, locks, releases, keys, stats, workers, machines):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    for dashboard in (pages, actions, events):
        app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.add_exception_handler(web.LoginRequired, web.login_redirect)

    # Freight's catch-all: any other path (or method) is a JSON 404.
    @app.api_route(
        "/{path:path}",
        methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        include_in_schema=False,
    )
    def not_found(path: str) -> Any:
        return errors.not_found()

    app.add_middleware(RequestGate, limit=settings.max_body_bytes)
    return app


def stopping(app: FastAPI) -> None:
    """The server was told to stop: end the dashboards' event streams, which never end by
    themselves (the server waits for open responses before it stops)."""
    hub = getattr(app.state, "hub", None)
    if isinstance(hub, stream.Hub):
        hub.close()
