"""Fixtures of the dashboard's browser tests: one Chromium per module, an API serving the
dashboard with deploys run in threads of the test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser
from sqlalchemy import Engine

from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.browsing import chromium
from tests.factories import InlineOrchestrator


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def dashboard(settings: Settings, engine: Engine) -> Iterator[ApiServer]:
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as running:
        yield running
    orchestrator.join()
