"""The dashboard as a team keeps it open all day, in a real headless Chromium: the overview
(what is live, what failed, what runs, how far behind, locks, the last deploys, the day
chart), a deploy's page (times, commits, steps, log times, actions that fit), confirmations
before anything is queued, a phone's width, and the event streams that keep pages current
without polling, resuming after the API restarts. Screenshots go to .artifacts/."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect
from sqlalchemy import Engine

from freight.db import session_scope
from freight.service import deploys, locks
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.browsing import KEY, confirm, deploy, logged_in, screenshot, status_of
from tests.doubles.github import GitHubDouble
from tests.factories import GitRepo, InlineOrchestrator, make_app
from tests.helpers import wait_for

STEPS = [
    "check-lock",
    "check-github-status",
    "prepare-workspace",
    "run-provider",
    "verify",
    "cleanup-workspace",
    "notify",
]


def no_side_scroll(page: Page) -> bool:
    return not page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")


def test_the_overview_shows_a_failure_until_made_good_what_runs_and_the_last_deploys(
    browser: Browser, dashboard: ApiServer, origin: GitRepo, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with session_scope(dashboard.engine) as session:
        app = make_app(
            session,
            origin,
            command=f'if [ "$FREIGHT_NUMBER" = 2 ]; then echo broken; exit 3; fi; '
            f'[ "$FREIGHT_NUMBER" != 3 ] || until [ -e {gate} ]; do sleep 0.1; done; echo done',
            environments={"staging": {}, "production": {"protected": True}},
        ).name
    first = origin.git("rev-parse", "HEAD")
    deploy(dashboard, app, user="ana")
    wait_for(lambda: status_of(dashboard, app, "staging", 1) == "finished", 30, "#1 to finish")
    page = logged_in(browser, dashboard)
    staging = page.locator(f"tr[data-app='{app}'][data-env='staging']")
    production = page.locator(f"tr[data-app='{app}'][data-env='production']")
    expect(staging).to_contain_text(first[:7])
    expect(staging).to_contain_text("ana")
    expect(staging.locator("[data-label='Behind']")).to_have_text("up to date with main")
    expect(production).to_contain_text("never deployed")
    expect(production).to_contain_text("protected")

    # Three commits land; bob's deploy of them fails. Without a reload the row says so, with
    # how far behind main staging now is, and the failure is the first of the last deploys.
    for subject in ("Add search", "Add filters", "Add paging"):
        origin.commit(subject)
    deploy(dashboard, app, user="bob")
    wait_for(lambda: status_of(dashboard, app, "staging", 2) == "failed", 30, "#2 to fail")
    expect(staging).to_have_class(re.compile(r"\bunsettled\b"))
    outcome = staging.locator("[data-label='Last outcome']")
    expect(outcome).to_contain_text("failed #2")
    expect(outcome).to_contain_text("bob")
    expect(outcome.locator(".reason")).not_to_be_empty()  # why it failed
    expect(staging.locator("[data-label='Behind']")).to_have_text("3 commits behind main")
    expect(staging).to_contain_text(first[:7])  # still what is live
    expect(page.locator("#recent li").first).to_contain_text(f"failed {app}/staging#2")

    # carl's deploy runs (held at a gate): "running now" shows it; the failure still stands.
    deploy(dashboard, app, user="carl")
    running = page.locator("#running .running-deploy")
    expect(running).to_have_count(1)
    expect(running).to_contain_text(f"{app}/staging#3")
    expect(running).to_contain_text("carl")
    expect(staging.locator("[data-label='Now']")).to_contain_text("#3 deploying")
    expect(staging).to_have_class(re.compile(r"\bunsettled\b"))
    # A lock, with its owner and reason, as soon as it is taken.
    with session_scope(dashboard.engine) as session:
        locks.create_lock(
            session, app=app, environment="production", reason="db migration", owner="dora"
        )
    expect(production.locator("[data-label='Locks']")).to_have_text(
        re.compile(r"locked\s+dora: db migration")
    )
    expect(page.locator("#locks-now li")).to_have_text(
        re.compile(rf"^{app}/production locked by dora .+ ago: db migration$")
    )
    screenshot(page, "cockpit-overview-running")

    # #3 succeeds: the failure is made good, staging is up to date, nothing runs.
    gate.touch()
    expect(staging).not_to_have_class(re.compile(r"\bunsettled\b"))
    expect(outcome).to_have_text("finished")
    expect(staging.locator("[data-label='Behind']")).to_have_text("up to date with main")
    expect(page.locator("#running")).to_contain_text("Nothing is deploying")
    recent = page.locator("#recent li")
    expect(recent).to_have_count(3)
    expect(recent.nth(0)).to_contain_text(f"finished {app}/staging#3")
    today = datetime.now(UTC).strftime("%b %d")
    per_day = page.locator("svg.chart[aria-label='Deploys per day, last 31 days'] rect title")
    expect(per_day).to_have_text([f"{today}: 2 finished", f"{today}: 1 failed"])
    screenshot(page, "cockpit-overview")


def test_an_empty_install_says_how_to_add_an_app_and_deploy_the_demo(
    browser: Browser, dashboard: ApiServer
) -> None:
    page = logged_in(browser, dashboard)
    empty = page.locator("#overview .empty")
    expect(empty.locator("h2")).to_have_text("No apps yet")
    expect(empty).to_contain_text("freight apps sync")
    expect(empty).to_contain_text("freight deploy demo staging")
    expect(page.locator("table.releases")).to_have_count(0)


def test_the_deploy_page_shows_times_commits_steps_and_log_times_and_rolls_back(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(
            session,
            origin,
            command="echo building; echo shipping",
            verify={"command": "echo looks good"},
        ).name
    first = origin.git("rev-parse", "HEAD")
    deploy(dashboard, app)
    wait_for(lambda: status_of(dashboard, app, "staging", 1) == "finished", 30, "#1 to finish")
    origin.commit("Add search")
    origin.git("commit", "--allow-empty", "-q", "-m", "Fix typo", "--author", "Bo <bo@x.org>")
    head = origin.git("rev-parse", "HEAD")
    page = logged_in(browser, dashboard, timezone="America/New_York")

    # Deploy from the app page: the confirmation shows the two commits before anything queues.
    page.goto(dashboard.url + f"/apps/{app}")
    page.locator("tr", has_text="staging").locator("form.deploy-form button").click()
    shown = page.locator("#confirmation")
    expect(shown.locator("h1")).to_have_text(f"Deploy {app}/staging?")
    expect(shown.locator("h2").first).to_have_text("Ships 2 commits")
    expect(shown.locator("ul.commits li")).to_have_text(
        [re.compile(rf"^{head[:7]} Fix typo\s+Bo$"), re.compile(r"Add search\s+Ana Dev$")]
    )
    expect(shown).to_contain_text("No lock, freeze or promotion rule stands in the way.")
    confirm(page)
    expect(page).to_have_url(re.compile(rf"/deploys/{app}/staging/2$"))
    notice = page.locator(".flash.notice")
    expect(notice).to_have_text(f"Queued {app}/staging#2")
    expect(page.locator("#status")).to_have_text("finished")
    expect(page).to_have_title(f"[finished] {app}/staging#2 · Freight")
    expect(notice).to_have_count(0)  # it said what happened then; the deploy moved on

    facts = page.locator("#deploy dl.facts")
    expect(facts).to_contain_text(f"Replaces{first[:7]}")
    for field in ("Queued", "Started", "Ended"):
        when = facts.locator(f"dt:text-is('{field}') + dd time")
        expect(when).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    # Times read in the viewer's zone (New York here), UTC on hover.
    started = facts.locator("dt:text-is('Started') + dd time")
    moment = datetime.fromisoformat(str(started.get_attribute("datetime")))
    expect(started).to_contain_text(f"{moment.astimezone(ZoneInfo('America/New_York')):%I:%M}")
    expect(page.locator("#shipped h2")).to_have_text(f"Shipped 2 commits since {first[:7]}")
    expect(page.locator("#shipped li")).to_have_count(2)
    steps = page.locator("#steps li")
    expect(steps.locator(".name")).to_have_text(STEPS)
    expect(steps.locator(".state")).to_have_text(["completed"] * len(STEPS))
    expect(steps.locator(".took").first).to_have_text(re.compile(r"^(<1|\d+) s$"))
    expect(page.locator("#log")).to_contain_text("looks good")
    # Log lines with their times, on demand.
    stamps = page.locator("#log .ts")
    expect(stamps.first).to_be_hidden()
    page.locator("#log-times").check()
    expect(stamps.first).to_be_visible()
    expect(stamps.first).to_have_text(re.compile(r"^\d\d:\d\d:\d\d $"))
    # Actions that fit a finished deploy: redeploy, roll back; no cancel.
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#redeploy")).to_have_text(f"Redeploy {head[:7]}")
    screenshot(page, "cockpit-deploy")
    phone = page.context.browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[union-attr]
    phone.context.add_cookies(page.context.cookies())
    phone.goto(page.url)
    expect(phone.locator("#status")).to_have_text("finished")
    assert no_side_scroll(phone), "the deploy page is wider than a phone"
    screenshot(phone, "cockpit-deploy-phone")
    phone.close()

    # Roll back to before it: the confirmation says what goes away, the new deploy too.
    page.locator("#rollback").click()
    expect(shown.locator("h1")).to_have_text(f"Roll back {app}/staging?")
    expect(shown.locator("h2.removing")).to_have_text("Takes away 2 commits")
    screenshot(page, "cockpit-confirm-rollback")
    confirm(page)
    expect(page).to_have_url(re.compile(rf"/deploys/{app}/staging/3$"))
    expect(page.locator("#status")).to_have_text("finished")
    expect(page.locator("#shipped h2")).to_have_text(f"Took away 2 commits (back to {first[:7]})")
    expect(page.locator("#shipped ul.removed li").first).to_contain_text("Fix typo")


@pytest.fixture
def github() -> GitHubDouble:
    with GitHubDouble().running() as double:
        yield double  # type: ignore[misc]


def test_confirmations_show_locks_checks_and_windows_and_protected_names_must_be_typed(
    browser: Browser,
    settings: Settings,
    engine: Engine,
    github: GitHubDouble,
    origin: GitRepo,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "gh-token")
    checks = [
        {"type": "github", "repo": "acme/web", "contexts": ["ci/build"], "token": "${GITHUB_TOKEN}"}
    ]
    sha = origin.git("rev-parse", "HEAD")
    github.set_status(sha, "ci/build", "pending", "building")
    with session_scope(engine) as session:
        app = make_app(
            session,
            origin,
            checks=checks,
            environments={
                "staging": {},
                "production": {
                    "protected": True,
                    "windows": [{"deny": "0 0 1 1 *", "duration": "1h", "timezone": "UTC"}],
                },
            },
        ).name
        locks.create_lock(session, app=app, environment="staging", reason="load test", owner="bob")
    checked = settings.model_copy(update={"github_api_url": github.url})
    orchestrator = InlineOrchestrator(engine, checked)
    with serve_api(checked, engine, orchestrator) as server:
        page = logged_in(browser, server, name="ana")
        page.goto(server.url + f"/confirm?app={app}&env=staging")
        standing = page.locator("#confirmation ul.standing")
        expect(standing.locator("li.bar")).to_have_text(
            f"{app}/staging is locked by bob: load test"
        )
        expect(standing).to_contain_text("Check github: pending")
        expect(standing).to_contain_text("Deploy window: any time")
        # main moves on while the page is open: what was confirmed is not what would ship.
        moved = origin.commit("Moved on")
        page.locator("#confirm input[name=force]").check()
        page.locator("#confirm input[name=reason]").fill("bob said yes")
        confirm(page)
        expect(page.locator(".flash.error")).to_have_text(
            f"sha: main is {moved[:7]} now, not the {sha[:7]} you confirmed; look again"
        )
        github.set_status(moved, "ci/build", "pending", "building")
        page.goto(server.url + f"/confirm?app={app}&env=staging")
        expect(page.locator("#confirmation .target")).to_contain_text(moved[:7])
        # Forcing past bob's lock needs a reason, asked for on the same form.
        page.locator("#confirm input[name=force]").check()
        page.locator("#confirm input[name=reason]").fill("bob said yes")
        confirm(page)
        expect(page.locator(".flash.notice")).to_have_text(f"Queued {app}/staging#1")

        # Production is protected: its name must be typed, and the server holds to it too.
        page.goto(server.url + f"/apps/{app}")
        page.locator("tr", has_text="production").locator("form.deploy-form button").click()
        expect(page.locator("#confirmation ul.standing")).to_contain_text(
            "Deploy window: open until"
        )
        typed = page.locator("#confirm input[name=typed]")
        expect(
            page.locator("#confirm label", has=page.locator("input[name=typed]"))
        ).to_contain_text("type production to confirm")
        csrf = page.locator("#confirm input[name=csrf]").input_value()
        refused = page.request.post(
            server.url + "/actions/deploy",
            form={"csrf": csrf, "app": app, "env": "production", "typed": "prod"},
            max_redirects=0,
        )
        location = refused.headers.get("location") or ""
        assert "error=typed" in location, location
        typed.fill("production")
        confirm(page)
        expect(page.locator(".flash.notice")).to_have_text(f"Queued {app}/production#1")
        github.set_status(moved, "ci/build", "success", "built")
        expect(page.locator("#status")).to_have_text("finished", timeout=30_000)

        # Every field of the app page's forms carries a label a person reads (not a placeholder).
        page.goto(server.url + f"/apps/{app}")
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('main input:not([type=hidden]), main select')]
              .filter((e) => !e.closest('label') || e.placeholder).map((e) => e.name)"""
        )
        assert unlabelled == []

        # A read key: no control to act with, on the overview, an app, a deploy.
        reader = server.key("read", name="viewer")
        viewer = logged_in(browser, server, key=reader)
        for path in ("/", f"/apps/{app}", f"/deploys/{app}/staging/1"):
            viewer.goto(server.url + path)
            expect(viewer.locator("main form[method=post]")).to_have_count(0)
            expect(viewer.locator("main .deploy-form, #redeploy, #rollback")).to_have_count(0)
    orchestrator.join()


