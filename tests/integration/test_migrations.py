"""The migrations make exactly the schema the models describe, and fill what they add."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from freight.db import Base, make_engine
from freight.db.migrate import alembic_config, upgrade


def test_migrations_match_the_models(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_live_releases_are_filled_from_the_history(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "0004")
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO repository (id, url, vcs, date_created) "
                    "VALUES (1, '/srv/git/web', 'git', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO app (id, name, repository_id, config, source, date_created) "
                    "VALUES (1, 'web', 1, '{}', 'api', CURRENT_TIMESTAMP)"
                )
            )
            for number, env, status in [
                (1, "staging", "finished"),
                (2, "staging", "finished"),
                (3, "staging", "failed"),
                (1, "production", "finished"),
                (2, "production", "pending"),
            ]:
                connection.execute(
                    text(
                        "INSERT INTO deploy (app_id, environment, number, ref, status, params, "
                        "force, config, log_size, date_created) VALUES (1, :env, :number, "
                        "'main', :status, '{}', false, '{}', 0, CURRENT_TIMESTAMP)"
                    ),
                    {"env": env, "number": number, "status": status},
                )
        upgrade(database_url)
        with engine.connect() as connection:
            live = connection.execute(
                text(
                    "SELECT r.environment, d.number FROM live_release r "
                    "JOIN deploy d ON d.id = r.deploy_id ORDER BY r.environment"
                )
            ).all()
        assert [tuple(row) for row in live] == [("production", 1), ("staging", 2)]
    finally:
        engine.dispose()
