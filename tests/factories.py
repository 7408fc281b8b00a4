"""Factories for test data: real git repositories and apps with unique names."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from freight.catalogue import AppSpec
from freight.db import App, AppSource, Deploy
from freight.service import apps, runs
from freight.service.orchestration import RunState, RunStatus
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
    environments: tuple[str, ...] = ("staging", "production"),
    **extra: Any,
) -> App:
    provider = {"type": "shell", "command": command, **extra.pop("provider", {})}
    if provider["type"] != "shell":  # another kind: its own fields only
        provider.pop("command")
    spec = AppSpec.model_validate(
        {
            "name": name or unique_name(),
            "repository": repo.url,
            "provider": provider,
            "environments": {env: {"default_ref": "main"} for env in environments},
            **extra,
        }
    )
    return apps.save_app(session, spec, source=AppSource.API)


class RecordingOrchestrator:
    """Stands in for Prefect where a test checks the service layer alone: it records hand-overs."""

    def __init__(self) -> None:
        self.submitted: list[int] = []
        self.crashed: list[str] = []
        self.states: dict[str, RunState] = {}
        self.releases: list[Any] = []

    def submit(self, deploy: Deploy) -> str:
        self.submitted.append(deploy.id)
        run_id = f"run-{deploy.id}"
        self.states[run_id] = RunState.WAITING
        return run_id

    def run_status(self, run_id: str) -> RunStatus:
        return RunStatus(self.states.get(run_id, RunState.MISSING))

    def cancel_run(self, run_id: str) -> None:
        self.states[run_id] = RunState.CANCELLED

    def mark_crashed(self, run_id: str, message: str) -> None:
        self.crashed.append(run_id)
        self.states[run_id] = RunState.ENDED

    def record_release(self, notes: Any) -> None:
        self.releases.append(notes)

    def problem(self) -> str | None:
        return None


class InlineOrchestrator(RecordingOrchestrator):
    """Runs each deploy handed to it in a thread of the test process, as a worker would in a
    process of its own: the real lifecycle (git, the command, logs), without Prefect."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        super().__init__()
        self.engine, self.settings = engine, settings
        self.threads: list[threading.Thread] = []

    def submit(self, deploy: Deploy) -> str:
        run_id = super().submit(deploy)
        thread = threading.Thread(target=self._run, args=(deploy.id, run_id), daemon=True)
        self.threads.append(thread)
        thread.start()
        return run_id

    def _run(self, deploy_id: int, run_id: str) -> None:
        self.states[run_id] = RunState.RUNNING
        run = runs.DeployRun(self.engine, self.settings, deploy_id, run_id=run_id)
        runs.execute(run, self)
        self.states[run_id] = RunState.ENDED

    def join(self, timeout: float = 60) -> None:
        """Wait for every run, those that finished runs handed over meanwhile included."""
        deadline = time.monotonic() + timeout
        while alive := [thread for thread in self.threads if thread.is_alive()]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(alive)} inline runs still running after {timeout}s")
            alive[0].join(max(0.0, deadline - time.monotonic()))
