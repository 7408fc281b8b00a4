"""The `heroku` provider against a Platform API double: source, upload, build with the sha as
its version, the streamed output in the log, the final status; failures and cancel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from freight.errors import CommandFailed, DeployCancelled, ExternalError
from freight.plugins import ServiceUrls
from freight.providers import ProviderRuntime
from freight.providers.heroku import HerokuConfig, HerokuProvider
from tests.doubles.heroku import ACCEPT, HerokuDouble
from tests.helpers import wait_for
from tests.integrations.events import SHA, deploy_context


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble().running() as double:
        yield double  # type: ignore[misc]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / ".git").write_text("gitdir: elsewhere\n")
    (tmp_path / "Procfile").write_text("web: gunicorn app:app\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    return tmp_path


def deploy(
    heroku: HerokuDouble,
    checkout: Path,
    *,
    cancel: threading.Event | None = None,
    log: list[str] | None = None,
    **config: str,
) -> list[str]:
    lines: list[str] = [] if log is None else log
    with httpx.Client(timeout=5) as client:
        HerokuProvider().run(
            HerokuConfig.model_validate(
                {"type": "heroku", "app": "acme-web", "api_key": "heroku-key", **config}
            ),
            deploy_context(checkout),
            ProviderRuntime(
                output=lines.append,
                should_cancel=(cancel or threading.Event()).is_set,
                timeout=60,
                read_timeout=10,
                grace=1,
                client=client,
                urls=ServiceUrls(heroku=heroku.url),
            ),
        )
    return lines


def test_a_build_of_the_checkout_with_its_output_in_the_log(
    heroku: HerokuDouble, checkout: Path
) -> None:
    lines = deploy(heroku, checkout)
    (build,) = heroku.builds.values()
    assert build["source_blob"]["version"] == SHA
    assert build["source_blob"]["version_description"] == "web/production#7"
    assert heroku.files(build["blob"]) == {
        "Procfile": "web: gunicorn app:app\n",
        "app/main.py": "print('hi')\n",
    }
    assert lines[1:] == [
        f">> Heroku build {build['id']} of acme-web started",
        "-----> Building on the Heroku-24 stack",
        "-----> Done",
        f">> Heroku build {build['id']} succeeded",
    ]
    api_calls = [r for r in heroku.requests if not r.path.startswith(("/blobs", "/streams"))]
    assert all(r.headers["accept"] == ACCEPT for r in api_calls)
    assert all(r.headers["authorization"] == "Bearer heroku-key" for r in api_calls)
    assert not heroku.upload_headers.get("content-type")  # empty, as the upload URL was signed


def test_a_failed_build_fails_the_deploy(heroku: HerokuDouble, checkout: Path) -> None:
    heroku.outcome = "failed"
    heroku.output = [
        "-----> Python app detected",
        " !     Push rejected, failed to compile Python app.",
    ]
    with pytest.raises(CommandFailed, match="of acme-web failed"):
        deploy(heroku, checkout)


def test_refusals_say_what_heroku_said(heroku: HerokuDouble, checkout: Path) -> None:
    with pytest.raises(ExternalError, match="unauthorized: Invalid credentials provided"):
        deploy(heroku, checkout, api_key="wrong")
    with pytest.raises(ExternalError, match="not_found: Couldn't find that app"):
        deploy(heroku, checkout, app="acme-api")


def test_cancel_stops_following_the_build(heroku: HerokuDouble, checkout: Path) -> None:
    heroku.output = [f"step {i}" for i in range(200)]
    heroku.line_delay = 0.05
    cancel = threading.Event()
    result: list[BaseException] = []

    def run() -> None:
        try:
            deploy(heroku, checkout, cancel=cancel)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: heroku.builds, 10, "the build to start")
    cancel.set()
    thread.join(10)
    assert not thread.is_alive() and isinstance(result[0], DeployCancelled)


STEPS = [f"-----> step {i}" for i in range(6)]  # 14 bytes a line, with its newline


def test_a_dropped_output_stream_is_resumed_where_it_broke_off(
    heroku: HerokuDouble, checkout: Path
) -> None:
    heroku.output = STEPS
    heroku.drop_after = [40]  # two whole lines, then part of the third
    lines = deploy(heroku, checkout)
    (build,) = heroku.builds.values()
    assert lines[2:] == [*STEPS, f">> Heroku build {build['id']} succeeded"]
    first, resumed = heroku.received("GET", "/streams/.*")
    assert "range" not in first.headers
    assert resumed.headers["range"] == "bytes=28-"


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_output_that_cannot_be_resumed_leaves_the_outcome_to_the_build(
    heroku: HerokuDouble, checkout: Path, outcome: str
) -> None:
    heroku.output = STEPS
    heroku.outcome = outcome
    heroku.drop_after = [40]
    heroku.resumable = False
    heroku.finish = threading.Event()
    log: list[str] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            deploy(heroku, checkout, log=log)
        except BaseException as exc:
            raised.append(exc)

    def status_polls() -> int:
        return len(heroku.received("GET", "/apps/acme-web/builds/.*"))

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: status_polls() >= 2, 10, "two looks at the build's status", lambda: str(log))
    assert thread.is_alive() and not raised  # the build is still pending: nothing decided yet
    heroku.finish.set()
    thread.join(10)
    assert not thread.is_alive()
    (build,) = heroku.builds.values()
    if outcome == "failed":
        (error,) = raised
        assert isinstance(error, CommandFailed) and "of acme-web failed" in str(error)
    else:
        assert not raised
    assert log[2:4] == STEPS[:2]  # what was read before the drop, once
    assert log[4].startswith(">> Heroku build output broke off (the stream answered 404)")
    assert log[5:] == [f">> Heroku build {build['id']} {outcome}"]
