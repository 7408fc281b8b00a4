"""What one step of a deploy gets: a small frozen context, the same for every step."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from freight import vcs
from freight.catalogue import EnvironmentConfig
from freight.errors import DeployCancelled
from freight.execution.delivery import Courier
from freight.plugins import ServiceUrls
from freight.providers.base import Fleet
from freight.system_users import RunAs


class Output(Protocol):
    """Where a deploy's lines go (its log, the engine's run log), secrets masked."""

    def __call__(self, line: str) -> None: ...

    def mask(self, secrets: Iterable[str]) -> None:
        """Mask these values too from now on (secrets resolved at run time)."""
        ...


class Record(Protocol):
    """The deploy's row as its runner may change it: only while it holds its claim."""

    def check_lock(self) -> str | None:
        """Raise a Barred error if a lock, a freeze or a closed window stands in the way; what
        forcing went past, described (and kept on the deploy for its notifications)."""
        ...

    def roll_back(self, reason: str, output: Callable[[str], None]) -> str | None:
        """Queue what was live before this deploy at the front, as a forced deploy, and lock the
        environment with `reason`; the rollback's name (None: nothing was live before)."""
        ...

    def set_workspace(self, path: Path | None) -> None: ...

    def set_process_group(self, pgid: int) -> None: ...

    def fleet(self) -> Fleet:
        """The machines' agents, for a pull deploy."""
        ...

    def deliver_notifications(self, output: Callable[[str], None]) -> list[str]: ...


@dataclass(frozen=True)
class Limits:
    deploy_timeout: float
    read_timeout: float
    cancel_grace: float
    check_timeout: float


@dataclass(frozen=True)
class RunContext:
    deploy_id: int
    name: str  # APP/ENV#N
    app: str
    environment: str
    number: int
    ref: str
    sha: str
    prev_sha: str | None
    user: str
    params: Mapping[str, str]
    force: bool
    force_reason: str | None
    repository: str
    # The environment's config as it was when the deploy was made.
    config: EnvironmentConfig
    workspace_root: Path
    # Where this deploy's checkout goes.
    workspace: Path
    # Whom the command runs as; None: as Freight's own user, and `exposed` says why.
    run_as: RunAs | None
    exposed: str | None
    git: vcs.Access
    limits: Limits
    urls: ServiceUrls
    # Where `${NAME}` references of the config are looked up.
    secrets: Mapping[str, str]
    # Variables of the runner's own environment that a deploy command inherits.
    base_env: Mapping[str, str]
    output: Output
    record: Record
    http: httpx.Client
    courier: Courier
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def temp_dir(self) -> Path:
        """The command's TMPDIR and HOME: its own, removed with the checkout."""
        return self.workspace_root / "tmp" / str(self.deploy_id)

    def raise_if_cancelled(self) -> None:
        if self.cancel.is_set():
            raise DeployCancelled("Deploy cancelled")
