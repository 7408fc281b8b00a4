"""`GET /deploys/` pages: `cursor` and `limit`, and `Link` headers that walk every page once."""

from __future__ import annotations

import re

from freight.db import session_scope
from tests.apiserver import ApiServer
from tests.contract.helpers import add_deploys, body
from tests.factories import GitRepo, make_app

LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')


def links(header: str | None) -> dict[str, str]:
    return {rel: url for url, rel in LINK.findall(header or "")}


def test_link_headers_walk_250_deploys_exactly_once(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin)
        app_id, name = app.id, app.name
    add_deploys(server.engine, app_id, "staging", 150)
    add_deploys(server.engine, app_id, "production", 100)
    seen: list[str] = []
    pages = 0
    url: str | None = f"{server.api}/deploys/?app={name}&limit=30"
    with server.client("s3cr3t-api-key") as client:
        while url:
            response = client.get(url)
            page = body(response, 200)
            pages += 1
            seen += [d["id"] for d in page]
            found = links(response.headers.get("link"))
            if pages > 1:
                assert "previous" in found and f"cursor={pages - 1}" in found["previous"]
                assert f"app={name}" in found["previous"]
            url = found.get("next")
        assert pages == 9  # 8 full pages of 30 and one of 10
        assert len(seen) == 250 and len(set(seen)) == 250
        assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)

        staging = client.get("/deploys/", params={"app": name, "env": "staging", "limit": 100})
        assert len(body(staging, 200)) == 100
        assert links(staging.headers.get("link")).keys() == {"next"}
        last = client.get(links(staging.headers["link"])["next"])
        assert len(body(last, 200)) == 50 and links(last.headers["link"]).keys() == {"previous"}
        default = client.get("/deploys/")
        assert len(body(default, 200)) == 25


def test_filters_and_the_queue_in_order(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin)
        app_id, name = app.id, app.name
    add_deploys(server.engine, app_id, "staging", 3)
    add_deploys(server.engine, app_id, "staging", 4, status="pending")
    add_deploys(server.engine, app_id, "production", 2, status="failed")
    with server.client("s3cr3t-api-key") as client:
        queue = body(
            client.get("/deploys/", params={"status": "pending", "app": name, "env": "staging"}),
            200,
        )
        # The queue in the order it will run: head first.
        assert [d["number"] for d in queue] == [4, 5, 6, 7]
        both = body(
            client.get(
                "/deploys/", params=[("app", name), ("status", "failed"), ("status", "finished")]
            ),
            200,
        )
        assert [d["name"] for d in both] == [
            f"{name}/production#2",
            f"{name}/production#1",
            f"{name}/staging#3",
            f"{name}/staging#2",
            f"{name}/staging#1",
        ]
        assert body(client.get("/deploys/", params={"app": "ghost"}), 200) == []
        assert body(client.get("/deploys/", params={"user": "nobody"}), 200) == []
