"""`freight apps validate|sync` as a user runs them: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

from freight.db import session_scope
from freight.service import apps
from tests.factories import GitRepo

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
    env = {"FREIGHT_DATABASE_URL": database_url, "FREIGHT_HOME": str(tmp_path / "home")}
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
