"""hubot-freight's three commands (deploy, rollback, cancel) on the /tasks/ routes."""

from __future__ import annotations

from freight.db import session_scope
from tests.apiserver import ApiServer
from tests.contract.clients import Hubot
from tests.contract.helpers import body, error, finish
from tests.factories import GitRepo, RecordingOrchestrator, make_app
from tests.helpers import wait_for


def test_deploy_rollback_and_cancel_as_hubot_sends_them(
    server: ApiServer, origin: GitRepo, orchestrator: RecordingOrchestrator
) -> None:
    first = origin.git("rev-parse", "HEAD")
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    hubot = Hubot(server.api, "s3cr3t-api-key")

    # `deploy app` (no ref, no env: both left out of the body) and `deploy app:ref to staging`
    one = body(hubot.deploy(app, None, None, "ana"), 201)
    assert (one["environment"], one["ref"], one["user"]["name"]) == ("production", "main", "ana")
    finish(server.engine, int(one["id"]))
    second = origin.commit("second")
    two = body(hubot.deploy(app, "main", "production", "bob"), 201)
    assert two["sha"] == second
    wait_for(lambda: int(two["id"]) in orchestrator.submitted, 10, "the hand-over")
    finish(server.engine, int(two["id"]))

    # `rollback app/production`: back to the last finished sha before the live one
    back = body(hubot.rollback(app, "production", "ana"), 201)
    assert (back["ref"], back["sha"]) == (":previous", first)

    # `cancel app/production#3`
    cancelled = body(hubot.cancel(app, "production", back["number"]), 200)
    assert cancelled["status"] == "cancelled"
    # Hubot replies with `data.error` on failure.
    assert error(hubot.cancel(app, "production", 99), 404, "invalid_resource")
    assert "no earlier deploy" in error(hubot.rollback(app, "staging", "ana"), 400, "invalid_ref")
