"""Keys: none or unknown is 401, a read key cannot deploy, an app-limited key sees its apps only,
a revoked key stops working; `Key` and `Bearer` both carry a key."""

from __future__ import annotations

import httpx

from freight.db import session_scope
from tests.apiserver import ApiServer
from tests.contract.helpers import body, error
from tests.factories import GitRepo, make_app

NF = "invalid_resource"


def test_keys_scopes_app_limits_and_revocation(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        web = make_app(session, origin, name="web").name
        api = make_app(session, origin, name="api").name
    deploy = {"app": web, "env": "staging", "user": "ana"}

    assert error(httpx.get(f"{server.api}/apps/"), 401, "unauthorized")
    with server.client("wrong") as wrong:
        assert error(wrong.get("/apps/"), 401, "unauthorized") == "You are not authorized."
    with server.client(None, Authorization="Basic YTpi") as basic:
        assert error(basic.get("/apps/"), 401, "unauthorized")
    assert body(httpx.get(f"{server.url}/health"), 200)["database"] == {"ok": True}

    with server.client(server.key("read")) as reader:
        assert len(body(reader.get("/apps/"), 200)) == 2
        assert "'deploy' scope" in error(reader.post("/deploys/", json=deploy), 403, "forbidden")

    with server.client(server.key("deploy", apps=[web])) as limited:
        assert [a["name"] for a in body(limited.get("/apps/"), 200)] == [web]
        created = body(limited.post("/deploys/", json=deploy), 201)
        # Another app answers as one that does not exist (tests/contract/test_scopes.py).
        unknown = f"App '{api}' not found"
        assert error(limited.post("/deploys/", json={**deploy, "app": api}), 404, NF) == unknown
        assert error(limited.get(f"/apps/{api}/"), 404, NF) == unknown
        assert body(limited.get(f"/deploys/?app={api}"), 200) == []
        assert [d["id"] for d in body(limited.get("/deploys/"), 200)] == [created["id"]]
        assert error(
            limited.post("/keys/", json={"name": "x", "scopes": "admin"}), 403, "forbidden"
        )

    with server.client("s3cr3t-api-key") as admin:
        made = body(admin.post("/keys/", json={"name": "ci", "scopes": ["deploy"]}), 201)
        assert made["key"].startswith("frt_") and made["scopes"] == ["deploy"]
        assert made["key"] not in str(body(admin.get("/keys/"), 200))
        with server.client(None, Authorization=f"Bearer {made['key']}") as bearer:
            assert body(bearer.post("/deploys/", json=deploy), 201)["user"]["name"] == "ana"
            revoked = body(admin.delete(f"/keys/{made['id']}/"), 200)
            assert revoked["revokedBy"] == "api-key" and revoked["dateRevoked"]
            assert error(bearer.get("/apps/"), 401, "unauthorized")
        assert made["id"] not in [k["id"] for k in body(admin.get("/keys/"), 200)]
        assert error(
            admin.post("/keys/", json={"name": "x", "scopes": "root"}), 400, "invalid_request"
        )
