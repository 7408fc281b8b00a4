"""The `github` check: the sha's commit statuses and check runs on GitHub.

With `contexts`, each named one must have succeeded; without, everything reported must have,
and nothing reported yet counts as pending. Of several check runs with one name (re-runs), the
latest counts. 5xx answers and rate limits are pending (looked at again later, the rate limit's
reset respected); 401, 403 and 404 fail with what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from freight.checks import registry
from freight.checks.base import CheckContext, CheckResult, Verdict
from freight.errors import InvalidConfig
from freight.github import GitHub, GitHubError, repo_of
from freight.plugins import PluginConfig

PASSING = {"success", "neutral", "skipped"}
# Check-run conclusions and commit-status states that fail a deploy.
FAILING = {"failure", "error", "timed_out", "cancelled", "action_required", "stale"}


class GitHubCheckConfig(PluginConfig):
    type: Literal["github"] = "github"
    repo: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    contexts: list[str] = Field(default_factory=list)
    token: str | None = None  # e.g. "${GITHUB_TOKEN}"; none: anonymous (public repositories)
    timeout: float | None = Field(default=None, gt=0, description="Seconds to wait if pending.")
    secret_fields: ClassVar[tuple[str, ...]] = ("token",)


@dataclass(frozen=True)
class Signal:
    """One context's outcome: a commit status or the latest check run of that name."""

    name: str
    state: str  # success, pending, or a failing state
    description: str
    url: str | None

    def line(self) -> str:
        link = f" ({self.url})" if self.url else ""
        return f"[{self.state}] {self.name}: {self.description or 'no description'}{link}"


def _statuses(payload: dict[str, Any]) -> list[Signal]:
    return [
        Signal(s["context"], s["state"], s.get("description") or "", s.get("target_url"))
        for s in payload.get("statuses", [])
    ]


def _latest_runs(runs: list[dict[str, Any]]) -> list[Signal]:
    latest: dict[str, dict[str, Any]] = {}
    for run in runs:
        seen = latest.get(run["name"])
        if seen is None or (run.get("started_at") or "", run["id"]) > (
            seen.get("started_at") or "",
            seen["id"],
        ):
            latest[run["name"]] = run
    signals = []
    for name, run in latest.items():
        if run.get("status") != "completed":
            state = "pending"
        elif run.get("conclusion") in PASSING:
            state = "success"
        else:
            state = run.get("conclusion") or "failure"
        output = run.get("output") or {}
        description = output.get("title") or output.get("summary") or run.get("conclusion") or ""
        signals.append(
            Signal(name, state, description, run.get("html_url") or run.get("details_url"))
        )
    return signals


def judge(signals: list[Signal], wanted: list[str]) -> CheckResult:
    """The verdict over every signal, or over the wanted contexts only."""
    by_name = {s.name: s for s in signals}
    if wanted:
        missing = [name for name in wanted if name not in by_name]
        considered = [by_name[name] for name in wanted if name in by_name]
    else:
        missing, considered = [], signals
    failed = [s for s in considered if s.state in FAILING]
    if failed:
        return CheckResult(Verdict.FAILED, "; ".join(s.line() for s in failed))
    waiting = missing + [s.name for s in considered if s.state != "success"]
    if waiting:
        return CheckResult(Verdict.PENDING, f"waiting for {', '.join(waiting)}")
    if not considered:
        return CheckResult(Verdict.PENDING, "waiting for statuses or checks to be reported")
    return CheckResult(Verdict.PASSED, ", ".join(s.name for s in considered) + " passed")


class GitHubCheck:
    def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
        assert isinstance(config, GitHubCheckConfig)
        repo = config.repo or repo_of(context.repository)
        if repo is None:
            raise InvalidConfig(
                f"Check github: {context.repository} is not a GitHub repository; set 'repo'"
            )
        api = GitHub(context.http(), context.urls.github, config.token or None)
        base = f"/repos/{repo}/commits/{context.sha}"
        try:
            statuses = _statuses(api.json("GET", f"{base}/status", params={"per_page": 100}))
            runs = _latest_runs(api.paged(f"{base}/check-runs", "check_runs", {"filter": "all"}))
        except GitHubError as exc:
            if exc.retry_after is not None:
                return CheckResult(Verdict.PENDING, exc.message, retry_after=exc.retry_after)
            return CheckResult(Verdict.FAILED, exc.message)
        return judge(statuses + runs, config.contexts)


registry.register("github", GitHubCheckConfig)(GitHubCheck())
