"""Bad bytes and bad shapes in requests: a NUL character anywhere (PostgreSQL cannot store one
in text) and JSON nested past any config's need answer 400 naming the field, never 500, on
both databases; the server goes on serving."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote, unquote_plus

import httpx
import pytest

from freight.db import session_scope
from freight.service import hooks
from tests.apiserver import ApiServer
from tests.contract.helpers import body, error
from tests.factories import GitRepo, make_app

KEY = "s3cr3t-api-key"
NUL = "\x00"


@pytest.fixture
def app(server: ApiServer, origin: GitRepo) -> str:
    origin.commit("initial")
    with session_scope(server.engine) as session:
        return make_app(session, origin, name="web").name


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_nul_anywhere_in_a_request_is_a_400_naming_where(server: ApiServer, app: str) -> None:
    deploy = {"app": app, "env": "staging", "user": "ana"}
    with server.client(KEY) as client:
        made = body(client.post("/deploys/", json=deploy), 201)
        for response, field in [
            (client.post("/deploys/", json={**deploy, "user": f"a{NUL}b"}), "user"),
            (client.post("/deploys/", json={**deploy, "ref": f"main{NUL}"}), "ref"),
            (client.post("/deploys/", json={**deploy, "params": {"k": NUL}}), "params"),
            (client.post("/deploys/", json={**deploy, f"us{NUL}er": "x"}), repr(f"us{NUL}er")),
            (client.get("/deploys/?user=a%00"), "user"),
            (client.get("/deploys/?env=x&app=%00"), "app"),
            (client.get(f"/locks/?app={app}&env=st%00"), "env"),
            (client.post("/locks/", json={"app": app, "reason": f"why{NUL}"}), "reason"),
            (client.post("/keys/", json={"name": f"ci{NUL}", "scopes": ["read"]}), "name"),
            (client.post("/apps/", json={"name": f"new{NUL}", "repository": "x"}), "name"),
            (client.put(f"/apps/{app}/", json={"lockedReason": NUL}), "lockedReason"),
            (client.put(f"/deploys/{made['id']}/", json={"user": NUL}), "user"),
            (client.get("/apps/a%00b/"), "path"),
            (client.get(f"/deploys/{app}/st%00/1/"), "path"),
        ]:
            message = error(response, 400, "invalid_request")
            assert message.startswith(f"{field}: "), (field, message)
            assert "NUL" in message, message
        # The dashboard's forms too.
        login = httpx.post(f"{server.url}/login", data={"key": KEY, "name": f"ana{NUL}"})
        assert error(login, 400, "invalid_request").startswith("name: ")
        assert body(client.get("/deploys/"), 200)[0]["id"] == made["id"]


def test_json_nested_too_deep_is_a_400_naming_the_field(server: ApiServer, app: str) -> None:
    deploy = {"app": app, "env": "staging", "user": "ana"}
    raw = {"Content-Type": "application/json"}
    with server.client(KEY) as client:
        for response, field in [
            # Deeper than the parser recurses: the body as a whole.
            (client.post("/deploys/", content=f'{{"params": {_deep(100_000)}}}', headers=raw), ""),
            (client.post("/deploys/", json={**deploy, "params": json.loads(_deep(40))}), "params"),
            (client.post("/deploys/", json={**deploy, "params": _deep(100_000)}), "params"),
            (
                client.post(
                    "/apps/",
                    json={"name": "new", "repository": "x", "provider_config": _deep(50)},
                ),
                "provider_config",
            ),
            (client.put(f"/apps/{app}/", json={"checks": _deep(100_000)}), "checks"),
        ]:
            message = error(response, 400, "invalid_request")
            assert "nested" in message and message.startswith(field), (field, message)
    with session_scope(server.engine) as session:
        signing = hooks.signing_key(session, KEY)
    digest = hooks.digest(signing, hook="github", action="deploy", app=app, environment="staging")
    hook = httpx.post(
        f"{server.url}/webhooks/github/deploy/{app}/staging/{digest}/",
        content=f'{{"ref": {_deep(100_000)}}}',
    )
    assert "nested" in error(hook, 400, "invalid_request")


def test_the_dashboards_confirmation_streams_and_deploy_form_refuse_bad_and_hostile_input(
    server: ApiServer, app: str, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        browser.post("/login", data={"key": KEY, "name": "ana"})
        token = re.search(r'name="csrf" value="([^"]+)"', browser.get("/").text)
        assert token
        csrf = token.group(1)

        def refused(response: httpx.Response) -> str:
            """A form or page that sends the browser back with the error, never a 500."""
            assert response.status_code == 303, response.text
            location = response.headers["location"]
            assert "error=" in location, location
            return unquote_plus(location.split("error=", 1)[1])

        confirm = "/confirm?app=web&env=staging&ref="
        nul = browser.get(confirm + "main%00")
        assert error(nul, 400, "invalid_request").startswith("ref: ")
        hostile = f"--upload-pack=touch {pwned}"
        assert "Unknown ref" in refused(browser.get(confirm + quote(hostile)))
        assert "Unknown ref" in refused(browser.get(confirm + quote(f"$(touch {pwned})")))
        assert "Unknown environment" in refused(browser.get("/confirm?app=web&env=nope"))
        form = {"csrf": csrf, "app": app, "env": "staging", "ref": "main"}
        for sha in ("zzz", f"$(touch {pwned})", "0" * 40):
            message = refused(browser.post("/actions/deploy", data={**form, "sha": sha}))
            assert message.startswith("sha: main is "), message
        typed = browser.post("/actions/deploy", data={**form, "typed": f"staging{NUL}"})
        assert error(typed, 400, "invalid_request").startswith("typed: ")
        # The deploy streams: ids and offsets that are not, resume ids that are junk.
        assert browser.get("/events/deploys/abc").status_code == 400
        assert browser.get("/events/deploys/1?offset=-5").status_code == 400
        assert browser.get("/events/deploys/99999").status_code == 404
        with browser.stream(
            "GET", "/events?since=%ff%fe", headers={"Last-Event-ID": "x" * 500}
        ) as stream:
            assert stream.status_code == 200
            assert next(stream.iter_text()).startswith("retry: ")
    assert not pwned.exists()
    with server.client(KEY) as client:
        assert body(client.get("/deploys/"), 200) == []
