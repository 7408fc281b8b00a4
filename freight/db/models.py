"""SQLAlchemy models of the Freight domain (DESIGN §3)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes, also on SQLite (which keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DeployStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (DeployStatus.FINISHED, DeployStatus.FAILED, DeployStatus.CANCELLED)


class AppSource(StrEnum):
    API = "api"
    CATALOGUE = "catalogue"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Repository(Base):
    __tablename__ = "repository"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(400), unique=True)
    vcs: Mapped[str] = mapped_column(String(20), default="git")
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class App(Base):
    __tablename__ = "app"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"))
    # The whole AppSpec as JSON: checked by the catalogue models on the way in and out.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[AppSource] = mapped_column(String(20), default=AppSource.API)
    source_file: Mapped[str | None] = mapped_column(String(400))
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    repository: Mapped[Repository] = relationship(lazy="joined")


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Deploy(Base):
    __tablename__ = "deploy"
    __table_args__ = (
        UniqueConstraint("app_id", "environment", "number", name="uq_deploy_number"),
        # The queue's core invariant lives in the database: one running deploy per app/env.
        Index(
            "uq_deploy_one_in_progress",
            "app_id",
            "environment",
            unique=True,
            sqlite_where=text("status = 'in_progress'"),
            postgresql_where=text("status = 'in_progress'"),
        ),
        Index("ix_deploy_queue", "app_id", "environment", "status", "id"),
        Index("ix_deploy_date_started", "date_started"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(200))
    sha: Mapped[str | None] = mapped_column(String(40))
    prev_sha: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[DeployStatus] = mapped_column(String(20), default=DeployStatus.PENDING)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why it was forced past someone else's lock (required then; logged and notified).
    force_reason: Mapped[str | None] = mapped_column(Text)
    # The environment's effective config at creation; editing the app never changes this deploy.
    # Loaded when read: lists of deploys need none of it, and decoding it per row is their cost.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    workspace: Mapped[str | None] = mapped_column(String(400))
    # Where the command's process group runs, for the reaper when its runner dies.
    runner_host: Mapped[str | None] = mapped_column(String(255))
    runner_pgid: Mapped[int | None] = mapped_column(Integer)
    runner_pid: Mapped[int | None] = mapped_column(Integer)
    log_size: Mapped[int] = mapped_column(Integer, default=0)
    # Claims that handed it to the orchestrator; a run the orchestrator lost before it started
    # is handed over again, a few times.
    hand_overs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The token of the current claim (fencing): only the run holding it may write to the deploy,
    # and a run whose claim was taken from it (reaped) stops its command.
    claim: Mapped[str | None] = mapped_column(String(32))
    date_claimed: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why its run has not started yet, when the reason is no worker's slowness (no worker
    # serves its work queue); cleared when it starts.
    waiting_for: Mapped[str | None] = mapped_column(Text)
    # What forcing it went past (a lock, a freeze, a closed deploy window), for its
    # notifications; its reason is `force_reason`.
    forced_past: Mapped[str | None] = mapped_column(Text)
    # Queues run highest priority first, then in creation order; moving a deploy to the front
    # (a rollback goes there by itself) gives it one more than any other queued deploy.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    date_started: Mapped[datetime | None] = mapped_column(UTCDateTime)
    date_finished: Mapped[datetime | None] = mapped_column(UTCDateTime)

    app: Mapped[App] = relationship(lazy="joined")
    user: Mapped[User | None] = relationship(lazy="joined")

    @property
    def name(self) -> str:
        return f"{self.app.name}/{self.environment}#{self.number}"

    @property
    def duration(self) -> float | None:
        if self.date_started is None:
            return None
        end = self.date_finished or utcnow()
        return (end - self.date_started).total_seconds()


class LogChunk(Base):
    __tablename__ = "log_chunk"
    __table_args__ = (UniqueConstraint("deploy_id", "offset", name="uq_log_chunk_offset"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deploy_id: Mapped[int] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))
    # Offsets and sizes count characters, as the Freight API's log paging does.
    offset: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lock(Base):
    __tablename__ = "lock"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"))
    # None locks every environment of the app.
    environment: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(200))
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    date_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_by: Mapped[str | None] = mapped_column(String(200))
    date_released: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A freeze holds its owner too, has an end, and may start later (None: at once); its
    # beginning is announced once (`date_begun`).
    freeze: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    date_starts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    date_begun: Mapped[datetime | None] = mapped_column(UTCDateTime)

    app: Mapped[App] = relationship(lazy="joined")


class ApiKey(Base):
    """An API key, kept only as a hash; `apps` None means every app."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # sha256 hex of the key: keys are long random tokens, so a slow hash would buy nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, to tell keys apart in listings without revealing them.
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    apps: Mapped[list[str] | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(200))
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    date_last_used: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    date_revoked: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RevokedSession(Base):
    """A dashboard session ended by logging out: its cookie is refused until it would have
    expired anyway, and then forgotten."""

    __tablename__ = "revoked_session"

    # sha256 hex of the cookie: the table need not hold bearer tokens, even dead ones.
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    date_expires: Mapped[datetime] = mapped_column(UTCDateTime)


