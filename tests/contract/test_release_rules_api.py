"""Deploy windows and freezes as API clients meet them, on a fake clock: a deploy refused
outside its window (`outside_window`, naming the next opening) and forced inside it with a
reason, the window's state in /releases/, freezes made, listed, holding everyone and lifted,
and bad input answered 400 naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from freight.db import session_scope
from freight.service import deploys
from tests.apiserver import ApiServer
from tests.conftest import Clock
from tests.contract.helpers import body, error, finish
from tests.factories import GitRepo, make_app

KEY = "s3cr3t-api-key"
WORKWEEK = [
    {"allow": "0 9 * * 1-4", "duration": "8h", "timezone": "Europe/Berlin"},
    {"deny": "0 16 * * 5", "duration": "64h", "timezone": "Europe/Berlin"},
]
SUNDAY = datetime(2026, 12, 6, 12, tzinfo=UTC)
MONDAY_MORNING = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_a_deploy_outside_its_window_is_refused_naming_the_next_opening(
    server: ApiServer, origin: GitRepo, clock: Clock
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin, windows=WORKWEEK).name
    deploy = {"app": app, "env": "staging", "user": "bob"}
    clock.set(SUNDAY)
    with server.client(KEY) as c:
        assert error(c.post("/deploys/", json=deploy), 400, "outside_window") == (
            f"{app}/staging is outside its deploy windows; the next opens Mon 09:00 Europe/Berlin"
        )
        assert "forcing past it needs a reason" in error(
            c.post("/deploys/", json={**deploy, "force": True}), 400, "missing_argument"
        )
        forced = body(
            c.post("/deploys/", json={**deploy, "force": True, "reason": "CVE-2026-1234"}), 201
        )
        text = body(c.get(f"/deploys/{forced['id']}/log/"), 200)["chunks"][0]["text"]
        assert text.startswith(f">> Forced by bob past: {app}/staging is outside its deploy")
        assert text.endswith("Reason: CVE-2026-1234\n")
        state = body(c.get("/releases/", params={"app": app}), 200)[0]
        assert state["window"] == {
            "open": False,
            "dateChanges": "2026-12-07T08:00:00.000000Z",
            "text": "closed, opens Mon 09:00 Europe/Berlin",
        }
        clock.set(MONDAY_MORNING)
        assert body(c.post("/deploys/", json=deploy), 201)
        state = body(c.get("/releases/", params={"app": app}), 200)[0]
        assert state["window"]["text"] == "open until Mon 17:00 Europe/Berlin"


def test_freezes_hold_everyone_from_their_start_to_their_end(
    server: ApiServer, origin: GitRepo, clock: Clock
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    clock.set(SUNDAY)
    start, end = SUNDAY + timedelta(hours=1), SUNDAY + timedelta(days=1)
    freeze = {"app": app, "env": "production", "reason": "year-end", "owner": "ana"}
    with server.client(KEY) as c:
        made = body(
            c.post("/freezes/", json={**freeze, "from": stamp(start), "until": stamp(end)}), 201
        )
        assert (made["freeze"], made["active"], made["owner"]) == (True, False, "ana")
        assert made["dateStarts"] == "2026-12-06T13:00:00.000000Z"
        # Listed before it begins, as a lock in store.
        assert [lock["id"] for lock in body(c.get("/locks/", params={"app": app}), 200)] == [
            made["id"]
        ]
        production = {"app": app, "env": "production", "user": "ana"}
        assert body(c.post("/deploys/", json=production), 201)  # not yet
        clock.set(start)
        assert error(c.post("/deploys/", json=production), 400, "frozen") == (
            f"{app}/production is frozen until 2026-12-07 12:00 UTC by ana: year-end"
        )
        assert body(c.post("/deploys/", json={**production, "env": "staging"}), 201)
        assert body(
            c.post("/deploys/", json={**production, "force": True, "reason": "outage fix"}), 201
        )
        state = {r["environment"]: r for r in body(c.get("/releases/", params={"app": app}), 200)}
        assert [lock["freeze"] for lock in state["production"]["locks"]] == [True]
        assert state["staging"]["locks"] == []
        lifted = body(c.delete(f"/locks/{made['id']}/", params={"user": "bob"}), 200)
        assert (lifted["active"], lifted["releasedBy"]) == (False, "bob")
        assert body(c.post("/deploys/", json=production), 201)


def test_bad_freezes_and_windows_are_400s_naming_the_field(
    server: ApiServer, origin: GitRepo
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(session, origin).name
    soon = stamp(datetime.now(UTC) + timedelta(hours=1))
    later = stamp(datetime.now(UTC) + timedelta(hours=2))
    freeze = {"app": app, "reason": "year-end"}
    with server.client(KEY) as c:
        assert error(c.post("/freezes/", json=freeze), 400, "missing_argument") == "until: required"
        assert error(
            c.post("/freezes/", json={**freeze, "until": "2026-12-24T18:00:00"}),
            400,
            "invalid_request",
        ).startswith("until: give a time zone")
        assert error(
            c.post("/freezes/", json={**freeze, "until": "christmas"}), 400, "invalid_request"
        ).startswith("until")
        assert (
            error(
                c.post("/freezes/", json={**freeze, "from": later, "until": soon}),
                400,
                "invalid_request",
            )
            == "from: a freeze must start before it ends"
        )
        assert (
            error(
                c.post("/freezes/", json={**freeze, "until": "2020-01-01T00:00:00Z"}),
                400,
                "invalid_request",
            )
            == "until: a freeze must end in the future"
        )
        nul = error(
            c.post("/freezes/", json={**freeze, "reason": "year\x00end", "until": soon}),
            400,
            "invalid_request",
        )
        assert nul.startswith("reason: ") and "NUL" in nul
        assert error(
            c.post("/freezes/", json={**freeze, "env": "moon", "until": soon}),
            400,
            "invalid_environment",
        )
        bad_window = {
            "name": "windowed",
            "repository": origin.url,
            "provider": "shell",
            "provider_config": {"command": "true"},
            "environments": {
                "production": {"windows": [{"deny": "0 16 * * 5", "duration": "64 hours"}]}
            },
        }
        problem = error(c.post("/apps/", json=bad_window), 400, "invalid_environment")
        assert problem.startswith("environments.production.windows.0.duration: ")
        assert "Invalid duration '64 hours'" in problem


def test_a_deploy_of_what_did_not_bake_on_staging_is_refused_as_not_promoted(
    server: ApiServer, origin: GitRepo, clock: Clock
) -> None:
    with session_scope(server.engine) as session:
        app = make_app(
            session,
            origin,
            command="true",
            environments={"staging": {}, "production": {"requires": {"staging": "30m"}}},
        ).name
    sha = origin.git("rev-parse", "HEAD")
    with server.client(KEY) as c:
        staged = body(c.post("/deploys/", json={"app": app, "env": "staging", "user": "ana"}), 201)
        finish(server.engine, int(staged["id"]), sha=sha)
        with session_scope(server.engine) as session:
            finished = deploys.get_deploy(session, int(staged["id"])).date_finished
        assert finished is not None
        promote = {"app": app, "env": "production", "ref": sha, "user": "ana"}
        clock.set(finished + timedelta(minutes=10))
        met = f"{finished + timedelta(minutes=30):%Y-%m-%d %H:%M}"
        assert error(c.post("/deploys/", json=promote), 400, "not_promoted") == (
            f"{app}/production takes only what was live on staging for 30m: {sha[:7]} has been "
            f"for 10m, met at {met} UTC"
        )
        clock.set(finished + timedelta(minutes=30))
        assert body(c.post("/deploys/", json=promote), 201)["sha"] == sha
