"""The `freight` command as a user runs it: a subprocess, exit codes, one-line errors; `apps
validate|sync` on this machine, release history, commits and locks through a real API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from freight.db import session_scope
from freight.service import apps, releases
from freight.settings import Settings
from tests.apiserver import serve_api
from tests.conftest import Clock
from tests.factories import GitRepo, InlineOrchestrator, make_app

FREIGHT = str(Path(sys.executable).parent / "freight")
APP = """name: {name}
repository: {repo}
provider: {{type: shell, command: "echo {{sha}}"}}
environments:
  staging: {{default_ref: main}}
"""


def freight(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )


def as_user(
    url: str, tmp_path: Path, *, user: str | None = "ana", columns: int = 200
) -> dict[str, str]:
    """The environment of `freight` talking to the API at `url` (as `user`, if any)."""
    env = {
        "FREIGHT_URL": url,
        "FREIGHT_API_KEY": "s3cr3t-api-key",
        "FREIGHT_CONFIG": str(tmp_path / "none.toml"),
        "COLUMNS": str(columns),
    }
    return env if user is None else {**env, "FREIGHT_USER": user}


def test_validate_lists_apps_and_names_file_and_field_of_a_problem(tmp_path: Path) -> None:
    catalogue = tmp_path / "deployments"
    catalogue.mkdir()
    (catalogue / "web.yaml").write_text(APP.format(name="web", repo="https://x/web.git"))
    ok = freight("apps", "validate", str(catalogue))
    assert ok.returncode == 0, ok.stderr
    assert "ok web (web.yaml): shell; staging" in ok.stdout

    (catalogue / "api.yaml").write_text(
        APP.format(name="api", repo="https://x/api.git").replace("shell", "rocket")
    )
    bad = freight("apps", "validate", str(catalogue))
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert "invalid_provider" in bad.stderr and "api.yaml" in bad.stderr
    assert "provider" in bad.stderr and "rocket" in bad.stderr


def test_sync_applies_the_catalogue_all_or_nothing(
    tmp_path: Path, engine: Engine, database_url: str, origin: GitRepo
) -> None:
    catalogue = tmp_path / "deployments"
    catalogue.mkdir()
    (catalogue / "web.yaml").write_text(APP.format(name="web", repo=origin.url))
    env = {
        "FREIGHT_DATABASE_URL": database_url,
        "FREIGHT_HOME": str(tmp_path / "home"),
        "FREIGHT_ALLOW_LOCAL_REPOSITORIES": "true",
    }
    first = freight("apps", "sync", str(catalogue), **env)
    assert first.returncode == 0, first.stderr
    assert "created: web" in first.stdout
    again = freight("apps", "sync", str(catalogue), **env)
    assert "unchanged: web" in again.stdout

    # A second, broken file: nothing of the catalogue is applied, the good edit included.
    (catalogue / "web.yaml").write_text(
        APP.format(name="web", repo=origin.url).replace("echo", "printf")
    )
    (catalogue / "zz.yaml").write_text("name: zz\nrepository: x\nprovider: {type: shell}\n")
    broken = freight("apps", "sync", str(catalogue), **env)
    assert broken.returncode == 1
    assert "zz.yaml" in broken.stderr and "provider.command" in broken.stderr
    with session_scope(engine) as session:
        command = apps.spec_of(apps.get_app(session, "web")).provider.command  # type: ignore[attr-defined]
        assert command == "echo {sha}"
        assert apps.find_app(session, "zz") is None
    shutil.rmtree(catalogue)


# The command line talks HTTP to the API; the API's database is exercised on SQLite and
# PostgreSQL by the contract tests. These long conversations run on SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_release_history_commits_and_locks_from_the_command_line(
    settings: Settings, engine: Engine, origin: GitRepo, tmp_path: Path
) -> None:
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as server:
        with session_scope(engine) as session:
            app = make_app(session, origin, command="echo ok").name
        env = as_user(server.url, tmp_path)
        first = origin.git("rev-parse", "HEAD")
        assert freight("deploy", app, "staging", "--follow", **env).returncode == 0
        # What people type is printed as typed, brackets and all (no markup).
        second = origin.commit("Show the [bold]banner[/] again")
        assert freight("deploy", app, "staging", "--follow", **env).returncode == 0

        history = freight("releases", app, "staging", **env)
        assert history.returncode == 0, history.stderr
        names = re.findall(rf"{app}/staging#\d", history.stdout)
        assert names == [f"{app}/staging#2", f"{app}/staging#1"]
        older = freight("releases", app, "staging", "--limit", "1", "--page", "2", **env)
        assert re.findall(rf"{app}/staging#\d", older.stdout) == [f"{app}/staging#1"]

        span = freight("commits", app, "staging", "--from", ":previous", **env)
        assert span.returncode == 0, span.stderr
        assert span.stdout.splitlines() == [
            f"{first[:7]}..{second[:7]}: 1 commit",
            f"{second[:7]} Show the [bold]banner[/] again (Ana Dev)",
        ]

        until = (datetime.now() + timedelta(hours=2)).replace(microsecond=0)
        locked = freight(
            "lock", app, "staging", "--reason", "[/] migration", "--until", until.isoformat(), **env
        )
        assert locked.returncode == 0, locked.stderr
        expected = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert f"Locked {app}/staging for ana: [/] migration until {expected} UTC" in locked.stdout
        assert "ana: [/] migration" in freight("releases", app, **env).stdout
        bob = {**env, "FREIGHT_USER": "bob"}
        refused = freight("rollback", app, "staging", **bob)
        assert refused.returncode == 1 and "(locked)" in refused.stderr
        forced = freight(
            "rollback", app, "staging", "--force", "--reason", "bad banner", "--follow", **bob
        )
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert f"past: {app}/staging is locked by ana: [/] migration" in forced.stdout
        assert "Reason: bad banner\n" in forced.stdout
        assert freight("releases", app, "staging", "--limit", "1", **env).stdout.count(first[:7])
        assert freight("unlock", app, "staging", **env).returncode == 0
        assert freight("lock", app, "--reason", "freeze", "--for", "1h", **env).returncode == 0

        now = freight("locks", app, **env).stdout
        assert "freeze" in now and "migration" not in now
        history_of_locks = freight("locks", app, "--history", **env)
        rows = [line for line in history_of_locks.stdout.splitlines() if app in line]
        assert len(rows) == 2 and "freeze" in rows[0] and "(all)" in rows[0]
        assert "[/] migration" in rows[1] and "by ana" in rows[1]

        bad = freight("lock", app, "--reason", "x", "--until", "tomorrow", **env)
        assert bad.returncode == 1
        assert bad.stderr.strip() == (
            "error (invalid_request): --until: 'tomorrow' is not a time; use e.g. 2026-12-24T18:00"
        )
        past = freight("lock", app, "--reason", "x", "--until", "2020-01-01T00:00Z", **env)
        assert past.returncode == 1 and "in the future" in past.stderr
    orchestrator.join()


# The command line talks HTTP to the API; the API's database is exercised on SQLite and
# PostgreSQL by the contract tests. These long conversations run on SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_queues_from_the_command_line(
    settings: Settings, engine: Engine, origin: GitRepo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as server:
        with session_scope(engine) as session:
            app = make_app(
                session,
                origin,
                command=f'[ "$FREIGHT_NUMBER" != 1 ] || until [ -e {gate} ]; do sleep 0.1; done',
            ).name
        env = as_user(server.url, tmp_path, user=None)
        queued = [
            ("staging", "ana"),
            ("production", "ana"),
            ("staging", "bob"),
            ("production", "carl"),
            ("staging", "dan"),
        ]
        for target, user in queued:
            made = freight("deploy", app, target, **{**env, "FREIGHT_USER": user})
            assert made.returncode == 0, made.stderr

        def queue(*args: str) -> list[tuple[str, str, str]]:
            listed = freight("queue", app, *args, **env)
            assert listed.returncode == 0, listed.stderr
            return re.findall(
                rf"│ (\d+)\s+│ ({app}/\w+#\d)\s+│.*│ (\w+)\s+│ \S+ \S+\s+│", listed.stdout
            )

        # Each environment's queue, numbered on its own; #1 of each is running.
        assert queue() == [
            ("1", f"{app}/production#2", "carl"),
            ("1", f"{app}/staging#2", "bob"),
            ("2", f"{app}/staging#3", "dan"),
        ]
        moved = freight("front", f"{app}/staging#3", **env)
        assert moved.returncode == 0 and moved.stdout.strip() == f"{app}/staging#3 is next"
        assert freight("cancel", f"{app}/staging#2", **env).returncode == 0
        assert queue("staging") == [("1", f"{app}/staging#3", "dan")]
        gate.touch()
    orchestrator.join()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_freezes_and_deploy_windows_from_the_command_line(
    settings: Settings, engine: Engine, origin: GitRepo, tmp_path: Path, clock: Clock
) -> None:
    clock.set(datetime(2026, 12, 6, 12, tzinfo=UTC))  # a Sunday
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as server:
        with session_scope(engine) as session:
            app = make_app(
                session,
                origin,
                windows=[{"allow": "0 9 * * 1-4", "duration": "8h", "timezone": "Europe/Berlin"}],
            ).name
        env = as_user(server.url, tmp_path, columns=250)
        state = freight("releases", app, **env)
        assert state.stdout.count("closed, opens Mon 09:00 Europe/Berlin") == 2, state.stdout
        refused = freight("deploy", app, "staging", **env)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"error (outside_window): {app}/staging is outside its deploy windows; the next "
            "opens Mon 09:00 Europe/Berlin"
        )
        frozen = freight(
            "freeze", app, "production", "--reason", "year-end",
            "--from", "2026-12-06T13:00+00:00", "--until", "2026-12-07T12:00+00:00", **env,
        )  # fmt: skip
        assert frozen.returncode == 0, frozen.stderr
        assert frozen.stdout.startswith(
            f"Frozen {app}/production from 2026-12-06 13:00:00 UTC until 2026-12-07 12:00:00 "
            "UTC: year-end (lock "
        )
        (row,) = [line for line in freight("locks", app, **env).stdout.splitlines() if app in line]
        assert "freeze" in row and "year-end" in row and "2026-12-06 13:00" in row
        endless = freight("freeze", app, "--reason", "x", **env)
        assert endless.returncode == 1
        assert endless.stderr.strip() == (
            "error (missing_argument): A freeze needs an end: --until 2027-01-04T08:00"
        )
    orchestrator.join()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_promote_deploys_what_is_live_on_one_environment_to_another(
    settings: Settings, engine: Engine, origin: GitRepo, tmp_path: Path, clock: Clock
) -> None:
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as server:
        with session_scope(engine) as session:
            app = make_app(
                session,
                origin,
                command="echo deployed {sha}",
                environments={"staging": {}, "production": {"requires": {"staging": "30m"}}},
            ).name
        env = as_user(server.url, tmp_path)
        nothing = freight("promote", app, "staging", "production", **env)
        assert nothing.returncode == 1
        assert f"Nothing is live on {app}/staging to promote" in nothing.stderr
        sha = origin.git("rev-parse", "HEAD")
        assert freight("deploy", app, "staging", "--follow", **env).returncode == 0
        origin.commit("newer, not on staging")
        with session_scope(engine) as session:
            staged = releases.live_deploy(session, apps.get_app(session, app).id, "staging")
            assert staged is not None and staged.date_finished
            finished = staged.date_finished
        clock.set(finished + timedelta(minutes=5))
        early = freight("promote", app, "staging", "production", **env)
        assert early.returncode == 1
        assert early.stderr.startswith("error (not_promoted): ")
        assert f"{sha[:7]} has been for 5m" in early.stderr
        clock.set(finished + timedelta(minutes=30))
        done = freight("promote", app, "staging", "production", "--follow", **env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"deployed {sha}" in done.stdout  # what staging had, not the branch's head
    orchestrator.join()
