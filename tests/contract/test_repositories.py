"""Git is only asked to do what a deploy needs: the API refuses a repository URL that would make
git run a helper, take an option or (unless allowed) read the server's own disk, and answers at
once; git that a request waits on is bounded by a setting."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from freight.catalogue import AppSpec
from freight.db import AppSource, session_scope
from freight.service import apps
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.contract.helpers import body, count_deploys, error
from tests.factories import GitRepo, RecordingOrchestrator
from tests.helpers import HOSTILE_REPOSITORIES

KEY = "s3cr3t-api-key"
ALLOWED = "https://git.example.invalid/acme/web.git"
SHELL = {"provider": "shell", "provider_config": {"command": "true"}}
# Well under the 600 s a hung git used to hold a request for; a client that waits longer fails.
PATIENCE = 10


@pytest.fixture
def strict(settings: Settings, engine: Engine) -> Iterator[ApiServer]:
    """The API of a real install: no repositories on the server's disk."""
    real = settings.model_copy(update={"allow_local_repositories": False})
    with serve_api(real, engine, RecordingOrchestrator()) as running:
        yield running


def client(server: ApiServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.api, headers={"Authorization": f"Key {KEY}"}, timeout=PATIENCE
    )


def save_app(engine: Engine, name: str, repository: str) -> None:
    """An app as the database may hold it from before its repository was checked."""
    spec = AppSpec.model_validate(
        {
            "name": name,
            "repository": repository,
            "provider": {"type": "shell", "command": "true"},
            "environments": {"production": {"default_ref": "main"}},
        }
    )
    with session_scope(engine) as session:
        apps.save_app(session, spec, source=AppSource.API)


@pytest.mark.parametrize(
    "template",
    HOSTILE_REPOSITORIES,
)
def test_creating_or_editing_an_app_refuses_the_repository_naming_the_field(
    strict: ApiServer, origin: GitRepo, tmp_path: Path, template: str
) -> None:
    marker = tmp_path / "pwned"
    url = template.format(marker=marker, origin=origin.path)
    with client(strict) as c:
        made = c.post("/apps/", json={"name": "web", "repository": ALLOWED, **SHELL})
        assert body(made, 201)["repository"] == ALLOWED

        refused = error(
            c.post("/apps/", json={"name": "api", "repository": url, **SHELL}),
            400,
            "invalid_repository",
        )
        assert refused.startswith(f"repository: {url!r} is not allowed: ")
        edited = c.put("/apps/web/", json={"repository": url})
        assert error(edited, 400, "invalid_repository").startswith("repository: ")

        assert body(c.get("/apps/web/"), 200)["repository"] == ALLOWED
        assert error(c.get("/apps/api/"), 404, "invalid_resource")
    assert not marker.exists()
    assert not (strict.settings.workspaces / "mirrors").exists()


def test_a_deploy_of_a_repository_stored_before_the_check_is_refused_at_once(
    strict: ApiServer, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    save_app(strict.engine, "fd", "fd::17")
    save_app(strict.engine, "ext", f"ext::sh -c touch% {marker}")
    with client(strict) as c:
        for app in ("fd", "ext"):
            refused = c.post("/deploys/", json={"app": app, "user": "ana"})
            assert error(refused, 400, "invalid_repository").startswith("repository: ")
    assert not marker.exists()
    assert count_deploys(strict.engine) == 0


def test_git_that_a_request_waits_on_is_bounded_by_the_setting(
    settings: Settings, engine: Engine
) -> None:
    bounded = settings.model_copy(update={"request_git_timeout": 0.5})
    # The kernel completes the TCP handshake from the backlog; nobody ever answers.
    with (
        socket.socket() as silent,
        serve_api(bounded, engine, RecordingOrchestrator()) as server,
        client(server) as c,
    ):
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        save_app(engine, "web", f"git://127.0.0.1:{silent.getsockname()[1]}/web.git")
        failed = c.post("/deploys/", json={"app": "web", "user": "ana"})
        # The remote failed, not Freight: a bad gateway, never a 500.
        assert "git clone timed out after 0.5s" in error(failed, 502, "vcs_error")
    assert count_deploys(engine) == 0
