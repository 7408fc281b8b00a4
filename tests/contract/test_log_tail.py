"""The log endpoint on a real deploy (git checkout, shell command, live chunks), while it runs
and after: `offset=-1` tails, `nextOffset` follows, an empty page echoes the offset asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from freight.db import session_scope
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.contract.clients import FreightCli
from tests.contract.helpers import body
from tests.factories import GitRepo, InlineOrchestrator, make_app
from tests.helpers import wait_for


@pytest.fixture
def live(settings: Settings, engine: Engine) -> Iterator[ApiServer]:
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as running:
        yield running
    orchestrator.join()


def test_tail_and_follow_a_running_deploy(live: ApiServer, origin: GitRepo, tmp_path: Path) -> None:
    server = live
    gate = tmp_path / "gate"
    with session_scope(server.engine) as session:
        app = make_app(
            session,
            origin,
            command="for i in 1 2 3; do echo line-$i; done; "
            f"while [ ! -e {gate} ]; do sleep 0.05; done; echo last",
        ).name
    cli = FreightCli(f"{server.api}/", "s3cr3t-api-key")
    task = f"{app}/production#1"
    body(cli.deploy(app), 201)

    def text(page: dict[str, object]) -> str:
        return "".join(c["text"] for c in page["chunks"])  # type: ignore[index, union-attr]

    wait_for(lambda: "line-3" in text(body(cli.tail_first(task), 200)), 30, "the first lines")
    assert body(cli.status(task), 200)["status"] == "in_progress"
    whole = body(cli.tail_next(task, 0), 200)
    end = whole["nextOffset"]
    assert end == len(text(whole))
    tail = body(cli.request("GET", f"/deploys/{app}/production/1/log/?offset=-1&limit=1"), 200)
    # The tail is the chunk holding the last character; it ends where the log ends.
    assert text(whole).endswith(text(tail)) and tail["nextOffset"] == end
    assert body(cli.tail_next(task, end), 200) == {"nextOffset": end, "chunks": []}

    gate.touch()
    followed, offset = text(whole), end
    while True:  # as a follower does: until the deploy has ended and nothing more comes
        ended = body(cli.status(task), 200)["status"] != "in_progress"
        page = body(cli.tail_next(task, offset), 200)
        followed, offset = followed + text(page), page["nextOffset"]
        if ended and not page["chunks"]:
            break
    assert body(cli.status(task), 200)["status"] == "finished"
    assert followed == text(body(cli.tail_next(task, 0), 200))
    assert "line-1\nline-2\nline-3\n" in followed and "last\n" in followed
    assert ">> Deploy finished after" in followed.splitlines()[-1]
