"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): log in, start a
deploy and watch its log lines appear, cancel one, lock and unlock, at a laptop's and a phone's
width; the overview's screenshot is kept in .artifacts/."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect
from sqlalchemy import Engine, update

from freight.dashboard import session as login
from freight.db import (
    Deploy,
    DeployStatus,
    Machine,
    Worker,
    session_scope,
    utcnow,
)
from freight.execution import delivery, housekeeping
from freight.service import deploys, logins, machines, workers
from freight.service.machines import AppReport, CheckIn, MachineStatus
from freight.service.workers import WorkerState
from freight.settings import Settings
from tests.apiserver import ApiServer
from tests.browsing import ARTIFACTS, KEY, confirm, deploy, logged_in
from tests.conftest import Clock
from tests.contract.helpers import add_deploys
from tests.factories import GitRepo, make_app
from tests.helpers import wait_for


def test_log_in_deploy_watch_the_log_cancel_lock_and_unlock(
    browser: Browser, dashboard: ApiServer, origin: GitRepo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with session_scope(dashboard.engine) as session:
        app = make_app(
            session,
            origin,
            command="printf '\\033[32mbuilding\\033[0m\\n'; "
            "for i in 1 2 3; do echo step-$i; sleep 0.2; done; "
            f'if [ "$FREIGHT_NUMBER" = 2 ]; then while [ ! -e {gate} ]; do sleep 0.1; done; fi; '
            "echo done",
        ).name
    # Logged in with the shared key, as ana: what she does is recorded as hers.
    page = logged_in(browser, dashboard, name="ana")
    expect(page.locator("header")).to_contain_text("Log out ana")

    # A wrong key is refused, and a page without a session sends you to log in.
    other = browser.new_page()
    other.goto(dashboard.url + f"/apps/{app}?env=staging")
    expect(other).to_have_url(re.compile(rf"/login\?next=%2Fapps%2F{app}%3Fenv%3Dstaging$"))
    other.fill("input[name=key]", "nope")
    other.click("button[type=submit]")
    expect(other.locator(".flash.error")).to_contain_text("not valid")
    # Logged in, you land on the page you asked for (and only ever on a page of this site).
    other.fill("input[name=key]", KEY)
    other.click("button[type=submit]")
    expect(other).to_have_url(dashboard.url + f"/apps/{app}?env=staging")
    other.context.clear_cookies()
    other.goto(dashboard.url + "/login?next=//evil.example/x")
    other.fill("input[name=key]", KEY)
    other.click("button[type=submit]")
    expect(other).to_have_url(dashboard.url + "/")
    other.close()

    row = page.locator(f"tr[data-app='{app}'][data-env='staging']")
    expect(row).to_contain_text("never deployed")

    # Deploy from the app page and watch the log grow, colours and all.
    page.click(f"a[href='/apps/{app}']")
    staging = page.locator("tr", has_text="staging").filter(has=page.locator("form.deploy-form"))
    staging.locator("form.deploy-form button").click()
    confirm(page)
    expect(page).to_have_url(re.compile(rf"/deploys/{app}/staging/1$"))
    expect(page.locator(".flash.notice")).to_have_text(f"Queued {app}/staging#1")
    expect(page.locator("#log")).to_contain_text("step-3")
    expect(page.locator("#log .ansi-green")).to_have_text("building")
    expect(page.locator("#status")).to_have_text("finished")
    expect(page.locator("#log")).to_contain_text(">> Deploy finished after")

    # A second deploy waits on the gate: cancel it from its page.
    page.goto(dashboard.url + f"/apps/{app}")
    staging = page.locator("tr", has_text="staging").filter(has=page.locator("form.deploy-form"))
    staging.locator("form.deploy-form button").click()
    confirm(page)
    expect(page.locator("#log")).to_contain_text("step-3")
    expect(page.locator("#status")).to_have_text("in progress")
    page.click("#cancel button")
    expect(page.locator(".flash.notice")).to_contain_text("Cancel of")
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#reason")).to_have_text("Cancelled by ana")

    # Lock staging, see it everywhere, then unlock it.
    page.goto(dashboard.url + f"/apps/{app}")
    lock_form = page.locator("tr", has_text="staging").locator("form.lock-form")
    lock_form.locator("input[name=reason]").fill("db migration")
    lock_form.locator("input[name=duration]").fill("2h")
    lock_form.locator("button").click()
    expect(page.locator(".flash.notice")).to_have_text(f"Locked {app}/staging")
    page.goto(dashboard.url + "/")
    expect(row).to_contain_text("ana: db migration")
    expect(row).to_contain_text(f"{origin.git('rev-parse', 'HEAD')[:7]}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
    page.goto(dashboard.url + f"/apps/{app}")
    page.screenshot(path=str(ARTIFACTS / "dashboard-app.png"), full_page=True)
    page.locator("tr", has_text="staging").locator("button", has_text="unlock").click()
    expect(page.locator(".flash.notice")).to_have_text(f"Unlocked {app}/staging")
    page.goto(dashboard.url + "/")
    expect(row).not_to_contain_text("db migration")

    # Lock every environment at once; the app's lock history keeps the one just released.
    page.goto(dashboard.url + f"/apps/{app}")
    history = page.locator("#locks tbody tr")
    expect(history).to_have_count(1)
    expect(history.nth(0)).to_contain_text("db migration")
    expect(history.nth(0)).to_contain_text("by ana")
    app_lock = page.locator("form.app-lock")
    app_lock.locator("input[name=reason]").fill("release freeze")
    app_lock.locator("button").click()
    expect(page.locator(".flash.notice")).to_have_text(f"Locked {app}")
    expect(history.nth(0)).to_contain_text("every environment")
    expect(history.nth(0)).to_contain_text("in force")
    page.goto(dashboard.url + "/")
    for name in ("staging", "production"):
        environment = page.locator(f"tr[data-app='{app}'][data-env='{name}']")
        expect(environment).to_contain_text("release freeze")
    gate.touch()


def test_the_overview_refreshes_itself_and_fits_a_phone(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(session, origin, command="echo hi").name
    page = logged_in(browser, dashboard, width=390, height=844)
    row = page.locator(f"tr[data-app='{app}'][data-env='production']")
    expect(row).to_contain_text("never deployed")
    deploy(dashboard, app, env="production")
    # No reload: the grid fetches itself again.
    expect(row).to_contain_text("ana", timeout=20_000)
    wide = page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
    assert not wide, "the page is wider than a phone"
    # The session ends (logged out in another tab): at the next change it would show, the
    # page goes to the login by itself.
    other = page.context.new_page()
    other.goto(dashboard.url + "/")
    other.locator("header form button", has_text="Log out").click()
    expect(other.locator(".flash.notice")).to_have_text("Logged out.")
    deploy(dashboard, app, env="production", user="bob")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_a_read_key_sees_but_cannot_act_and_a_form_without_its_token_is_refused(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(session, origin, command="echo hi").name
    reader = dashboard.key("read", name="viewer")
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(dashboard.url + "/login")
    page.fill("input[name=key]", reader)
    page.click("button[type=submit]")
    page.goto(dashboard.url + f"/apps/{app}")
    expect(page.locator("h1")).to_contain_text(app)
    # No control to act with anywhere: not on the app page, nor on a deploy's page.
    expect(page.locator("main form[method=post], main form.deploy-form")).to_have_count(0)
    expect(page.locator("main button")).to_have_count(1)  # the history's Filter
    page.goto(dashboard.url + f"/confirm?app={app}&env=staging")
    expect(page.locator(".flash.error")).to_contain_text("lacks the 'deploy' scope")
    # The form posted anyway, with the page's own token, is refused the same.
    csrf = page.locator("header input[name=csrf]").input_value()
    response = page.request.post(
        dashboard.url + "/actions/deploy",
        form={"app": app, "env": "staging", "csrf": csrf},
        max_redirects=0,
    )
    assert "lacks" in (response.headers.get("location") or "")
    # The same form posted from elsewhere, without the page's CSRF token, does nothing.
    response = page.request.post(
        dashboard.url + "/actions/deploy", form={"app": app, "env": "staging"}, max_redirects=0
    )
    assert response.status == 303 and "CSRF" in (response.headers.get("location") or "")
    with dashboard.client(reader) as client:
        assert client.get("/deploys/", params={"app": app}).json() == []


def test_the_app_page_shows_what_would_ship_the_queue_in_order_and_the_charts(
    browser: Browser, dashboard: ApiServer, origin: GitRepo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with session_scope(dashboard.engine) as session:
        app = make_app(
            session,
            origin,
            command=f'[ "$FREIGHT_NUMBER" != 2 ] || until [ -e {gate} ]; do sleep 0.1; done; '
            "echo done",
        ).name
    staging = {"app": app, "env": "staging"}

    def status(client: httpx.Client, number: int) -> str:
        return str(client.get(f"/deploys/{app}/staging/{number}/").json()["status"])

    with dashboard.client(KEY) as client:
        assert client.post("/deploys/", json={**staging, "user": "ana"}).status_code == 201
        wait_for(lambda: status(client, 1) == "finished", 30, "the first deploy to finish")
        banner = origin.commit("Add a banner")
        for user in ("ana", "bob", "carl"):
            assert client.post("/deploys/", json={**staging, "user": user}).status_code == 201
        wait_for(lambda: status(client, 2) == "in_progress", 30, "#2 to start")
    page = logged_in(browser, dashboard)

    # The overview: #2 runs, with a progress bar from #1's duration, and two wait behind it.
    row = page.locator(f"tr[data-app='{app}'][data-env='staging']")
    expect(row).to_contain_text("#2 deploying")
    expect(row).to_contain_text("2 waiting")
    expect(row.locator("progress")).to_have_count(1)

    page.goto(dashboard.url + f"/apps/{app}")
    environment = page.locator("tr", has_text="staging").filter(
        has=page.locator("form.deploy-form")
    )
    environment.locator("summary", has_text="1 commit").click()
    expect(environment.locator("ul.commits li")).to_have_text(
        re.compile(rf"^{banner[:7]} Add a banner\s+Ana Dev$")
    )

    # The queue in order: #3 (bob) then #4 (carl); carl's goes to the front, bob's is cancelled.
    queued = page.locator("#queue tbody tr")
    expect(queued).to_have_count(2)
    expect(queued.nth(0)).to_contain_text("bob")
    expect(queued.nth(1)).to_contain_text("carl")
    queued.nth(1).locator("button", has_text="to the front").click()
    expect(page.locator(".flash.notice")).to_contain_text(f"{app}/staging#4")
    expect(queued.nth(0)).to_contain_text("carl")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-queue.png"), full_page=True)
    queued.nth(1).locator("button", has_text="cancel").click()
    expect(queued).to_have_count(1)
    expect(queued.nth(0)).to_contain_text("carl")

    # Charts: today's bar by outcome (bob's never started, so it is not a deploy of the day),
    # and #1's duration as a point.
    per_day = page.locator("svg.chart[aria-label='Deploys per day, last 31 days'] rect title")
    today = datetime.now(UTC).strftime("%b %d")
    expect(per_day).to_have_text([f"{today}: 1 finished", f"{today}: 1 running or queued"])
    expect(page.locator("svg.chart[aria-label='Deploy duration'] circle")).to_have_count(1)

    # carl's deploy, queued: no Prefect run yet. When #2 ends it runs, and its page, without
    # a reload, links to the flow run it was given.
    page.goto(dashboard.url + f"/deploys/{app}/staging/4")
    expect(page.locator("#status")).to_have_text("queued")
    prefect = page.locator("#prefect a", has_text="flow run")
    expect(prefect).to_be_hidden()
    gate.touch()
    expect(page.locator("#status")).to_have_text("finished")
    expect(prefect).to_be_visible()
    expect(prefect).to_have_attribute("href", re.compile(r"/runs/flow-run/run-[0-9-]+$"))
    page.goto(dashboard.url + "/")
    expect(row).to_contain_text("carl")
    expect(row).not_to_contain_text("waiting")


def test_the_history_pages_back_keeping_its_filters(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        made = make_app(session, origin, command="echo hi")
        app, app_id = made.name, made.id
    add_deploys(dashboard.engine, app_id, "staging", 110)
    add_deploys(dashboard.engine, app_id, "staging", 5, status=DeployStatus.FAILED)
    page = logged_in(browser, dashboard)
    page.goto(dashboard.url + f"/apps/{app}?status=finished")
    rows = page.locator("section", has=page.locator("h2", has_text="History")).locator("tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("staging #110")
    page.click("a[rel=next]")
    expect(rows.first).to_contain_text("staging #60")
    page.click("a[rel=next]")
    expect(rows).to_have_count(10)
    expect(rows.last).to_contain_text("staging #1")
    expect(page.locator("a[rel=next]")).to_have_count(0)
    assert "status=finished" in page.url and "page=3" in page.url
    page.click("a[rel=prev]")
    expect(rows.first).to_contain_text("staging #60")


def test_logging_out_ends_the_session_for_a_copy_of_its_cookie_too(dashboard: ApiServer) -> None:
    # Plain HTTP, as someone replaying a copied cookie would send it; the forms are the page's.
    with httpx.Client(base_url=dashboard.url) as person:
        entered = person.post("/login", data={"key": KEY, "name": "ana"})
        assert entered.status_code == 303 and entered.headers["location"] == "/"
        kept = {login.COOKIE: person.cookies[login.COOKIE]}
        overview = person.get("/")
        assert overview.status_code == 200 and "Log out ana" in overview.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', overview.text)
        assert csrf is not None
        left = person.post("/logout", data={"csrf": csrf.group(1)})
        assert left.status_code == 303 and left.headers["location"].startswith("/login")
        assert login.COOKIE not in person.cookies

    with httpx.Client(base_url=dashboard.url, cookies=kept) as copy:
        replayed = copy.get("/")
        assert replayed.status_code == 303 and replayed.headers["location"] == "/login"
        refused = copy.get("/api/0/apps/")
        assert refused.status_code == 401
        assert refused.json()["error_name"] == "unauthorized"


def test_maintenance_forgets_logged_out_sessions_once_their_cookies_expired(
    settings: Settings, engine: Engine
) -> None:
    expired, live = "a" * 64, "b" * 64
    with session_scope(engine) as session:
        logins.revoke(session, digest=expired, expires=utcnow() - timedelta(seconds=1))
        logins.revoke(session, digest=live, expires=utcnow() + timedelta(hours=1))
    with httpx.Client() as client:
        report = housekeeping.run_maintenance(
            engine, delivery.courier(settings, client), lambda line: None
        )
    assert report.forgotten_sessions == 1
    with session_scope(engine, read_only=True) as session:
        assert not logins.is_revoked(session, expired)
        assert logins.is_revoked(session, live)


def test_the_overview_shows_each_worker_and_a_deploy_says_why_it_waits(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(session, origin, command="echo hi")
        app_id, name = app.id, app.name
    add_deploys(
        dashboard.engine, app_id, "production", 1, status=DeployStatus.IN_PROGRESS,
        runner_host="deploy-1", date_started=utcnow(),
    )  # fmt: skip
    add_deploys(
        dashboard.engine, app_id, "staging", 1, status=DeployStatus.IN_PROGRESS,
        waiting_for="no worker serves work queue 'prod-net' (deploy-2 is lost)",
    )  # fmt: skip
    with session_scope(dashboard.engine) as session:
        for worker, queues in (("deploy-1", ["deploys"]), ("deploy-2", ["prod-net"])):
            workers.report(
                session, worker, limit=4, queues=queues, pid=1, state=WorkerState.RUNNING,
                started=utcnow(),
            )  # fmt: skip
        silent = utcnow() - timedelta(minutes=5)
        session.execute(update(Worker).where(Worker.name == "deploy-2").values(heartbeat_at=silent))
    # deploy-1 beats as a live worker does, while the page is looked at (a loaded machine may
    # take longer to show the page than a few missed beats at the tests' 0.5 s).
    stop_beating = threading.Event()

    def beat() -> None:
        while not stop_beating.wait(0.1):
            with session_scope(dashboard.engine) as session:
                alive = update(Worker).where(Worker.name == "deploy-1")
                session.execute(alive.values(heartbeat_at=utcnow()))

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    page = logged_in(browser, dashboard)
    first = page.locator("tr[data-worker='deploy-1']")
    expect(first).to_contain_text("running")
    expect(first).to_contain_text("1 / 4")
    expect(first.locator("a")).to_have_text(f"{name}/production#1")
    second = page.locator("tr[data-worker='deploy-2']")
    expect(second.locator(".worker-state")).to_have_text("lost")
    expect(second).to_contain_text("prod-net")
    # deploy-1 goes silent: the table says so without a reload.
    stop_beating.set()
    beating.join()
    with session_scope(dashboard.engine) as session:
        session.execute(update(Worker).where(Worker.name == "deploy-1").values(heartbeat_at=silent))
    expect(first.locator(".worker-state")).to_have_text("lost", timeout=20_000)

    first.locator("a").click()
    expect(page.locator("#waiting")).to_be_hidden()
    page.goto(dashboard.url + f"/deploys/{name}/staging/1")
    waiting = page.locator("#waiting")
    expect(waiting).to_have_text("no worker serves work queue 'prod-net' (deploy-2 is lost)")
    with session_scope(dashboard.engine) as session:
        session.execute(update(Deploy).where(Deploy.app_id == app_id).values(waiting_for=None))
    expect(waiting).to_be_hidden(timeout=20_000)  # a worker took it: the page follows


def test_the_app_page_shows_the_machines_of_each_environment_and_their_drift(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(session, origin, command="echo hi").name
        other = make_app(session, origin, command="echo hi").name
    old = origin.git("rev-parse", "HEAD")
    live = origin.commit("Add a banner")
    with dashboard.client(KEY) as client:
        production = {"app": app, "env": "production", "user": "ana"}
        assert client.post("/deploys/", json=production).status_code == 201
        wait_for(
            lambda: client.get(f"/deploys/{app}/production/1/").json()["status"] == "finished",
            30,
            "the deploy to finish",
        )
    # web-1 runs the live sha (and another app, not shown here), web-2 the commit before it,
    # web-3's agent could not read its version and has since gone silent.
    reports = {
        "web-1": [AppReport(app, "production", live[:10]), AppReport(other, "production", old)],
        "web-2": [AppReport(app, "production", old)],
        "web-3": [AppReport(app, "production", error="cannot read <VERSION>")],
    }
    with session_scope(dashboard.engine) as session:
        for name, places in reports.items():
            report = CheckIn(name, {"role": "<web>"}, "1.0", 15, places)
            machines.check_in(session, report, allowed=None, now=utcnow())
        session.execute(
            update(Machine)
            .where(Machine.name == "web-3")
            .values(status=MachineStatus.LOST, last_seen=utcnow() - timedelta(hours=1))
        )

    page = logged_in(browser, dashboard)
    page.goto(dashboard.url + f"/apps/{app}")
    fleet = page.locator("#machines .fleet[data-env='production']")
    expect(fleet.locator(".summary")).to_have_text("3 machines, 1 drifted, 1 lost")
    expect(fleet.locator("tbody tr")).to_have_count(3)
    ago = re.compile(r"^\d+ (s|min) ago$")
    for name, status, runs, drift in (
        ("web-1", "online", live[:7], "no"),
        ("web-2", "online", old[:7], "yes (1 behind)"),
        ("web-3", "lost", "cannot read <VERSION>", "no"),
    ):
        cells = fleet.locator(f"tr[data-machine='{name}'] td")
        expect(cells).to_have_text([f"{name} role=<web>", status, ago, runs, live[:7], drift])
    expect(fleet.locator("tr[data-machine='web-3'] .fault")).to_have_text("cannot read <VERSION>")
    expect(fleet.locator("tr[data-machine='web-3'] .age")).to_have_text("60 min ago")
    staging = page.locator("#machines .fleet[data-env='staging']")
    expect(staging).to_contain_text("No machine reports this environment.")
    expect(staging.locator("table")).to_have_count(0)


def test_the_app_page_shows_windows_and_freezes_and_a_freeze_holds_its_deploys(
    browser: Browser, dashboard: ApiServer, origin: GitRepo, clock: Clock
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(
            session,
            origin,
            windows=[{"allow": "0 9 * * 1-4", "duration": "8h", "timezone": "Europe/Berlin"}],
        ).name
    clock.set(datetime(2026, 12, 6, 12, tzinfo=UTC))  # a Sunday
    page = logged_in(browser, dashboard, name="ana")
    page.goto(dashboard.url + f"/apps/{app}")
    staging = page.locator("tr", has_text="staging").filter(has=page.locator("form.deploy-form"))
    expect(staging.locator("td.window")).to_have_text("closed, opens Mon 09:00 Europe/Berlin")
    staging.locator("form.deploy-form button").click()
    expect(page.locator("#confirmation .standing")).to_contain_text("outside its deploy windows")
    confirm(page)
    expect(page.locator(".flash.error")).to_have_text(
        f"{app}/staging is outside its deploy windows; the next opens Mon 09:00 Europe/Berlin"
    )

    # Monday morning: open; a freeze of production from 13:00 until Tuesday noon, made here.
    clock.set(datetime(2026, 12, 7, 9, 30, tzinfo=UTC))
    page.goto(dashboard.url + f"/apps/{app}")
    expect(staging.locator("td.window")).to_have_text("open until Mon 17:00 Europe/Berlin")
    freeze = page.locator("form.freeze-form")
    freeze.locator("select[name=env]").select_option("production")
    freeze.locator("input[name=start]").fill("2026-12-07T13:00")
    freeze.locator("input[name=until]").fill("2026-12-08T12:00")
    freeze.locator("input[name=reason]").fill("year-end")
    freeze.locator("button").click()
    expect(page.locator(".flash.notice")).to_have_text(f"Froze {app}/production")
    history = page.locator("#locks tbody tr")
    expect(history.nth(0)).to_contain_text("freeze")
    expect(history.nth(0)).to_contain_text("starts 2026-12-07 13:00")

    clock.set(datetime(2026, 12, 7, 13, 30, tzinfo=UTC))
    page.goto(dashboard.url + f"/apps/{app}")
    expect(history.nth(0)).to_contain_text("in force")
    production = page.locator("tr", has_text="production").filter(
        has=page.locator("form.deploy-form")
    )
    expect(production).to_contain_text("frozen ana: year-end")
    production.locator("form.deploy-form button").click()
    confirm(page)
    expect(page.locator(".flash.error")).to_have_text(
        f"{app}/production is frozen until 2026-12-08 12:00 UTC by ana: year-end"
    )


def test_a_promote_button_deploys_what_is_live_on_staging_once_it_baked(
    browser: Browser, dashboard: ApiServer, origin: GitRepo, clock: Clock
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(
            session,
            origin,
            command="echo deployed",
            environments={"staging": {}, "production": {"requires": {"staging": "30m"}}},
        ).name
    sha = origin.git("rev-parse", "HEAD")
    page = logged_in(browser, dashboard, name="ana")
    page.goto(dashboard.url + f"/apps/{app}")
    expect(page.locator("form.promote-form")).to_have_count(0)  # nothing live on staging
    staging = page.locator("tr", has_text="staging").filter(has=page.locator("form.deploy-form"))
    staging.locator("form.deploy-form button").click()
    confirm(page)
    expect(page.locator("#status")).to_have_text("finished")
    with session_scope(dashboard.engine) as session:
        (staged,) = deploys.list_deploys(session, deploys.DeployFilter(app=app))
        assert staged.date_finished
        finished = staged.date_finished

    clock.set(finished + timedelta(minutes=10))
    page.goto(dashboard.url + f"/apps/{app}")
    promote = page.locator("form.promote-form button")
    expect(promote).to_have_text(f"Promote {sha[:7]} from staging")
    promote.click()
    expect(page.locator("#confirmation h1")).to_have_text(f"Promote {app}/production?")
    confirm(page)
    met = f"{finished + timedelta(minutes=30):%Y-%m-%d %H:%M}"
    expect(page.locator(".flash.error")).to_have_text(
        f"{app}/production takes only what was live on staging for 30m: {sha[:7]} has been "
        f"for 10m, met at {met} UTC"
    )
    clock.set(finished + timedelta(minutes=30))
    page.locator("form.promote-form button").click()
    confirm(page)
    expect(page.locator(".flash.notice")).to_have_text(f"Queued {app}/production#1")
    expect(page.locator("#status")).to_have_text("finished")
