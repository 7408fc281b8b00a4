"""The API as Freight API 0 clients meet it: a real server, a database, a recording orchestrator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.factories import RecordingOrchestrator


@pytest.fixture
def orchestrator() -> RecordingOrchestrator:
    return RecordingOrchestrator()


@pytest.fixture
def server(
    settings: Settings, engine: Engine, orchestrator: RecordingOrchestrator
) -> Iterator[ApiServer]:
    with serve_api(settings, engine, orchestrator) as running:
        yield running
