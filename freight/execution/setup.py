"""Bringing a Freight installation up to date: schema migrations and the app catalogue."""

from __future__ import annotations

from pathlib import Path

from freight import catalogue
from freight.db import get_engine, session_scope
from freight.db.migrate import upgrade
from freight.service import apps, keys
from freight.settings import Settings


def sync_catalogue(settings: Settings, directory: Path) -> apps.SyncReport:
    """Migrate, then apply the whole catalogue in one transaction (nothing if any file is bad)."""
    entries = catalogue.load_dir(directory, allow_local=settings.allow_local_repositories)
    upgrade(settings.database_url)
    with session_scope(get_engine(settings.database_url)) as session:
        return apps.sync_catalogue(session, entries)


def first_admin_key(settings: Settings) -> str | None:
    """On a first start (no admin key stored yet), make one and return it, to print once."""
    with session_scope(get_engine(settings.database_url)) as session:
        return keys.bootstrap_admin_key(session)


def new_admin_key(settings: Settings, name: str) -> str:
    """An admin key made on the server's own database: for a lost key, with no API key at hand."""
    with session_scope(get_engine(settings.database_url)) as session:
        return keys.create_key(session, name=name, scopes=["admin"], created_by="local")[1]
