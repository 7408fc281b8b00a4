"""The seven steps of a deploy as plain functions of a run context: no Prefect, no database (the
deploy's row is a recording stand-in), a real git repository and real processes."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import httpx
import pytest

from freight import checks, vcs
from freight.catalogue import EnvironmentConfig
from freight.checks import CheckContext, CheckResult, Verdict
from freight.errors import AppLocked, CheckFailed, CommandFailed, DeployCancelled
from freight.execution import steps
from freight.execution.context import Limits, RunContext
from freight.execution.delivery import Courier
from freight.plugins import PluginConfig, ServiceUrls
from freight.runner import Masker
from tests.factories import GitRepo


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._mask = Masker([])

    def __call__(self, line: str) -> None:
        self.lines.append(self._mask(line))

    def mask(self, secrets: Iterable[str]) -> None:
        self._mask = self._mask.adding(secrets)


class Row:
    """The deploy's row as a recording stand-in."""

    def __init__(self, lock: str | AppLocked | None = None) -> None:
        self.lock = lock
        self.workspace: list[Path | None] = []
        self.groups: list[int] = []
        self.sent = 0

    def check_lock(self) -> str | None:
        if isinstance(self.lock, AppLocked):
            raise self.lock
        return self.lock

    def set_workspace(self, path: Path | None) -> None:
        self.workspace.append(path)

    def set_process_group(self, pgid: int) -> None:
        self.groups.append(pgid)

    def fleet(self) -> None:
        """No machines: these deploys do not pull."""

    def send_notices(self, output: object) -> list[str]:
        self.sent += 1
        return ["started"]


def context(
    tmp_path: Path,
    origin: GitRepo,
    *,
    command: str = "echo deployed {sha}",
    row: Row | None = None,
    force: bool = False,
    checks_config: list[dict[str, object]] | None = None,
    secrets: dict[str, str] | None = None,
    provider: dict[str, object] | None = None,
) -> RunContext:
    config = EnvironmentConfig.model_validate(
        {
            "name": "staging",
            "default_ref": "main",
            "auto_deploy": None,
            "provider": {"type": "shell", "command": command, **(provider or {})},
            "checks": checks_config or [],
            "notifiers": [],
        }
    )
    http = httpx.Client()
    return RunContext(
        deploy_id=7,
        name="web/staging#3",
        app="web",
        environment="staging",
        number=3,
        ref="main",
        sha=origin.git("rev-parse", "HEAD"),
        prev_sha=None,
        user="ana",
        params={},
        force=force,
        force_reason="hotfix" if force else None,
        repository=origin.url,
        config=config,
        workspace_root=tmp_path / "workspaces",
        workspace=tmp_path / "workspaces" / "checkouts" / "7",
        run_as=None,
        exposed="deploy commands run as Freight's own user",
        git=vcs.Access(allow_local=True),
        limits=Limits(deploy_timeout=30, read_timeout=30, cancel_grace=1, check_timeout=5),
        urls=ServiceUrls(),
        secrets=secrets or {},
        base_env={"PATH": "/usr/bin:/bin"},
        output=Lines(),
        record=row or Row(),
        http=http,
        courier=Courier(http, ServiceUrls(), {}, (), tmp_path, "http://freight.test"),
    )


def lines(ctx: RunContext) -> list[str]:
    assert isinstance(ctx.output, Lines)
    return ctx.output.lines


@pytest.fixture
def origin(tmp_path: Path) -> GitRepo:
    return GitRepo.create(tmp_path / "origin")


def test_check_lock_refuses_a_locked_environment_and_logs_a_lock_forced_past(
    tmp_path: Path, origin: GitRepo
) -> None:
    refused = context(tmp_path, origin, row=Row(AppLocked("web/staging is locked by bob: audit")))
    with pytest.raises(AppLocked):
        steps.check_lock(refused)
    forced = context(tmp_path, origin, row=Row("web/staging is locked by bob"), force=True)
    steps.check_lock(forced)
    assert lines(forced) == [">> Forced past: web/staging is locked by bob. Reason: hotfix"]
    cancelled = context(tmp_path, origin)
    cancelled.cancel.set()
    with pytest.raises(DeployCancelled):
        steps.check_lock(cancelled)


class GateConfig(PluginConfig):
    type: Literal["gate"] = "gate"
    path: str


class Gate:
    def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
        assert isinstance(config, GateConfig)
        state = Path(config.path).read_text().strip() if Path(config.path).exists() else ""
        if state == "green":
            return CheckResult(Verdict.PASSED)
        if state == "red":
            return CheckResult(Verdict.FAILED, "[failure] gate: red")
        return CheckResult(Verdict.PENDING, "gate: waiting", retry_after=0.01)


def test_checks_wait_while_pending_fail_when_red_and_are_skipped_when_forced(
    tmp_path: Path, origin: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(checks.registry._kinds, "gate", (GateConfig, Gate()))
    gate = tmp_path / "gate"
    gated = [{"type": "gate", "path": str(gate)}]
    waiting = context(tmp_path, origin, checks_config=gated)
    opener = threading.Timer(0.3, lambda: gate.write_text("green"))
    opener.start()
    steps.check_github_status(waiting)
    assert ">> Waiting for check gate: gate: waiting" in lines(waiting)
    gate.write_text("red")
    with pytest.raises(CheckFailed, match=r"\[failure\] gate: red"):
        steps.check_github_status(context(tmp_path, origin, checks_config=gated))
    forced = context(tmp_path, origin, checks_config=gated, force=True)
    steps.check_github_status(forced)
    assert lines(forced) == [">> Checks skipped: deploy forced"]


def test_prepare_checks_the_sha_out_and_cleanup_always_removes_it(
    tmp_path: Path, origin: GitRepo
) -> None:
    row = Row()
    ctx = context(tmp_path, origin, row=row)
    steps.prepare_workspace(ctx)
    assert (ctx.workspace / "README").read_text() == "hello\n"
    assert row.workspace == [ctx.workspace]
    steps.cleanup_workspace(ctx)
    assert not ctx.workspace.exists() and row.workspace == [ctx.workspace, None]
    assert lines(ctx)[-1] == ">> Workspace removed"
    steps.cleanup_workspace(ctx)  # nothing left to remove: nothing said
    assert lines(ctx)[-1] == ">> Workspace removed" and len(row.workspace) == 2


def test_the_provider_runs_in_the_checkout_with_secrets_masked_and_its_group_recorded(
    tmp_path: Path, origin: GitRepo
) -> None:
    row = Row()
    ctx = context(
        tmp_path,
        origin,
        command='echo "deploying {sha} as $FREIGHT_USER with $TOKEN"; cat README',
        row=row,
        secrets={"DEPLOY_TOKEN": "tok-123"},
        provider={"env": {"TOKEN": "${DEPLOY_TOKEN}"}},
    )
    steps.prepare_workspace(ctx)
    try:
        steps.run_provider(ctx)
    finally:
        steps.cleanup_workspace(ctx)
    assert f"deploying {ctx.sha} as ana with ********" in lines(ctx)
    assert "hello" in lines(ctx) and not any("tok-123" in line for line in lines(ctx))
    assert len(row.groups) == 1

    failing = context(tmp_path, origin, command="exit 4")
    steps.prepare_workspace(failing)
    with pytest.raises(CommandFailed, match="status 4"):
        steps.run_provider(failing)
    steps.cleanup_workspace(failing)


def test_notify_sends_through_the_deploys_outbox(tmp_path: Path, origin: GitRepo) -> None:
    row = Row()
    assert steps.notify(context(tmp_path, origin, row=row)) == ["started"]
    assert row.sent == 1
