"""The API served by a real uvicorn on a free loopback port, in a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from sqlalchemy import Engine

from freight.api import create_app
from freight.api.app import stopping
from freight.db import session_scope
from freight.execution.handover import HandOver
from freight.execution.ports import Orchestrator
from freight.service import keys
from freight.settings import Settings
from tests.helpers import wait_for


@dataclass
class ApiServer:
    url: str
    settings: Settings
    engine: Engine
    orchestrator: Orchestrator

    @property
    def api(self) -> str:
        return f"{self.url}/api/0"

    def key(self, *scopes: str, apps: list[str] | None = None, name: str = "test") -> str:
        with session_scope(self.engine) as session:
            return keys.create_key(session, name=name, scopes=list(scopes), apps=apps)[1]

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        if key is not None:
            headers.setdefault("Authorization", f"Key {key}")
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)


@contextmanager
def serve_api(
    settings: Settings, engine: Engine, orchestrator: Orchestrator, *, port: int = 0
) -> Iterator[ApiServer]:
    """On `port` (default: a free one), to come back on the same one after a restart."""
    handover = HandOver(
        engine,
        orchestrator,
        workspace_root=settings.workspaces,
        git=settings.request_git_access(),
    )
    app = create_app(settings, handover=handover)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", settings, engine, orchestrator)
    finally:
        stopping(app)
        server.should_exit = True
        thread.join(30)
