"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): launching it,
logging in, saying yes to a confirmation, keeping screenshots; and the API calls its tests
make beside the browser (a deploy, its status)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.apiserver import ApiServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
KEY = "s3cr3t-api-key"


@contextmanager
def chromium() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Chromium is missing: `make test` installs it (see Makefile)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def logged_in(
    browser: Browser,
    server: ApiServer,
    *,
    width: int = 1280,
    height: int = 800,
    name: str = "",
    key: str = KEY,
    timezone: str | None = None,
) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height}, timezone_id=timezone)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("input[name=key]", key)
    page.fill("input[name=name]", name)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("What runs where")
    return page


def confirm(page: Page) -> None:
    """Say yes on the confirmation a deploy, rollback or promotion opens."""
    expect(page.locator("#confirmation")).to_be_visible()
    page.locator("#confirm button[type=submit]").click()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def status_of(server: ApiServer, app: str, env: str, number: int) -> str:
    with server.client(KEY) as client:
        return str(client.get(f"/deploys/{app}/{env}/{number}/").json()["status"])


def deploy(server: ApiServer, app: str, env: str = "staging", user: str = "ana") -> None:
    with server.client(KEY) as client:
        made = client.post("/deploys/", json={"app": app, "env": env, "user": user})
        assert made.status_code == 201, made.text
