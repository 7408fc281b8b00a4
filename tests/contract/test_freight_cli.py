"""Every command of freight-cli, replayed as it sends it, with the fields it reads."""

from __future__ import annotations

import json

import httpx

from freight.db import AppSource, session_scope
from freight.service import apps
from tests.apiserver import ApiServer
from tests.contract.clients import FreightCli
from tests.contract.helpers import DATE, body, error, write_log
from tests.factories import GitRepo, RecordingOrchestrator, make_app
from tests.helpers import wait_for


def cli(server: ApiServer) -> FreightCli:
    return FreightCli(f"{server.api}/", "s3cr3t-api-key")


def test_deploy_status_tail_and_cancel(
    server: ApiServer, origin: GitRepo, orchestrator: RecordingOrchestrator
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    client = cli(server)

    created = body(client.deploy(app), 201)
    assert created["name"] == f"{app}/production#1"
    assert created["id"] and isinstance(created["id"], str)
    assert created["status"] == "pending" and created["sha"] == origin.git("rev-parse", "HEAD")
    deploy_id = int(created["id"])
    wait_for(lambda: deploy_id in orchestrator.submitted, 10, "the hand-over after the response")

    task = f"{app}/production#1"
    status = body(client.status(task), 200)
    assert status["app"]["name"] == app
    assert (status["environment"], status["number"]) == ("production", 1)
    assert status["status"] == "in_progress"
    assert DATE.match(status["dateCreated"])
    assert status["dateStarted"] is None and status["dateFinished"] is None

    empty = body(client.tail_first(task), 200)
    assert empty == {"nextOffset": -1, "chunks": []}
    write_log(server.engine, deploy_id, "x" * 600, "y" * 600)
    first = body(client.tail_first(task), 200)
    # The last 1,000 characters are asked for; whole chunks come back, the last one included.
    assert "".join(c["text"] for c in first["chunks"]).endswith("y" * 600 + "\n")
    assert first["nextOffset"] == 1202
    assert all(DATE.match(c["date"]) for c in first["chunks"])
    assert body(client.tail_next(task, first["nextOffset"]), 200) == {
        "nextOffset": 1202,
        "chunks": [],
    }
    write_log(server.engine, deploy_id, "done")
    more = body(client.tail_next(task, 1202), 200)
    assert [c["text"] for c in more["chunks"]] == ["done\n"] and more["nextOffset"] == 1207

    cancelled = body(client.cancel(task), 200)
    assert cancelled["id"] == str(deploy_id)
    assert body(client.status(task), 200)["status"] == "cancelled"
    assert "already ended" in error(client.cancel(task), 400, "invalid_resource")


def test_deploy_with_env_and_ref(server: ApiServer, origin: GitRepo) -> None:
    first = origin.git("rev-parse", "HEAD")
    origin.commit("second")
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    created = body(cli(server).deploy(app, env="staging", ref=first[:10]), 201)
    assert (created["environment"], created["ref"], created["sha"]) == (
        "staging",
        first[:10],
        first,
    )
    assert "Unknown ref 'nope'" in error(cli(server).deploy(app, ref="nope"), 400, "invalid_ref")
    assert error(cli(server).deploy("ghost"), 404, "invalid_resource")


def test_app_list_show_create_edit_delete(server: ApiServer, origin: GitRepo) -> None:
    client = cli(server)
    created = client.app_create("web", origin.url, '{"command": "bin/deploy {environment}"}')
    assert body(created, 201)["name"] == "web"

    listed = body(client.request("GET", "/apps/"), 200)
    assert [a["name"] for a in listed] == ["web"]
    assert listed[0]["environments"] == {"production": {"defaultRef": "main"}}
    shown = body(client.request("GET", "/apps/web/"), 200)
    assert shown["provider"] == "shell"
    assert shown["provider_config"]["command"] == "bin/deploy {environment}"
    assert shown["lockedReason"] is None and shown["changeLabels"] == []

    edited = client.app_edit(
        "web",
        {
            "provider_config": {**shown["provider_config"], "command": "bin/ship {sha}"},
            "environments": {
                "staging": {"defaultRef": "develop"},
                "production": {"defaultRef": "main"},
            },
        },
    )
    after = body(edited, 200)
    assert after["provider_config"]["command"] == "bin/ship {sha}"
    assert after["environments"]["staging"] == {"defaultRef": "develop"}

    locked = client.app_edit("web", {"lockedReason": "release freeze"})
    assert body(locked, 200)["lockedReason"] == "release freeze"
    assert "release freeze" in error(client.deploy("web"), 400, "locked")
    unlocked = client.app_edit("web", {"lockedReason": "False"})
    assert body(unlocked, 200)["lockedReason"] is None

    assert body(client.request("DELETE", "/apps/web/"), 200) == {"id": shown["id"]}
    assert error(client.request("GET", "/apps/web/"), 404, "invalid_resource")


def test_editing_an_app_a_catalogue_file_owns_is_refused_naming_the_file(
    server: ApiServer, origin: GitRepo
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin)
        app.source, app.source_file = AppSource.CATALOGUE, "deployments/web.yaml"
        name = app.name
    client = cli(server)
    message = error(client.app_edit(name, {"repository": "/elsewhere"}), 409, "conflict")
    assert "deployments/web.yaml" in message
    # A lock is state, not config: it may be set on such an app.
    assert body(client.app_edit(name, {"lockedReason": "freeze"}), 200)["lockedReason"] == "freeze"
    with session_scope(server.engine) as session:
        assert apps.get_app(session, name).repository.url == origin.url


def test_webhook_url_made_by_the_cli_deploys_a_push(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    url = cli(server).webhook_url("github", "deploy", app, "staging")
    sha = origin.git("rev-parse", "HEAD")
    push = {
        "ref": "refs/heads/main",
        "head_commit": {"id": sha, "committer": {"email": "ana@example.com", "name": "Ana"}},
    }
    response = body(
        httpx.post(
            url,
            content=json.dumps(push),
            headers={"Content-Type": "application/json", "X-GitHub-Event": "push"},
        ),
        201,
    )
    assert (response["sha"], response["user"]["name"]) == (sha, "ana@example.com")
