"""Every route with every kind of key: no key and unknown keys are refused (401), a key without
the scope a route needs is refused (403), and a key limited to some apps meets another app's
things exactly as it meets things that do not exist, and sees nothing of them in lists.

The table must name every route the server has: a new route fails here until it is added."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select, update

from freight.api.routing import PREFIX
from freight.dashboard import actions, events, pages
from freight.db import ApiKey, App, Deploy, DeployStatus, Lock, session_scope, utcnow
from freight.service import apps, hooks, keys, locks, machines, pulls, workers
from freight.service.keys import Scope
from freight.service.machines import AppReport, CheckIn
from freight.service.workers import WorkerState
from tests.apiserver import ApiServer
from tests.contract.helpers import finish
from tests.factories import GitRepo, make_app

POSTGRES = pytest.mark.postgres
MINE, THEIRS, GHOST = "web", "vault", "ghost"  # in a limited key's reach, out of it, unknown
GHOST_ID = 987654
SHARED_KEY = "s3cr3t-api-key"


@dataclass(frozen=True)
class Target:
    """What a route's path names, for one app."""

    app: str
    deploy_id: int = GHOST_ID
    number: int = 1
    lock_id: int = GHOST_ID + 1
    key_id: int = GHOST_ID + 2
    digest: str = "0" * 64
    repository: str = ""

    @property
    def machine(self) -> str:
        """The machine whose agent reports this app (none does for the ghost)."""
        return f"host-{self.app}"

    def fill(self, template: str) -> str:
        return template.format(
            app=self.app,
            machine=self.machine,
            spare=f"{self.app}-spare",
            env="staging",
            deploy_id=self.deploy_id,
            number=self.number,
            lock_id=self.lock_id,
            key_id=self.key_id,
            hook="github",
            action="deploy",
            digest=self.digest,
        )

    def anonymous(self, text: str) -> str:
        """The text with this target's names and ids replaced by what they stand for."""
        text = text.replace(self.app, "<app>")  # its names are found nowhere else
        for value, label in (
            (str(self.deploy_id), "<deploy>"),
            (str(self.lock_id), "<lock>"),
        ):
            text = re.sub(rf"\b{re.escape(value)}\b", label, text)
        return text


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: Scope | None  # None: no key needed
    ok: int = 200
    # The route acts on one app's things: a limited key must meet another app's as unknown.
    on_app: bool = False
    # Managing keys needs an admin key for all apps.
    unlimited: bool = False
    body: Callable[[Target], dict[str, Any]] | None = None
    query: Callable[[Target], dict[str, str]] | None = None
    dashboard: bool = False
    # Makes the app it names: for a key of all apps, an unknown name is no refusal.
    creates: bool = False
    # Answers 200 with what it refused in the body's `refused` (an agent's check-in).
    refuses_in_body: bool = False
    # An event stream: it never ends, so only its start is read.
    stream: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def _deploy(t: Target) -> dict[str, Any]:
    return {"app": t.app, "env": "staging", "user": "ana"}


def _app_query(t: Target) -> dict[str, str]:
    return {"app": t.app}


def _check_in(t: Target) -> dict[str, Any]:
    return {
        "name": t.machine,
        "apps": [{"app": t.app, "env": "staging", "version": "0" * 40, "deploy": True}],
    }


DEPLOY_ROUTES = [
    Route("GET", "{base}/", Scope.READ),
    Route("POST", "{base}/", Scope.DEPLOY, 201, on_app=True, body=_deploy),
    Route("GET", "{base}/{deploy_id}/", Scope.READ, on_app=True),
    Route("PUT", "{base}/{deploy_id}/", Scope.DEPLOY, on_app=True, body=lambda t: {}),
    Route("GET", "{base}/{deploy_id}/log/", Scope.READ, on_app=True),
    Route("GET", "{base}/{app}/{env}/{number}/", Scope.READ, on_app=True),
    Route(
        "PUT",
        "{base}/{app}/{env}/{number}/",
        Scope.DEPLOY,
        on_app=True,
        body=lambda t: {"status": "cancelled"},
    ),
    Route("GET", "{base}/{app}/{env}/{number}/log/", Scope.READ, on_app=True),
]

