"""Prefect as Freight's execution engine: the one module of freight/ that imports prefect."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import TracebackType
from uuid import UUID

import httpx
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import FlowRunContext
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import (
    PREFECT_API_REQUEST_TIMEOUT,
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    temporary_settings,
)
from prefect.states import Cancelled, Crashed, Pending, Scheduled

from freight.db import utcnow
from freight.errors import IntegrationError
from freight.execution.ports import RunState, RunStatus, Submission
from freight.service.releases import ReleaseNotes

HEALTH_TIMEOUT = 3.0
SECRET_READ_TIMEOUT = 5.0
HAND_OVER_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)

_STATES: dict[StateType, RunState] = {
    StateType.SCHEDULED: RunState.SCHEDULED,
    StateType.PENDING: RunState.PENDING,
    StateType.PAUSED: RunState.SCHEDULED,
    StateType.RUNNING: RunState.RUNNING,
    StateType.CANCELLING: RunState.CANCELLING,
    StateType.COMPLETED: RunState.ENDED,
    StateType.FAILED: RunState.ENDED,
    StateType.CANCELLED: RunState.CANCELLED,
    StateType.CRASHED: RunState.ENDED,
}


@contextmanager
def one_try_each(timeout: float) -> Iterator[None]:
    """Within: every request to Prefect is tried once and waits at most `timeout` seconds, for
    a caller that repeats on its own (the reconciler). Prefect's client would otherwise back off
    for minutes on a busy server, or wait a minute on a hung one, and hold the caller's loop,
    with it the reaping of lost runners. Clients made within keep the timeout."""
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_API_REQUEST_TIMEOUT: timeout}):
        yield


def run_tags(app: str, environment: str) -> list[str]:
    return [f"app:{app}", f"env:{environment}"]


class PrefectOrchestrator:
    """Hands deploys to the Prefect deployment that runs them, and reads their runs' states."""

    def __init__(self, deployment: str, *, work_pool: str = "freight") -> None:
        self.deployment = deployment
        self.work_pool = work_pool
        self._client: SyncPrefectClient | None = None
        self._own_client = True
        self._deployment_id: UUID | None = None

    @classmethod
    def within_run(cls, deployment: str) -> PrefectOrchestrator:
        """The orchestrator of a flow run, on the engine's own client: a client of its own
        would cost the server a version check and a CSRF token for every deploy."""
        context = FlowRunContext.get()
        assert context is not None, "within_run is for the body of a flow"
        orchestrator = cls(deployment)
        if isinstance(context.client, SyncPrefectClient):
            orchestrator._client, orchestrator._own_client = context.client, False
        return orchestrator

    def __enter__(self) -> PrefectOrchestrator:
        if self._client is None:
            self._client = get_client(sync_client=True)
            self._client.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None and self._own_client:
            self._client.__exit__(kind, exc, tb)
        self._client = None

    @property
    def client(self) -> SyncPrefectClient:
        assert self._client is not None, "use PrefectOrchestrator as a context manager"
        return self._client

    def submit(self, submission: Submission) -> str:
        """Create the claim's flow run; at most one per claim, however often this is called.

        A busy Prefect server answers 503; its client would back off for minutes, holding the
        deploy's queue. This retries for seconds instead, then gives up: the reconciler hands
        it over again.
        """
        for delay in (*HAND_OVER_RETRY_DELAYS, None):
            try:
                with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
                    run = self.client.create_flow_run_from_deployment(
                        self._deployment(),
                        parameters={"deploy_id": submission.deploy_id, "claim": submission.claim},
                        name=submission.name,
                        tags=run_tags(submission.app, submission.environment),
                        work_queue_name=submission.work_queue,
                        # A retry after a reply lost on the way gets the run already made.
                        idempotency_key=submission.idempotency_key,
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

    def _deployment(self) -> UUID:
        if self._deployment_id is None:
            self._deployment_id = self.client.read_deployment_by_name(self.deployment).id
        return self._deployment_id

    def take(self, run_id: str) -> bool:
        # Prefect's orchestration rules let one Pending transition win: the worker's or ours.
        result = self.client.set_flow_run_state(UUID(run_id), Pending())
        return result.status == SetStateStatus.ACCEPT

    def give_back(self, run_id: str) -> None:
        self.client.set_flow_run_state(
            UUID(run_id), Scheduled(message="Freight: back to the workers"), force=True
        )

    def run_statuses(self, run_ids: Iterable[str]) -> dict[str, RunStatus]:
        """The states of these runs."""
        ids = {run_id: _uuid(run_id) for run_id in run_ids}
        known = [u for u in ids.values() if u is not None]
        found: dict[UUID, FlowRun] = {}
        if known:
            runs = self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=known)), limit=len(known)
            )
            found = {run.id: run for run in runs}
        return {run_id: _status(found.get(u) if u else None) for run_id, u in ids.items()}

    def stuck_runs(self, *, pending_for: float) -> list[str]:
        runs = self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING]))
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self.work_pool])),
            limit=200,
        )
        cutoff = utcnow() - timedelta(seconds=pending_for)
        return [
            str(run.id)
            for run in runs
            if run.state is not None and run.state.timestamp < cutoff and run.start_time is None
        ]

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


def secret_block(name: str) -> str | None:
    """The value of Prefect's Secret block `name`; None if there is no such block. Asked once,
    for SECRET_READ_TIMEOUT at most: the API screening a request waits on it, and Prefect's
    client would retry an absent server for minutes."""
    try:
        with one_try_each(SECRET_READ_TIMEOUT):
            block = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError:  # Prefect's word for "no block of that name"
        return None
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        raise IntegrationError(f"Prefect's Secret block '{name}' could not be read: {exc}") from exc
    value = block.get()
    return value if isinstance(value, str) else json.dumps(value)


def _uuid(run_id: str) -> UUID | None:
    try:
        return UUID(run_id)
    except ValueError:
        return None


def _status(run: FlowRun | None) -> RunStatus:
    if run is None:
        return RunStatus(RunState.MISSING)
    if run.state is None:
        return RunStatus(RunState.SCHEDULED)
    return RunStatus(_STATES[run.state.type], since=run.state.timestamp)
