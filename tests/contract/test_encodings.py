"""Arguments as Freight took them: a JSON body, a form body or the query string; structured
fields as JSON values or JSON-encoded strings; booleans as JSON or `true/false/1/0`; paths with
or without their trailing slash; `Key` or `Bearer`."""

from __future__ import annotations

import json

from freight.db import session_scope
from tests.apiserver import ApiServer
from tests.contract.helpers import body
from tests.factories import GitRepo, make_app


def test_the_same_deploy_asked_for_in_every_encoding(server: ApiServer, origin: GitRepo) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin, command="echo {params[color]}").name
    params = {"color": "blue"}
    with server.client("s3cr3t-api-key") as c:
        as_json = body(
            c.post("/deploys/", json={"app": app, "user": "a", "params": params, "force": True}),
            201,
        )
        as_json_string = body(
            c.post(
                "/deploys/",
                json={"app": app, "user": "a", "params": json.dumps(params), "force": "true"},
            ),
            201,
        )
        as_form = body(
            c.post(
                "/deploys/",
                data={"app": app, "user": "a", "params": json.dumps(params), "force": "1"},
            ),
            201,
        )
        as_query = body(c.post("/deploys", params={"app": app, "user": "a", "env": "staging"}), 201)
        assert [d["number"] for d in (as_json, as_json_string, as_form)] == [1, 2, 3]
        assert as_query["name"] == f"{app}/staging#1"
        cancelled = body(c.put(f"/deploys/{as_form['id']}", data={"status": "cancelled"}), 200)
        assert cancelled["status"] == "cancelled"
    with server.client(None, Authorization="Bearer s3cr3t-api-key") as bearer:
        assert len(body(bearer.get(f"/deploys?app={app}"), 200)) == 4
        assert body(bearer.get(f"/tasks/{app}/staging/1"), 200)["name"] == f"{app}/staging#1"


def test_apps_take_config_as_values_or_json_strings(server: ApiServer, origin: GitRepo) -> None:
    environments = {"staging": {"defaultRef": "develop"}, "production": {"defaultRef": "main"}}
    with server.client("s3cr3t-api-key") as c:
        body(
            c.post(
                "/apps/",
                data={
                    "name": "formed",
                    "repository": origin.url,
                    "provider": "shell",
                    "provider_config": json.dumps({"command": "true"}),
                    "environments": json.dumps(environments),
                },
            ),
            201,
        )
        body(
            c.post(
                "/apps/",
                json={
                    "name": "plain",
                    "repository": origin.url,
                    "provider": "shell",
                    "providerConfig": {"command": "true", "timeout": 60},
                    "environments": environments,
                },
            ),
            201,
        )
        formed, plain = (body(c.get(f"/apps/{n}/"), 200) for n in ("formed", "plain"))
        assert formed["environments"] == plain["environments"]
        assert formed["environments"]["staging"] == {"defaultRef": "develop"}
        assert plain["provider_config"]["timeout"] == 60
        edited = body(
            c.put("/apps/plain/", data={"providerConfig": json.dumps({"command": "false"})}), 200
        )
        assert edited["provider_config"]["command"] == "false"