ROUTES = [
    Route("GET", f"{PREFIX}/apps/", Scope.READ),
    Route(
        "POST",
        f"{PREFIX}/apps/",
        Scope.ADMIN,
        201,
        on_app=True,
        body=lambda t: {
            "name": f"{t.app}-new",
            "repository": t.repository,
            "provider": "shell",
            "provider_config": {"command": "true"},
        },
        creates=True,
    ),
    Route("GET", f"{PREFIX}/apps/{{app}}/", Scope.READ, on_app=True),
    Route("PUT", f"{PREFIX}/apps/{{app}}/", Scope.ADMIN, on_app=True, body=lambda t: {}),
    # An app with no deploy running, as only such an app can be deleted.
    Route("DELETE", f"{PREFIX}/apps/{{spare}}/", Scope.ADMIN, on_app=True),
    *(
        replace(r, path=r.path.replace("{base}", PREFIX + base))
        for base in ("/deploys", "/tasks")
        for r in DEPLOY_ROUTES
    ),
    Route("GET", f"{PREFIX}/locks/", Scope.READ),
    Route("GET", f"{PREFIX}/locks/", Scope.READ, on_app=True, query=_app_query),
    Route(
        "POST",
        f"{PREFIX}/locks/",
        Scope.DEPLOY,
        201,
        on_app=True,
        body=lambda t: {"app": t.app, "env": "staging", "reason": "scope test"},
    ),
    Route(
        "POST",
        f"{PREFIX}/freezes/",
        Scope.DEPLOY,
        201,
        on_app=True,
        body=lambda t: {
            "app": t.app,
            "env": "staging",
            "reason": "scope test",
            # Tomorrow: it holds none of the deploys the other routes ask for.
            "from": (utcnow() + timedelta(days=1)).isoformat(),
            "until": (utcnow() + timedelta(days=2)).isoformat(),
        },
    ),
    Route("DELETE", f"{PREFIX}/locks/{{lock_id}}/", Scope.DEPLOY, on_app=True),
    Route("GET", f"{PREFIX}/releases/", Scope.READ),
    Route("GET", f"{PREFIX}/releases/", Scope.READ, on_app=True, query=_app_query),
    Route(
        "GET",
        f"{PREFIX}/releases/commits/",
        Scope.READ,
        on_app=True,
        query=lambda t: {"app": t.app, "env": "staging"},
    ),
    Route("GET", f"{PREFIX}/keys/", Scope.ADMIN, unlimited=True),
    Route(
        "POST",
        f"{PREFIX}/keys/",
        Scope.ADMIN,
        201,
        unlimited=True,
        body=lambda t: {"name": "made", "scopes": ["read"]},
    ),
    Route("DELETE", f"{PREFIX}/keys/{{key_id}}/", Scope.ADMIN, unlimited=True),
    Route("GET", f"{PREFIX}/deploy-stats/", Scope.READ),
    Route("GET", f"{PREFIX}/deploy-stats/", Scope.READ, on_app=True, query=_app_query),
    Route("GET", f"{PREFIX}/config/", Scope.READ),
    # The deploys each worker runs now: of the apps the key may see only.
    Route("GET", f"{PREFIX}/workers/", Scope.READ),
    # Machines and what they run: of the apps the key may see only.
    Route("GET", f"{PREFIX}/machines/", Scope.READ),
    Route("GET", f"{PREFIX}/machines/", Scope.READ, on_app=True, query=_app_query),
    Route("GET", f"{PREFIX}/machines/{{machine}}/", Scope.READ, on_app=True),
    # An agent's: a check-in, and the output of a run of a pull deploy.
    Route(
        "POST",
        f"{PREFIX}/machines/checkin/",
        Scope.AGENT,
        on_app=True,
        body=_check_in,
        refuses_in_body=True,
    ),
    Route(
        "POST",
        f"{PREFIX}/machines/{{machine}}/runs/{{deploy_id}}/",
        Scope.AGENT,
        on_app=True,
        body=lambda t: {"lines": ["scope test"]},
    ),
    Route("GET", f"{PREFIX}/hooks/{{hook}}/{{action}}/{{app}}/{{env}}/", Scope.ADMIN, on_app=True),
    # A signed hook needs no key: the URL is the credential.
    Route(
        "POST",
        "/webhooks/{hook}/{action}/{app}/{env}/{digest}/",
        None,
        body=lambda t: {"ref": "refs/heads/elsewhere"},
    ),
    Route("GET", "/health", None),
    # The dashboard, with the session a login with the key gives.
    Route("GET", "/", Scope.READ, dashboard=True),
    Route("GET", "/partials/overview", Scope.READ, dashboard=True),
    Route("GET", "/events", Scope.READ, dashboard=True, stream=True),
    Route(
        "GET", "/events/deploys/{deploy_id}", Scope.READ, on_app=True, dashboard=True, stream=True
    ),
    # What a deploy would do, before it is asked: only for who may deploy.
    Route(
        "GET",
        "/confirm",
        Scope.DEPLOY,
        on_app=True,
        dashboard=True,
        query=lambda t: {"app": t.app, "env": "staging"},
    ),
    Route("GET", "/apps/{app}", Scope.READ, on_app=True, dashboard=True),
    Route("GET", "/deploys/{app}/{env}/{number}", Scope.READ, on_app=True, dashboard=True),
    Route("GET", "/deploys/{app}/{env}/{number}/", Scope.READ, on_app=True, dashboard=True),
    Route(
        "POST",
        "/actions/deploy",
        Scope.DEPLOY,
        303,
        on_app=True,
        dashboard=True,
        body=lambda t: {"app": t.app, "env": "staging"},
    ),
    Route(
        "POST",
        "/actions/cancel",
        Scope.DEPLOY,
        303,
        on_app=True,
        dashboard=True,
        body=lambda t: {"deploy_id": str(t.deploy_id)},
    ),
    Route(
        "POST",
        "/actions/front",
        Scope.DEPLOY,
        303,
        on_app=True,
        dashboard=True,
        body=lambda t: {"deploy_id": str(t.deploy_id)},
    ),
    Route(
        "POST",
        "/actions/lock",
        Scope.DEPLOY,
        303,
        on_app=True,
        dashboard=True,
        body=lambda t: {"app": t.app, "env": "staging", "reason": "scope test"},
    ),
    Route(
        "POST",
        "/actions/freeze",
        Scope.DEPLOY,
        303,
        on_app=True,
        dashboard=True,
        body=lambda t: {
            "app": t.app,
            "env": "staging",
            "reason": "scope test",
            "start": (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
            "until": (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
        },
    ),
    Route(
        "POST",
        "/actions/unlock",
        Scope.DEPLOY,
        303,
        on_app=True,
        dashboard=True,
        body=lambda t: {"lock_id": str(t.lock_id)},
    ),
]
# Pages anyone may open, and the routes of logging in and out (their own tests cover them).
OPEN_PAGES = {"GET /login", "POST /login", "POST /logout"}


@dataclass(frozen=True)
class Kind:
    name: str
    scope: Scope | None  # None: no key, or one the server does not know
    apps: list[str] | None = None
    shared: bool = False

    @property
    def limited(self) -> bool:
        return self.apps is not None


KINDS = [
    Kind("no key", None),
    Kind("unknown key", None),
    Kind("read", Scope.READ),
    Kind("deploy", Scope.DEPLOY),
    Kind("admin", Scope.ADMIN),
    Kind("agent", Scope.AGENT),
    Kind("shared key", Scope.ADMIN, shared=True),
    *(Kind(f"{scope} of {MINE}", scope, [MINE, f"{MINE}-new", f"{MINE}-spare"]) for scope in Scope),
]


def test_the_table_names_every_route(server: ApiServer) -> None:
    served = {
        f"{method} {path}"
        for path, methods in server_app(server).openapi()["paths"].items()
        for method in (m.upper() for m in methods)
    } | {
        f"{method} {route.path}"
        for router in (pages.router, actions.router, events.router)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    tasks = {f"{r.method} {r.path.replace('{base}', PREFIX + '/tasks')}" for r in DEPLOY_ROUTES}
    tabled = {r.name.replace("{spare}", "{app}").replace("{machine}", "{name}") for r in ROUTES}
    assert served | tasks == tabled | OPEN_PAGES


def server_app(server: ApiServer) -> Any:
    from freight.api import create_app

    return create_app(server.settings)


class World:
    """Two apps with a deploy waiting, a lock, and a key to revoke; put back after each call."""

    def __init__(self, server: ApiServer, origin: GitRepo) -> None:
        self.server = server
        self.origin = origin
        self._targets: dict[str, Target] | None = None
        self.client = server.client(SHARED_KEY)

    def request(self, app: str) -> int:
        """A deploy asked for through the API, as clients ask."""
        made = self.client.post("/deploys/", json={"app": app, "env": "staging", "user": "bo"})
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    def current(self) -> dict[str, Target]:
        """The targets, put back first if the last call may have changed them."""
        if self._targets is None:
            self._targets = self.targets()
        return self._targets

    def after(self, route: Route, response: httpx.Response) -> None:
        if route.method != "GET" and not _refused(response):
            self._targets = None

    def targets(self) -> dict[str, Target]:
        engine = self.server.engine
        with session_scope(engine) as db:
            for app in db.scalars(select(App).where(App.name.like("%-new"))):
                apps.delete_app(db, app)
            for name in (MINE, THEIRS, f"{MINE}-spare", f"{THEIRS}-spare"):
                if apps.find_app(db, name) is None:
                    make_app(db, self.origin, name=name)
            for lock in locks.list_locks(db):
                if lock.environment == "staging":
                    locks.release_lock(db, lock, by="test")
            key_id = (
                db.scalar(
                    select(ApiKey.id).where(
                        ApiKey.name == "throwaway", ApiKey.date_revoked.is_(None)
                    )
                )
                or keys.create_key(db, name="throwaway", scopes=["read"])[0].id
            )
            signing = hooks.signing_key(db, SHARED_KEY)
        found = {}
        for name in (MINE, THEIRS):
            with session_scope(engine) as db:
                app = apps.get_app(db, name)
                lock = db.scalar(
                    select(Lock).where(Lock.app_id == app.id, Lock.date_released.is_(None))
                ) or locks.create_lock(
                    db, app=name, environment="production", reason="held", owner="bo"
                )
                lock_id, app_id = lock.id, app.id
                unfinished = db.scalars(
                    select(Deploy.id).where(
                        Deploy.app_id == app.id,
                        Deploy.status.in_([DeployStatus.PENDING, DeployStatus.IN_PROGRESS]),
                    )
                ).all()
            if name == THEIRS and not unfinished:  # deploys to count that a limited key may not
                finish(engine, self.request(name))
            # One in progress and one queued behind it, which the routes act on.
            for _ in range(2 - len(unfinished)):
                self.request(name)
            with session_scope(engine) as db:
                deploy_id = db.scalars(
                    select(Deploy.id)
                    .where(Deploy.app_id == app_id, Deploy.status == DeployStatus.PENDING)
                    .order_by(Deploy.id.desc())
                ).first()
                assert deploy_id is not None
            with session_scope(engine) as db:
                deploy = db.get_one(Deploy, deploy_id)
                number = deploy.number
                # A machine reports the app; the deploy pulls (its order is published).
                machines.check_in(
                    db,
                    CheckIn(
                        name=f"host-{name}",
                        labels={},
                        agent_version="0",
                        interval=15,
                        apps=[AppReport(name, "staging", "0" * 40, None, True)],
                    ),
                    allowed=None,
                    now=utcnow(),
                )
                pulls.publish(db, deploy, min_ready=None, now=utcnow())
                # Its deploy in progress runs on a worker host (GET /workers/ names it).
                db.execute(
                    update(Deploy)
                    .where(Deploy.app_id == app_id, Deploy.status == DeployStatus.IN_PROGRESS)
                    .values(runner_host="worker-1")
                )
                workers.report(
                    db,
                    "worker-1",
                    limit=2,
                    queues=["deploys"],
                    pid=1,
                    state=WorkerState.RUNNING,
                    started=utcnow(),
                )
            found[name] = Target(
                name,
                deploy_id=deploy_id,
                number=number,
                lock_id=lock_id,
                key_id=key_id,
                digest=hooks.digest(
                    signing, hook="github", action="deploy", app=name, environment="staging"
                ),
                repository=self.origin.url,
            )
        # The same number as theirs: only what a key may not see may differ from a ghost's.
        found[GHOST] = Target(
            GHOST, number=found[THEIRS].number, key_id=key_id, repository=self.origin.url
        )
        return found


class Caller:
    """A kind of key, at the API with its key and at the dashboard with the session it got."""

    def __init__(self, server: ApiServer, kind: Kind) -> None:
        self.kind = kind
        if kind.shared:
            self.key: str | None = SHARED_KEY
        elif kind.scope is None:
            self.key = None if kind.name == "no key" else "frt_not-a-key-of-ours"
        else:
            self.key = server.key(kind.scope, apps=kind.apps, name=kind.name)
        headers = {"Authorization": f"Key {self.key}"} if self.key else {}
        # One client each, kept open: making a client costs more than a call here.
        self.api = httpx.Client(base_url=server.url, headers=headers, timeout=30)
        self.browser = httpx.Client(base_url=server.url, timeout=30)
        self.csrf = ""
        if self.key is not None:
            self.browser.post("/login", data={"key": self.key, "name": "ana"})
            token = re.search(r'name="csrf" value="([^"]+)"', self.browser.get("/").text)
            self.csrf = token.group(1) if token else ""

    def call(self, route: Route, target: Target) -> httpx.Response:
        path = target.fill(route.path)
        params = route.query(target) if route.query else None
        if route.dashboard:
            data = {**(route.body(target) if route.body else {}), "csrf": self.csrf}
            if route.method == "POST":
                return self.browser.post(path, params=params, data=data)
            if route.stream:
                return _start_of(self.browser, path)
            return self.browser.request(route.method, path, params=params)
        body = route.body(target) if route.body else None
        return self.api.request(route.method, path, params=params, json=body)

    def close(self) -> None:
        self.api.close()
        self.browser.close()


def _start_of(client: httpx.Client, path: str) -> httpx.Response:
    """An event stream's answer with its first event only (the rest never ends); any other
    answer whole."""
    with client.stream("GET", path) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            first = next(response.iter_text())
            return httpx.Response(response.status_code, headers=response.headers, text=first)
        response.read()
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


# read < deploy < admin; an agent's key has none of them, and an admin may do what it does.
RANK = {Scope.READ: 0, Scope.DEPLOY: 1, Scope.ADMIN: 2}


def _allowed(have: Scope, need: Scope) -> bool:
    if need == Scope.AGENT:
        return have in (Scope.AGENT, Scope.ADMIN)
    return have in RANK and RANK[have] >= RANK[need]


def _status(route: Route, kind: Kind) -> int:
    """The status this kind of key gets from the route on its own app's things."""
    if route.scope is None:
        return route.ok
    if kind.scope is None:
        return 303 if route.dashboard else 401  # the dashboard sends it to the login
    if route.dashboard and not _allowed(kind.scope, Scope.READ):
        return 303  # an agent's key may not log in: to the login
    if not _allowed(kind.scope, route.scope) or (route.unlimited and kind.limited):
        return 303 if route.dashboard else 403  # the dashboard's forms come back with an error
    return route.ok


def _check(route: Route, kind: Kind, response: httpx.Response, what: str) -> None:
    expected = _status(route, kind)
    assert response.status_code == expected, what
    location = response.headers.get("location", "")
    if route.dashboard and expected == 303:
        if kind.scope is None or not _allowed(kind.scope, Scope.READ):
            assert location.startswith("/login"), what
        else:
            refused = not _allowed(kind.scope, Scope.DEPLOY)
            assert ("error=" in location) == refused, what


def _refused(response: httpx.Response) -> bool:
    location = response.headers.get("location", "")
    to_login = location == "/login" or location.startswith("/login?next=")
    return 400 <= response.status_code < 500 or "error=" in location or to_login


def _shape(response: httpx.Response, target: Target) -> tuple[int, str, str]:
    return (
        response.status_code,
        target.anonymous(response.headers.get("location", "")),
        target.anonymous(response.text),
    )


@pytest.fixture
def world(server: ApiServer, origin: GitRepo) -> Iterator[World]:
    origin.commit("initial")
    world = World(server, origin)
    with world.client:
        yield world


# Every kind on SQLite; on PostgreSQL the kinds whose answers its queries filter by app.
@pytest.mark.parametrize(
    ("database_url", "kind"),
    [
        *(pytest.param("sqlite", kind, id=f"sqlite-{kind.name}") for kind in KINDS),
        *(
            pytest.param("postgresql", kind, id=f"postgresql-{kind.name}", marks=POSTGRES)
            for kind in KINDS
            if kind.limited
        ),
    ],
    indirect=["database_url"],
)
def test_every_route_with_every_kind_of_key(
    request: pytest.FixtureRequest, server: ApiServer, world: World, kind: Kind
) -> None:
    caller = Caller(server, kind)
    request.addfinalizer(caller.close)
    for route in ROUTES:
        for target in (MINE, THEIRS, GHOST) if route.on_app else (MINE,):
            targets = world.current()
            response = caller.call(route, targets[target])
            what = f"{kind.name}: {route.name} on {target}: {response.status_code} {response.text}"
            if target == GHOST:
                # Refused, or (a filter of lists) nothing found; made, where it makes the app.
                made = route.creates and _status(route, kind) == route.ok
                told = route.refuses_in_body and response.status_code == 200
                assert _refused(response) or response.text == "[]" or made or told, what
                if told:
                    assert response.json()["refused"][0]["field"] == "apps[0].app", what
            elif target == THEIRS and kind.limited:
                world.after(route, response)
                ghost = caller.call(route, world.current()[GHOST])
                world.after(route, ghost)
                assert _shape(response, targets[THEIRS]) == _shape(ghost, targets[GHOST]), what
            else:
                _check(route, kind, response, what)
            world.after(route, response)
            if kind.limited and not _refused(response):
                assert THEIRS not in response.text + response.headers.get("location", ""), what
        readers = kind.scope is not None and _allowed(kind.scope, Scope.READ)
        if route.name == f"GET {PREFIX}/deploy-stats/" and route.query is None and readers:
            counted = sum(n for _, n in caller.call(route, targets[MINE]).json())
            assert counted == _started(server, kind), f"{kind.name}: deploy-stats: {counted}"


def _started(server: ApiServer, kind: Kind) -> int:
    with session_scope(server.engine) as db:
        query = select(func.count()).select_from(Deploy).join(App)
        query = query.where(Deploy.date_started.is_not(None))
        if kind.apps is not None:
            query = query.where(App.name.in_(kind.apps))
        return db.scalar(query) or 0
