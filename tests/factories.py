"""Factories for test data: real git repositories and apps with unique names."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from flows.deploy import PLAIN, run_deploy
from freight.catalogue import AppSpec
from freight.db import App, AppSource, DeployStatus
from freight.execution import intake
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest
from freight.execution.ports import RunState, RunStatus, Submission
from freight.execution.run import DeployRun
from freight.service import apps
from freight.settings import Settings

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Ana Dev",
    "GIT_AUTHOR_EMAIL": "ana@example.com",
    "GIT_COMMITTER_NAME": "Ana Dev",
    "GIT_COMMITTER_EMAIL": "ana@example.com",
}
_names = itertools.count(1)


@dataclass
class GitRepo:
    path: Path

    @classmethod
    def create(cls, path: Path) -> GitRepo:
        path.mkdir(parents=True)
        repo = cls(path)
        repo.git("init", "-q", "-b", "main")
        repo.commit("first commit", {"README": "hello\n"})
        return repo

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.path, env=GIT_ENV, check=True, capture_output=True, text=True
        ).stdout.strip()

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        for name, content in (files or {"change.txt": message}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return str(self.path)


def unique_name(prefix: str = "app") -> str:
    return f"{prefix}{next(_names)}"


def make_app(
    session: Session,
    repo: GitRepo,
    *,
    command: str = "echo deployed {app} {environment} {sha}",
    name: str | None = None,
    environments: tuple[str, ...] | dict[str, dict[str, Any]] = ("staging", "production"),
    **extra: Any,
) -> App:
    """An app deploying `repo` with a shell command; `environments` names them, or maps each
    name to its own settings (`{"production": {"requires": {"staging": "30m"}}}`)."""
    provider = {"type": "shell", "command": command, **extra.pop("provider", {})}
    if provider["type"] != "shell":  # another kind: its own fields only
        provider.pop("command")
    spec = AppSpec.model_validate(
        {
            "name": name or unique_name(),
            "repository": repo.url,
            "provider": provider,
            "environments": {
                env: {"default_ref": "main", **(own if isinstance(environments, dict) else {})}
                for env, own in (
                    environments.items()
                    if isinstance(environments, dict)
                    else ((name, {}) for name in environments)
                )
            },
            **extra,
        }
    )
    return apps.save_app(session, spec, source=AppSource.API)


class RecordingOrchestrator:
    """Stands in for Prefect where a test checks Freight alone: it records hand-overs, and a
    test sets the states of the runs."""

    def __init__(self) -> None:
        self.submitted: list[int] = []
        self.submissions: list[Submission] = []
        self.crashed: list[str] = []
        self.cancelled: list[str] = []
        self.given_back: list[str] = []
        self.states: dict[str, RunState] = {}
        self.since: dict[str, datetime] = {}
        self.releases: list[Any] = []
        self.stuck: list[str] = []
        self.down = False  # the engine is away: every call fails
        self._by_key: dict[str, str] = {}
        self._lock = threading.Lock()

    def _reachable(self) -> None:
        if self.down:
            raise ConnectionError("Prefect is down")

    def submit(self, submission: Submission) -> str:
        self._reachable()
        with self._lock:
            if submission.idempotency_key in self._by_key:
                return self._by_key[submission.idempotency_key]
            self.submitted.append(submission.deploy_id)
            self.submissions.append(submission)
            run_id = f"run-{submission.deploy_id}-{len(self.submitted)}"
            self._by_key[submission.idempotency_key] = run_id
            self.states[run_id] = RunState.SCHEDULED
            return run_id

    def take(self, run_id: str) -> bool:
        self._reachable()
        with self._lock:
            if self.states.get(run_id) != RunState.SCHEDULED:
                return False
            self.states[run_id] = RunState.PENDING
            return True

    def give_back(self, run_id: str) -> None:
        self._reachable()
        self.given_back.append(run_id)
        self.states[run_id] = RunState.SCHEDULED

    def run_statuses(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        self._reachable()
        return {
            run_id: RunStatus(self.states.get(run_id, RunState.MISSING), self.since.get(run_id))
            for run_id in run_ids
        }

    def stuck_runs(self, *, pending_for: float) -> list[str]:
        self._reachable()
        return list(self.stuck)

    def cancel_run(self, run_id: str) -> None:
        self._reachable()
        self.cancelled.append(run_id)
        self.states[run_id] = RunState.CANCELLED

    def mark_crashed(self, run_id: str, message: str) -> None:
        self._reachable()
        self.crashed.append(run_id)
        self.states[run_id] = RunState.ENDED

    def record_release(self, notes: Any) -> None:
        self.releases.append(notes)

    def label_run(self, run_id: str, *, name: str, app: str, environment: str) -> None:
        pass

    def problem(self) -> str | None:
        return "down" if self.down else None


class InlineOrchestrator(RecordingOrchestrator):
    """Runs each deploy handed to it in a thread of the test process, as a worker would in a
    process of its own: the real lifecycle (git, the command, logs), without Prefect."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__()
        self.engine, self.settings = engine, settings
        self.threads: list[threading.Thread] = []

    def submit(self, submission: Submission) -> str:
        run_id = super().submit(submission)
        if self.states[run_id] == RunState.SCHEDULED:  # not a retry of a submission
            self.states[run_id] = RunState.RUNNING
            thread = threading.Thread(
                target=self._run, args=(submission.deploy_id, run_id, submission.claim), daemon=True
            )
            self.threads.append(thread)
            thread.start()
        return run_id

    def handover(self) -> HandOver:
        return HandOver(
            self.engine,
            self,
            workspace_root=self.settings.workspaces,
            git=self.settings.git_access(),
        )

    def _run(self, deploy_id: int, run_id: str, claim: str) -> None:
        run_inline(self.settings, self.handover(), deploy_id, run_id=run_id, claim=claim)
        self.states[run_id] = RunState.ENDED

    def join(self, timeout: float = 60) -> None:
        """Wait for every run, those that finished runs handed over meanwhile included."""
        deadline = time.monotonic() + timeout
        while alive := [thread for thread in self.threads if thread.is_alive()]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(alive)} inline runs still running after {timeout}s")
            alive[0].join(max(0.0, deadline - time.monotonic()))