def test_the_overview_is_one_card_per_environment_on_a_phone(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(session, origin, command="echo hi").name
        other = make_app(session, origin, command="echo hi").name
        locks.create_lock(session, app=app, environment="staging", reason="hold", owner="ana")
    deploy(dashboard, app)
    wait_for(lambda: status_of(dashboard, app, "staging", 1) == "finished", 30, "#1 to finish")
    page = logged_in(browser, dashboard, width=390, height=844)
    cards = page.locator("table.releases tbody tr")
    expect(cards).to_have_count(4)
    expect(page.locator("table.releases thead")).to_be_hidden()
    card = page.locator(f"tr[data-app='{app}'][data-env='staging']")
    expect(card).to_have_css("display", "grid")
    box = card.bounding_box()
    assert box is not None and box["width"] <= 390
    # On the card, without scrolling sideways: the lock, what is live, its outcome.
    for label in ("Locks", "Live", "Last outcome", "Now", "Behind", "Auto-deploy"):
        field = card.locator(f"[data-label='{label}']")
        expect(field).to_be_visible()
        where = field.bounding_box()
        assert where is not None and where["x"] >= 0 and where["x"] + where["width"] <= 390, label
    expect(card.locator(".badge")).to_have_text("locked")
    expect(card.locator("[data-label='Last outcome']")).to_have_text("finished")
    expect(page.locator(f"tr[data-app='{other}'][data-env='production']")).to_contain_text(
        "never deployed"
    )
    assert no_side_scroll(page), "the overview is wider than a phone"
    screenshot(page, "cockpit-overview-phone")


def test_every_page_fits_a_laptop_and_a_phone_and_is_kept_as_a_screenshot(
    browser: Browser, dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        app = make_app(session, origin, command="echo hi").name
    deploy(dashboard, app)
    wait_for(lambda: status_of(dashboard, app, "staging", 1) == "finished", 30, "#1 to finish")
    origin.commit("Add search")
    pages = {
        "overview": "/",
        "app": f"/apps/{app}",
        "deploy": f"/deploys/{app}/staging/1",
        "confirm": f"/confirm?app={app}&env=staging",
    }
    for width, height, suffix in ((1280, 800, "laptop"), (390, 844, "phone")):
        page = logged_in(browser, dashboard, width=width, height=height)
        for name, path in pages.items():
            page.goto(dashboard.url + path)
            expect(page.locator("main h1")).to_be_visible()
            assert no_side_scroll(page), f"{name} is wider than the {suffix}'s screen"
            screenshot(page, f"page-{name}-{suffix}")
        page.context.clear_cookies()
        page.goto(dashboard.url + "/login")
        assert no_side_scroll(page)
        screenshot(page, f"page-login-{suffix}")
        page.context.close()


def test_pages_follow_one_event_stream_and_resume_after_the_api_restarts(
    browser: Browser, settings: Settings, engine: Engine, origin: GitRepo, tmp_path: Path
) -> None:
    gates = [tmp_path / "gate1", tmp_path / "gate2"]
    with session_scope(engine) as session:
        app = make_app(
            session,
            origin,
            command="for i in 1 2 3; do echo line-$i; done; "
            f"until [ -e {gates[0]} ]; do sleep 0.1; done; "
            "for i in 4 5 6; do echo line-$i; done; "
            f"until [ -e {gates[1]} ]; do sleep 0.1; done; echo line-7",
        ).name
    orchestrator = InlineOrchestrator(engine, settings)
    with serve_api(settings, engine, orchestrator) as server:
        port = int(server.url.rsplit(":", 1)[1])
        deploy(server, app)
        overview = logged_in(browser, server)
        fetched: list[str] = []

        def note(request: Request) -> None:
            if "/partials/" in request.url or "/api/0/" in request.url:
                fetched.append(request.url)

        overview.on("request", note)
        page = overview.context.new_page()
        page.goto(server.url + f"/deploys/{app}/staging/1")
        expect(page.locator("#log")).to_contain_text("line-3")
        expect(page.locator("#status")).to_have_text("in progress")
        row = overview.locator(f"tr[data-app='{app}'][data-env='staging']")
        expect(row).to_contain_text("#1 deploying")

        # Idle, an open overview asks for nothing: no polling.
        expect(overview.locator("#overview")).to_have_attribute("data-connected", "yes")
        fetched.clear()
        overview.wait_for_timeout(4000)
        assert fetched == []
        # A change it shows arrives through the stream itself: still no request.
        with session_scope(engine) as session:
            locks.create_lock(session, app=app, environment="production", reason="x", owner="y")
        expect(overview.locator(f"tr[data-app='{app}'][data-env='production']")).to_contain_text(
            "y: x"
        )
        assert fetched == []

    # The API is gone; the deploy goes on, writes more log and ends.
    gates[0].touch()
    gates[1].touch()
    wait_for(lambda: status_after_restart(engine, app) == "finished", 30, "#1 to finish")
    expect(page.locator("#overview, #deploy").first).to_be_attached()
    with serve_api(settings, engine, orchestrator, port=port):
        # Both pages come back by themselves: the log from where it stopped, each line once.
        expect(page.locator("#status")).to_have_text("finished", timeout=30_000)
        lines = page.locator("#log").inner_text().splitlines()
        for i in range(1, 8):
            assert lines.count(f"line-{i}") == 1, lines
        expect(row).not_to_contain_text("deploying", timeout=30_000)
        expect(row.locator("[data-label='Last outcome']")).to_have_text("finished")
    orchestrator.join()


def status_after_restart(engine: Engine, app: str) -> str:
    with session_scope(engine, read_only=True) as session:
        (made,) = deploys.list_deploys(session, deploys.DeployFilter(app=app))
        return str(made.status)


def test_a_deploy_stream_of_another_apps_deploy_is_unknown(
    dashboard: ApiServer, origin: GitRepo
) -> None:
    with session_scope(dashboard.engine) as session:
        mine = make_app(session, origin, command="echo hi").name
        theirs = make_app(session, origin, command="echo hi").name
    deploy(dashboard, theirs)
    wait_for(lambda: status_of(dashboard, theirs, "staging", 1) == "finished", 30, "#1")
    limited = dashboard.key("read", apps=[mine], name="limited")
    with httpx.Client(base_url=dashboard.url, timeout=30) as browser_like:
        browser_like.post("/login", data={"key": limited})
        with dashboard.client(KEY) as client:
            theirs_id = client.get(f"/deploys/{theirs}/staging/1/").json()["id"]
        answer = browser_like.get(f"/events/deploys/{theirs_id}")
        assert answer.status_code == 404
        assert theirs not in answer.text
