"""Alembic environment: the URL comes from the Config that freight.db.migrate builds."""

from __future__ import annotations

from alembic import context

from freight.db import Base, make_engine

url = context.config.get_main_option("sqlalchemy.url")
assert url, "run migrations through freight.db.migrate, which sets the URL"

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