class HookDelivery(Base):
    """Inbound webhook deliveries already acted on, so a redelivery creates nothing new."""

    __tablename__ = "hook_delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery: Mapped[str] = mapped_column(String(200), unique=True)
    deploy_id: Mapped[int | None] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerSecret(Base):
    """Random secrets the server generates once and shares between its processes and hosts."""

    __tablename__ = "server_secret"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Notification(Base):
    """Outbox of deploy events: each (deploy, event) is delivered once, in order."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("deploy_id", "event", name="uq_notification_event"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deploy_id: Mapped[int] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(20))
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    date_delivered: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotifierState(Base):
    """What a notifier keeps between the events of one deploy (Slack's message, GitHub's
    deployment id), keyed by the notifier's place in the deploy's config."""

    __tablename__ = "notifier_state"
    __table_args__ = (UniqueConstraint("deploy_id", "notifier", name="uq_notifier_state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deploy_id: Mapped[int] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))
    notifier: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class LiveRelease(Base):
    """What is live in each app/environment: its latest finished deploy, kept as deploys finish
    (so that "what runs where" is one small table, however long the history)."""

    __tablename__ = "live_release"

    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"), primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    deploy_id: Mapped[int] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))

    deploy: Mapped[Deploy] = relationship(lazy="joined")


class Lease(Base):
    """A named lease: one holder at a time does the work it guards (the reconciler, a scheduled
    flow), and a holder that dies loses it when it runs out, without anyone releasing it."""

    __tablename__ = "lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    date_expires: Mapped[datetime] = mapped_column(UTCDateTime)


class Worker(Base):
    """A host that runs deploys (`freight worker`, or the worker of `freight up`), as it last
    reported itself: it beats while it runs, so a silent one is lost."""

    __tablename__ = "worker"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    limit: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)
    # running, draining (takes no more runs, exits once its deploys end) or stopped.
    state: Mapped[str] = mapped_column(String(16))
    # The work queues it takes deploys from (`freight worker --queue`).
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    date_started: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ControlPlane(Base):
    """The Freight version each control-plane host runs (`freight server`, `freight up`):
    workers of another version take no runs."""

    __tablename__ = "control_plane"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    date_started: Mapped[datetime] = mapped_column(UTCDateTime)


class AutoDeployState(Base):
    """What automatic deploys of an environment did at their last look, and why."""

    __tablename__ = "auto_deploy_state"

    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"), primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    branch: Mapped[str] = mapped_column(String(200), default="")
    sha: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    date_checked: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Machine(Base):
    """A machine whose agent checks in (`freight agent`): who it is, and when it last spoke."""

    __tablename__ = "machine"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    # Seconds between its check-ins, as its agent says: stale and lost count missed ones.
    interval: Mapped[float] = mapped_column(Float, default=15.0)
    address: Mapped[str | None] = mapped_column(String(64))
    # online, stale or lost, as last judged (a change is announced once).
    status: Mapped[str] = mapped_column(String(16), default="online")
    date_first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MachineApp(Base):
    """What one machine runs of one app/environment now, as its last check-in said."""

    __tablename__ = "machine_app"
    __table_args__ = (
        UniqueConstraint("machine_id", "app_id", "environment", name="uq_machine_app"),
        Index("ix_machine_app_env", "app_id", "environment"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"))
    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(200))
    # Why the agent could not tell the version (its command failed, the file is missing).
    error: Mapped[str | None] = mapped_column(Text)
    # Its agent has a deploy command for it: it takes pull deploys.
    can_deploy: Mapped[bool] = mapped_column(Boolean, default=False)
    # Drift as last judged at a check-in (a change is announced once).
    drift: Mapped[bool] = mapped_column(Boolean, default=False)
    date_changed: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    machine: Mapped[Machine] = relationship(lazy="joined")
    app: Mapped[App] = relationship(lazy="joined")


class MachineVersion(Base):
    """History: each version a machine reported for an app/environment, from when it first
    reported it (a row per change, not per check-in: last_seen tells that it still runs)."""

    __tablename__ = "machine_version"
    __table_args__ = (Index("ix_machine_version_at", "machine_id", "app_id", "environment", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"))
    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class PullOrder(Base):
    """A pull deploy's desired version, published for the agents: which machines it counts on
    and how many must report success. Cancelled tells the agents to stop."""

    __tablename__ = "pull_order"
    __table_args__ = (Index("ix_pull_order_env", "app_id", "environment"),)

    deploy_id: Mapped[int] = mapped_column(
        ForeignKey("deploy.id", ondelete="CASCADE"), primary_key=True
    )
    app_id: Mapped[int] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    sha: Mapped[str] = mapped_column(String(40))
    machines: Mapped[list[str]] = mapped_column(JSON, default=list)
    need: Mapped[int] = mapped_column(Integer)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    deploy: Mapped[Deploy] = relationship(lazy="joined")


class MachineRun(Base):
    """One machine's run of a pull deploy's command (or of a catch-up to it)."""

    __tablename__ = "machine_run"
    __table_args__ = (UniqueConstraint("deploy_id", "machine_id", name="uq_machine_run"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deploy_id: Mapped[int] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"))
    # running, succeeded, failed or cancelled
    status: Mapped[str] = mapped_column(String(16), default="running")
    message: Mapped[str | None] = mapped_column(Text)
    # Output lines received so far: the agent numbers them, so a batch sent twice counts once.
    lines: Mapped[int] = mapped_column(Integer, default=0)
    date_started: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    date_finished: Mapped[datetime | None] = mapped_column(UTCDateTime)

    machine: Mapped[Machine] = relationship(lazy="joined")


class MachineOutput(Base):
    """Output lines of a machine's run, until the deploy's runner copies them into its log."""

    __tablename__ = "machine_output"
    __table_args__ = (Index("ix_machine_output_deploy", "deploy_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deploy_id: Mapped[int] = mapped_column(ForeignKey("deploy.id", ondelete="CASCADE"))
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MachineEvent(Base):
    """Outbox and history of what the fleet did: drift found or resolved, a machine lost."""

    __tablename__ = "machine_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machine.id", ondelete="CASCADE"))
    app_id: Mapped[int | None] = mapped_column(ForeignKey("app.id", ondelete="CASCADE"))
    environment: Mapped[str | None] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text, default="")
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    date_delivered: Mapped[datetime | None] = mapped_column(UTCDateTime)

    machine: Mapped[Machine] = relationship(lazy="joined")
    app: Mapped[App | None] = relationship(lazy="joined")


class GitMirror(Base):
    """A mirror in a host's git cache, as that host's last sweep measured it."""

    __tablename__ = "git_mirror"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    date_used: Mapped[datetime | None] = mapped_column(UTCDateTime)
    date_measured: Mapped[datetime] = mapped_column(UTCDateTime)


class DeployStep(Base):
    """One step of a deploy's run (check-lock … notify) as its runner went through it."""

    __tablename__ = "deploy_step"

    deploy_id: Mapped[int] = mapped_column(
        ForeignKey("deploy.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # running, completed, failed or cancelled
    state: Mapped[str] = mapped_column(String(16))
    date_started: Mapped[datetime] = mapped_column(UTCDateTime)
    date_finished: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Change(Base):
    """A committed change that open dashboards show: the event streams read these, one query
    per API process, instead of each page polling (freight/service/changes.py writes them)."""

    __tablename__ = "change"
    # Ids never come back once the old rows are swept (SQLite would reuse them otherwise):
    # streams read by id.
    __table_args__: ClassVar[dict[str, Any]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # The deploy it concerns; None: something else (a lock, an app, an auto-deploy look).
    deploy_id: Mapped[int | None] = mapped_column(Integer)
    # Only the deploy's log grew (the overview need not look again).
    log_only: Mapped[bool] = mapped_column(Boolean, default=False)
    date_created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
