"""Unit tests run on an in-memory SQLite database: nothing but Python and the project."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from freight.db import Base, make_engine


@pytest.fixture
def memory_engine() -> Iterator[Engine]:
    engine = make_engine("sqlite://")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