def run_inline(
    settings: Settings, handover: HandOver, deploy_id: int, *, run_id: str, claim: str | None
) -> DeployStatus | None:
    """A deploy's run as the deploy flow does it, without Prefect: the same order of the same
    steps (flows/deploy.py), the plain functions in place of the tasks."""
    with DeployRun(settings, handover, deploy_id, run_id=run_id, claim=claim) as run:
        status = run_deploy(run, PLAIN)
    run.reraise_signal()
    return status


def request(
    handover: HandOver,
    app: str,
    environment: str = "staging",
    *,
    user: str = "ana",
    ref: str | None = None,
    params: dict[str, str] | None = None,
    force: bool = False,
    reason: str | None = None,
) -> int:
    """A deploy asked for as every client asks: created, then its queue moved."""
    return handover.request(
        DeployRequest(
            app=app,
            environment=environment,
            user=user,
            ref=ref,
            params=params,
            force=force,
            reason=reason,
        )
    ).deploy_id


def register(
    handover: HandOver,
    app: str,
    environment: str = "staging",
    *,
    user: str = "prefect",
    force: bool = False,
    reason: str | None = None,
) -> tuple[int, str]:
    """A deploy as Prefect's Run button makes one: registered by its own run. (id, run id)"""
    run_id = str(uuid.uuid4())
    created = intake.create(
        handover.engine,
        DeployRequest(
            app=app,
            environment=environment,
            user=user,
            force=force,
            reason=reason,
            run_id=run_id,
        ),
        workspace_root=handover.workspace_root,
        git=handover.git,
    )
    return created.deploy_id, run_id
