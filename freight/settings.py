"""Every setting of Freight, its environment variable (FREIGHT_ + name) and its default."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from freight.names import DEFAULT_WORK_QUEUE, Name
from freight.plugins import ServiceUrls
from freight.secrets import Sources
from freight.vcs import Access


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FREIGHT_", extra="ignore")

    home: Path = Field(default=Path(".freight"), description="Data directory for embedded mode.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the Freight database; default: the embedded PostgreSQL "
        "that `freight up` runs under home (SQLite: sqlite:///PATH).",
    )
    db_port: int = Field(
        default=54320, ge=1, le=65535, description="Port of the embedded PostgreSQL."
    )
    workspace_root: Path | None = Field(default=None, description="Mirrors and checkouts.")
    catalogue_dir: Path = Field(default=Path("deployments"), description="App YAML files.")
    allow_local_repositories: bool = Field(
        default=False,
        description="Whether apps may name repositories on the server's own disk (paths, "
        "file://), which git reads as Freight's user; `freight up` turns it on unless set.",
    )
    run_as: str | None = Field(
        default=None,
        description="The unprivileged OS user deploy commands run as, so that they cannot read "
        "Freight's secrets (needs Freight to run as root); `freight up` started by root makes "
        "and uses `freight-run` unless set.",
    )
    request_git_timeout: float = Field(
        default=10,
        gt=0,
        description="Seconds one git command may take while an API request waits on it "
        "(fetching the ref to deploy, listing commits); a deploy's own fetch may take longer.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:5000", description="Where people reach the API and dashboard."
    )
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=5000, ge=1, le=65535)
    api_key: SecretStr | None = Field(
        default=None,
        description="Freight's shared key: an admin key, and the key of signed webhook URLs.",
    )
    github_webhook_secret: SecretStr | None = Field(
        default=None, description="If set, GitHub's X-Hub-Signature-256 must match it."
    )
    max_body_bytes: int = Field(default=1 << 20, gt=0, description="Largest request body.")
    prefect_api_url: str = "http://127.0.0.1:4200/api"
    prefect_database_url: str = Field(
        default="",
        description="Database of the Prefect server `freight up` starts (SQLAlchemy async URL, "
        "e.g. postgresql+asyncpg://...); default: the embedded PostgreSQL.",
    )

    github_api_url: str = Field(default="https://api.github.com", description="GitHub REST API.")
    slack_api_url: str = Field(default="https://slack.com/api/", description="Slack Web API.")
    sentry_api_url: str = Field(default="https://sentry.io/api/0/", description="Sentry API.")
    heroku_api_url: str = Field(default="https://api.heroku.com", description="Heroku API.")
    sentry_dsn: SecretStr | None = Field(
        default=None, description="If set, Freight's own errors are reported to this Sentry DSN."
    )

    deploy_timeout: float = Field(default=3600, gt=0, description="Total seconds a deploy may run.")
    read_timeout: float = Field(default=600, gt=0, description="Seconds without output allowed.")
    cancel_grace: float = Field(default=10, ge=0, description="SIGTERM to SIGKILL, in seconds.")
    heartbeat_interval: float = Field(default=2, gt=0, description="Seconds between beats.")
    runner_lost_after: float = Field(
        default=15, gt=0, description="Heartbeat age that means the runner is lost."
    )
    reconcile_interval: float = Field(
        default=2, gt=0, description="Seconds between the reconciler's looks."
    )
    reconciler_lease: float = Field(
        default=10, gt=0, description="Seconds a dead reconciler keeps the others waiting."
    )
    fleet_watch_interval: float = Field(
        default=5, gt=0, description="Seconds between looks at the machines (stale, lost, news)."
    )
    machine_history_days: float = Field(
        default=90,
        gt=0,
        description="Days of machine history (versions reported, the fleet's events) kept; each "
        "machine's current version is always kept.",
    )
    git_cache_mb: float = Field(
        default=20480,
        gt=0,
        description="Size cap of each host's git cache (its repositories' mirrors), in MB: "
        "beyond it, the mirrors used longest ago are removed (and cloned again when needed).",
    )
    git_gc_hours: float = Field(
        default=24, gt=0, description="Hours between two `git gc` of each mirror."
    )
    submit_after: float = Field(
        default=3, gt=0, description="Age of a claim without a run that is handed over again."
    )
    pending_for: float = Field(
        default=15,
        gt=0,
        description="Seconds a run may stay taken (Pending) and not started before it is given "
        "back to the workers (its worker died).",
    )
    forkserver_socket: Path | None = Field(
        default=None,
        description="The local fork server: handed-over runs start there at once (set by "
        "`freight up`); without it they wait for a worker.",
    )
    log_flush_interval: float = Field(default=0.2, gt=0, description="Seconds between log writes.")
    queue_poll_interval: float = Field(default=0.5, gt=0)
    check_timeout: float = Field(
        default=900, gt=0, description="Seconds a deploy waits for pending checks by default."
    )
    notify_timeout: float = Field(default=10, gt=0)
    notify_retry_delays: tuple[float, ...] = Field(
        default=(0.5, 2.0, 5.0), description="Back-off between attempts of a failing notifier."
    )

    prefect_auth: SecretStr | None = Field(
        default=None,
        description="user:password of Prefect's API (PREFECT_SERVER_API_AUTH_STRING); default: "
        "made on the control plane's first start, kept in FREIGHT_HOME/prefect-auth. A worker "
        "host gets the control plane's.",
    )
    host_name: str = Field(
        default_factory=socket.gethostname,
        description="This host as Freight names it: where its deploys ran (runner_host), and "
        "its worker's name.",
    )
    worker_limit: int = Field(
        default=4,
        ge=1,
        description="Deploys a `freight worker` runs at once (its --limit); workers add up.",
    )
    secret_blocks: bool = Field(
        default=False,
        description="Look a `${NAME}` that the environment lacks up in Prefect's Secret block "
        "`name` (lowercase, '-' for '_'), so that worker hosts need no app secrets of their own.",
    )
    worker_queues: list[Name] = Field(
        default=[DEFAULT_WORK_QUEUE],
        min_length=1,
        description="The work queues a `freight worker` takes deploys from (its --queue); an "
        "environment's `work_queue` sends its deploys to one.",
    )
    concurrent_deploys: int = Field(
        default=8,
        ge=1,
        description="Deploys run at once on one machine (`freight up`: the limit of the pool's "
        "`deploys` queue, shared by its worker and the API's launcher); more wait their turn. "
        "Worker hosts have FREIGHT_WORKER_LIMIT each instead.",
    )
    deploy_deployment: str = Field(
        default="deploy/deploy", description="Prefect deployment that runs one deploy."
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = self.embedded_url("freight")
        if not self.prefect_database_url:
            self.prefect_database_url = self.embedded_url("prefect", driver="asyncpg")
        if self.workspace_root is None:
            self.workspace_root = self.home / "workspaces"
        return self

    def embedded_url(self, database: str, *, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.db_port}/{database}"

    @property
    def git_cache_bytes(self) -> int:
        return int(self.git_cache_mb * 2**20)

    @property
    def uses_embedded_db(self) -> bool:
        """Whether Freight or Prefect keeps its data in the embedded PostgreSQL."""
        return self.database_url == self.embedded_url("freight") or (
            self.prefect_database_url == self.embedded_url("prefect", driver="asyncpg")
        )

    @property
    def embedded_db_dir(self) -> Path:
        return self.home.resolve() / "postgres"

    @property
    def workspaces(self) -> Path:
        assert self.workspace_root is not None
        return self.workspace_root.resolve()

    def to_env(self) -> dict[str, str]:
        """Every setting as the FREIGHT_* variable that gives it, for processes started with
        these settings (the stack's server, worker, API and flow runs)."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple | list | dict):
                value = json.dumps(value)
            elif isinstance(value, Path):
                value = value.resolve()
            env[f"FREIGHT_{name.upper()}"] = str(value)
        return env

    def git_access(self) -> Access:
        """What git may reach while a deploy runs or the engine polls."""
        return Access(allow_local=self.allow_local_repositories)

    def request_git_access(self) -> Access:
        """What git may reach while an API request waits on it: the same, for seconds only."""
        return Access(allow_local=self.allow_local_repositories, timeout=self.request_git_timeout)

    def service_urls(self) -> ServiceUrls:
        return ServiceUrls(
            github=self.github_api_url,
            slack=self.slack_api_url,
            sentry=self.sentry_api_url,
            heroku=self.heroku_api_url,
        )

    def secret_values(self) -> list[str]:
        """Values that must never appear in a log."""
        return [
            s.get_secret_value()
            for s in (self.api_key, self.github_webhook_secret)
            if s and s.get_secret_value()
        ]


@lru_cache
def get_settings() -> Settings:
    return Settings()


def secret_source() -> Mapping[str, str]:
    """Where `${NAME}` references of app configs are looked up: this process's environment,
    then, with FREIGHT_SECRET_BLOCKS, Prefect's Secret blocks."""
    blocks = None
    if get_settings().secret_blocks:
        from freight.orchestrator import secret_block  # Prefect: only where blocks are used

        blocks = secret_block
    return Sources(os.environ, blocks)


def process_environment() -> dict[str, str]:
    """This process's environment: what a flow run it starts inherits, as from a worker."""
    return dict(os.environ)
