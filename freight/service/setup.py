"""Bringing a Freight installation up to date: schema migrations and the app catalogue."""

from __future__ import annotations

from pathlib import Path

from freight import catalogue
from freight.db import get_engine, session_scope
from freight.db.migrate import upgrade
from freight.service import apps
from freight.settings import Settings


def sync_catalogue(settings: Settings, directory: Path) -> apps.SyncReport:
    """Migrate, then apply the whole catalogue in one transaction (nothing if any file is bad)."""
    entries = catalogue.load_dir(directory)
    upgrade(settings.database_url)
    with session_scope(get_engine(settings.database_url)) as session:
        return apps.sync_catalogue(session, entries)
