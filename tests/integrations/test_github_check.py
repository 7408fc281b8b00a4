"""The `github` check against a GitHub double on loopback: statuses, check runs, the verdict,
and GitHub's errors; then through the waiting loop, pending to success and to failure."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from freight.checks import CheckContext, Verdict
from freight.checks.github import GitHubCheck, GitHubCheckConfig
from freight.errors import CheckFailed
from freight.execution import gating
from freight.plugins import ServiceUrls
from tests.doubles import Reply
from tests.doubles.github import GitHubDouble, rate_limited

SHA = "3f2a" + "0" * 36


@pytest.fixture
def github() -> Iterator[GitHubDouble]:
    with GitHubDouble().running() as double:
        yield double  # type: ignore[misc]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def context(
    github: GitHubDouble, http: httpx.Client, lines: list[str] | None = None
) -> CheckContext:
    return CheckContext(
        app="web",
        environment="production",
        sha=SHA,
        output=(lines if lines is not None else []).append,
        client=http,
        urls=ServiceUrls(github=github.url),
        repository="git@github.com:acme/web.git",
    )


def config(**fields: object) -> GitHubCheckConfig:
    return GitHubCheckConfig.model_validate({"type": "github", "token": "gh-token", **fields})


def test_named_contexts_must_all_succeed(github: GitHubDouble, http: httpx.Client) -> None:
    check = GitHubCheck()
    wanted = config(contexts=["ci/build", "lint"])
    assert check.evaluate(wanted, context(github, http)).summary == "waiting for ci/build, lint"
    github.set_status(SHA, "ci/build", "pending", "running")
    github.add_check_run(SHA, "lint", "completed", "success")
    github.add_check_run(SHA, "flaky", "completed", "failure")  # not wanted: does not count
    result = check.evaluate(wanted, context(github, http))
    assert (result.verdict, result.summary) == (Verdict.PENDING, "waiting for ci/build")
    github.set_status(SHA, "ci/build", "failure", "tests failed")
    failed = check.evaluate(wanted, context(github, http))
    assert failed.verdict == Verdict.FAILED
    assert failed.summary == (
        f"[failure] ci/build: tests failed (https://ci.example.com/ci/build/{SHA[:7]})"
    )
    github.set_status(SHA, "ci/build", "success", "ok")
    assert check.evaluate(wanted, context(github, http)).verdict == Verdict.PASSED

    request = github.received("GET", f"/repos/acme/web/commits/{SHA}/status")[0]
    assert request.headers["authorization"] == "Bearer gh-token"
    assert request.headers["accept"] == "application/vnd.github+json"
    assert request.headers["x-github-api-version"] == "2022-11-28"


def test_without_contexts_everything_reported_must_succeed(
    github: GitHubDouble, http: httpx.Client
) -> None:
    check, everything = GitHubCheck(), config()
    nothing = check.evaluate(everything, context(github, http))
    assert (nothing.verdict, nothing.summary) == (
        Verdict.PENDING,
        "waiting for statuses or checks to be reported",
    )
    github.set_status(SHA, "ci/build", "success")
    github.add_check_run(SHA, "tests", "in_progress")
    assert check.evaluate(everything, context(github, http)).summary == "waiting for tests"
    github.add_check_run(SHA, "tests", "completed", "timed_out", title="Timed out")
    assert check.evaluate(everything, context(github, http)).verdict == Verdict.FAILED


def test_the_latest_run_of_a_name_counts_across_pages(
    github: GitHubDouble, http: httpx.Client
) -> None:
    for index in range(150):
        github.add_check_run(SHA, f"job-{index}", "completed", "success")
    github.add_check_run(SHA, "tests", "completed", "failure", title="2 failed")
    github.add_check_run(SHA, "tests", "completed", "success", title="re-run passed")
    result = GitHubCheck().evaluate(config(contexts=["tests", "job-149"]), context(github, http))
    assert result.verdict == Verdict.PASSED, result.summary
    pages = github.received("GET", f"/repos/acme/web/commits/{SHA}/check-runs")
    assert len(pages) == 2 and pages[0].arg("per_page") == "100" and pages[1].arg("page") == "2"


@pytest.mark.parametrize(
    ("reply", "verdict", "words"),
    [
        (
            Reply(401, {"message": "Bad credentials"}),
            Verdict.FAILED,
            "401 Bad credentials (is the token",
        ),
        (Reply(404, {"message": "Not Found"}), Verdict.FAILED, "is the repository name right"),
        (Reply(502, {"message": "Server Error"}), Verdict.PENDING, "GitHub answered 502"),
        (None, Verdict.PENDING, "rate limited"),  # made when the test runs: its reset is a time
    ],
)
def test_github_errors_say_what_to_do(
    github: GitHubDouble, http: httpx.Client, reply: Reply | None, verdict: Verdict, words: str
) -> None:
    github.fail_next.append(reply or rate_limited(time.time() + 30))
    result = GitHubCheck().evaluate(config(), context(github, http))
    assert result.verdict == verdict and words in result.summary, result.summary
    if "rate limited" in words:
        assert result.retry_after is not None and 25 <= result.retry_after <= 31


def test_the_wait_logs_once_backs_off_and_ends_on_success_or_failure(
    github: GitHubDouble, http: httpx.Client
) -> None:
    lines: list[str] = []
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 3:
            github.set_status(SHA, "ci/build", "success")
        return False

    gating.wait_for_checks(
        [config(contexts=["ci/build"])], context(github, http, lines), timeout=60, wait=wait
    )
    assert lines == [">> Running check github", ">> Waiting for check github: waiting for ci/build"]
    assert waits == [1.0, 2.0, 4.0]

    github.set_status(SHA, "ci/build", "error", "runner crashed")
    with pytest.raises(
        CheckFailed, match=r"^Check github failed: \[error\] ci/build: runner crashed"
    ):
        gating.wait_for_checks(
            [config(contexts=["ci/build"])], context(github, http), timeout=60, wait=lambda s: False
        )


def test_pending_too_long_fails_with_what_it_waited_for(
    github: GitHubDouble, http: httpx.Client
) -> None:
    now = [0.0]

    def wait(seconds: float) -> bool:
        now[0] += seconds
        return False

    with pytest.raises(CheckFailed, match="still pending after 10s: waiting for ci/build"):
        gating.wait_for_checks(
            [config(contexts=["ci/build"])],
            context(github, http),
            timeout=10,
            wait=wait,
            clock=lambda: now[0],
        )
