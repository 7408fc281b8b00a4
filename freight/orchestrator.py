"""Prefect as Freight's execution engine: the one module of freight/ that imports prefect."""

from __future__ import annotations

import time
from types import TracebackType
from uuid import UUID

import httpx
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Cancelled, Crashed

from freight.db import Deploy
from freight.service.orchestration import RunState, RunStatus
from freight.service.releases import ReleaseNotes

HEALTH_TIMEOUT = 3.0
HAND_OVER_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)

_STATES: dict[StateType, RunState] = {
    StateType.SCHEDULED: RunState.WAITING,
    StateType.PENDING: RunState.WAITING,
    StateType.PAUSED: RunState.WAITING,
    StateType.RUNNING: RunState.RUNNING,
    StateType.CANCELLING: RunState.RUNNING,
    StateType.COMPLETED: RunState.ENDED,
    StateType.FAILED: RunState.ENDED,
    StateType.CANCELLED: RunState.CANCELLED,
    StateType.CRASHED: RunState.ENDED,
}


def run_tags(app: str, environment: str) -> list[str]:
    return [f"app:{app}", f"env:{environment}"]


class PrefectOrchestrator:
    """Hands deploys to the Prefect deployment that runs them, and reads their runs' states."""

    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        self._client: SyncPrefectClient | None = None
        self._deployment_id: UUID | None = None

    def __enter__(self) -> PrefectOrchestrator:
        self._client = get_client(sync_client=True)
        self._client.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.__exit__(kind, exc, tb)
            self._client = None

    @property
    def client(self) -> SyncPrefectClient:
        assert self._client is not None, "use PrefectOrchestrator as a context manager"
        return self._client

    def submit(self, deploy: Deploy) -> str:
        """Create the deploy's flow run; at most one per deploy, however often this is called.

        A busy Prefect server (SQLite: "database is locked") answers 503; its client would back
        off for minutes, holding the deploy's queue. This retries for seconds instead, then
        gives up: the caller undoes the claim, and the maintenance flow hands it over again.
        """
        for delay in (*HAND_OVER_RETRY_DELAYS, None):
            try:
                with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
                    if self._deployment_id is None:
                        self._deployment_id = self.client.read_deployment_by_name(
                            self.deployment
                        ).id
                    run = self.client.create_flow_run_from_deployment(
                        self._deployment_id,
                        parameters={"deploy_id": deploy.id},
                        name=deploy.name,
                        tags=run_tags(deploy.app.name, deploy.environment),
                        # A retry after a reply lost on the way gets the run already made (the
                        # date tells this database's deploy 7 from another one's; each claim
                        # of the deploy is a new hand-over).
                        idempotency_key=(
                            f"freight-{deploy.id}-{deploy.date_created.timestamp()}"
                            f"-{deploy.hand_overs}"
                        ),
                    )
                return str(run.id)
            except (httpx.TransportError, PrefectHTTPStatusError) as exc:
                retryable = not isinstance(exc, PrefectHTTPStatusError) or (
                    exc.response.status_code >= 500
                )
                if delay is None or not retryable:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def run_status(self, run_id: str) -> RunStatus:
        try:
            run = self.client.read_flow_run(UUID(run_id))
        except (ObjectNotFound, ValueError):
            return RunStatus(RunState.MISSING)
        if run.state is None:
            return RunStatus(RunState.WAITING)
        return RunStatus(_STATES[run.state.type], since=run.state.timestamp)

    def cancel_run(self, run_id: str) -> None:
        self.client.set_flow_run_state(UUID(run_id), Cancelled(message="Cancelled in Freight"))

    def mark_crashed(self, run_id: str, message: str) -> None:
        self.client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)

    def record_release(self, notes: ReleaseNotes) -> None:
        # Within the flow run: the artifact belongs to it, and its key keeps a history per env.
        create_markdown_artifact(
            markdown=notes.markdown, key=notes.key, description=notes.description
        )

    def problem(self) -> str | None:
        # Straight to /health with a short timeout: Prefect's client would retry for a minute.
        url = f"{PREFECT_API_URL.value()}/health"
        try:
            response = httpx.get(url, timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError as exc:
            return f"{url}: {type(exc).__name__}: {exc}"
        return None if response.status_code == 200 else f"{url} answered {response.status_code}"

    def label_run(self, run_id: str, *, name: str, app: str, environment: str) -> None:
        """Name and tag a run that started before Freight knew its deploy (Prefect's Run button)."""
        run = self.client.read_flow_run(UUID(run_id))
        tags = sorted({*run.tags, *run_tags(app, environment)})
        self.client.update_flow_run(UUID(run_id), name=name, tags=tags)
