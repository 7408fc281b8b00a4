"""Pull deploys as the database holds them: the order a deploy publishes (the desired version
and the machines it counts on), the orders and cancels each agent is given at its check-in,
and each machine's run of the command with its output."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.db import (
    App,
    Deploy,
    DeployStatus,
    Machine,
    MachineApp,
    MachineOutput,
    MachineRun,
    PullOrder,
    utcnow,
)
from freight.errors import InvalidRequest, NotFound
from freight.service import logs, releases
from freight.service.machines import MachineStatus, same_version


class RunStatus:
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINAL = ("succeeded", "failed", "cancelled")


def publish(session: Session, deploy: Deploy, *, min_ready: int | None, now: datetime) -> PullOrder:
    """Set the deploy's sha as the desired version of its environment, counting on the
    machines that can deploy it and are not lost; `min_ready` None means all of them."""
    rows = session.scalars(
        select(MachineApp).where(
            MachineApp.app_id == deploy.app_id,
            MachineApp.environment == deploy.environment,
            MachineApp.can_deploy.is_(True),
        )
    )
    machines = sorted(row.machine.name for row in rows if row.machine.status != MachineStatus.LOST)
    assert deploy.sha is not None
    order = session.get(PullOrder, deploy.id)
    if order is None:
        order = PullOrder(deploy_id=deploy.id, app_id=deploy.app_id, environment=deploy.environment)
        session.add(order)
    order.sha = deploy.sha
    order.machines = machines
    order.need = len(machines) if min_ready is None else min_ready
    order.cancelled = False
    order.date_created = now
    session.flush()
    return order


def cancel(session: Session, deploy_id: int) -> None:
    order = session.get(PullOrder, deploy_id)
    if order is not None:
        order.cancelled = True


@dataclass(frozen=True)
class Order:
    """What an agent is asked to deploy: the deploy's variables for its command."""

    deploy_id: int
    app: str
    environment: str
    number: int
    ref: str
    sha: str
    prev_sha: str | None
    user: str
    params: Mapping[str, str]
    # A catch-up to the live version, not a run the deploy waits on.
    catch_up: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "deploy": str(self.deploy_id),
            "app": self.app,
            "env": self.environment,
            "number": self.number,
            "ref": self.ref,
            "sha": self.sha,
            "prevSha": self.prev_sha,
            "user": self.user,
            "params": dict(self.params),
            "catchUp": self.catch_up,
        }


def _order(deploy: Deploy, *, catch_up: bool) -> Order:
    assert deploy.sha is not None
    return Order(
        deploy_id=deploy.id,
        app=deploy.app.name,
        environment=deploy.environment,
        number=deploy.number,
        ref=deploy.ref,
        sha=deploy.sha,
        prev_sha=deploy.prev_sha,
        user=deploy.user.name if deploy.user else "",
        params=dict(deploy.params or {}),
        catch_up=catch_up,
    )


@dataclass
class Instructions:
    # The desired version of each place the machine reported (None: none is desired).
    desired: dict[tuple[int, str], Deploy | None] = field(default_factory=dict)
    orders: list[Order] = field(default_factory=list)
    # Deploys the agent runs that it must stop: cancelled, ended, or overtaken by a newer one.
    cancel: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.orders or self.cancel)


def active_orders(session: Session) -> dict[tuple[int, str], PullOrder]:
    """The order of each environment whose pull deploy is in progress."""
    rows = session.scalars(
        select(PullOrder)
        .join(Deploy, Deploy.id == PullOrder.deploy_id)
        .where(Deploy.status == DeployStatus.IN_PROGRESS)
    )
    return {(row.app_id, row.environment): row for row in rows}


def desired(
    session: Session,
    app_id: int,
    environment: str,
    *,
    active: Mapping[tuple[int, str], PullOrder] | None = None,
) -> Deploy | None:
    """The version an environment's machines should run: its pull deploy in progress, else
    its live release when a pull deploy made it (a push-deployed environment has none).
    `active`: the orders in progress, when the caller has them already."""
    order = (active_orders(session) if active is None else active).get((app_id, environment))
    if order is not None and not order.cancelled:
        return order.deploy
    live = releases.live_deploy(session, app_id, environment)
    if live is not None and session.get(PullOrder, live.id) is not None:
        return live
    return None


def instructions(
    session: Session,
    machine_id: int,
    places: Collection[tuple[int, str]],
    running: Collection[int],
) -> Instructions:
    """What a machine that just checked in is to do: a run for each place it can deploy whose
    desired version it neither runs nor tried, and a stop for each run it must give up."""
    found = Instructions()
    active = active_orders(session)
    tried = set(
        session.scalars(select(MachineRun.deploy_id).where(MachineRun.machine_id == machine_id))
    )
    states = {
        (row.app_id, row.environment): row
        for row in session.scalars(select(MachineApp).where(MachineApp.machine_id == machine_id))
    }
    for place in places:
        target = found.desired[place] = desired(session, *place, active=active)
        state = states.get(place)
        if state is None or not state.can_deploy:
            continue
        order = active.get(place)
        if order is not None:
            if not order.cancelled and order.deploy_id not in tried:
                found.orders.append(_order(order.deploy, catch_up=False))
            continue
        if (
            target is not None
            and target.id not in tried
            and not same_version(state.version, target.sha)
        ):
            found.orders.append(_order(target, catch_up=True))
    for deploy_id in running:
        order = session.get(PullOrder, deploy_id)
        if order is None or order.cancelled:
            found.cancel.append(deploy_id)
            continue
        if order.deploy.status in (DeployStatus.FAILED, DeployStatus.CANCELLED):
            found.cancel.append(deploy_id)
            continue
        newer = active.get((order.app_id, order.environment))
        if newer is not None and newer.deploy_id != deploy_id:
            found.cancel.append(deploy_id)
    return found


# Said of a run its agent no longer has: it was killed or restarted while the command ran.
# Under systemd the command went with it (the unit's processes are killed); otherwise it may
# run on unheard, so what it did is not known either way.
ABANDONED = (
    "the agent stopped before this run ended (restarted?): how the command ended is not known"
)


def abandon_runs(
    session: Session, machine_id: int, running: Collection[int], *, now: datetime
) -> list[int]:
    """Fail the runs Freight still counts as running on a machine whose agent, checking in,
    does not run them (an agent names every run whose end it has not reported): so that their
    deploys need not wait for their timeout, and so that no run is started twice. The deploys
    of the runs failed."""
    runs = session.scalars(
        select(MachineRun)
        .where(
            MachineRun.machine_id == machine_id,
            MachineRun.status == RunStatus.RUNNING,
            MachineRun.deploy_id.not_in(running),
        )
        .with_for_update(of=MachineRun)
    ).all()
    for run in runs:
        run.status = RunStatus.FAILED
        run.message = ABANDONED
        run.date_finished = now
        session.add(
            MachineOutput(
                deploy_id=run.deploy_id,
                machine_id=machine_id,
                text=f">> Failed: {ABANDONED}",
                date_created=now,
            )
        )
    session.flush()
    return [run.deploy_id for run in runs]


def snapshot(session: Session) -> frozenset[tuple[int, int, str, bool]]:
    """(deploy, app, environment, cancelled) of every pull deploy in progress: one cheap look
    that a waiting check-in compares, instead of asking for its instructions again."""
    return frozenset(
        (order.deploy_id, order.app_id, order.environment, order.cancelled)
        for order in active_orders(session).values()
    )


def record_run(
    session: Session,
    deploy_id: int,
    machine_name: str,
    *,
    first: int,
    lines: Sequence[str],
    status: str | None,
    message: str | None,
    allowed: frozenset[str] | None,
) -> MachineRun:
    """Output lines (numbered from `first`) and, once, the final status of a machine's run of
    a pull deploy. A batch sent again (the agent retries) is kept once."""
    deploy = session.get(Deploy, deploy_id)
    if deploy is None or (allowed is not None and deploy.app.name not in allowed):
        raise NotFound(f"Deploy {deploy_id} not found")
    if session.get(PullOrder, deploy_id) is None:
        raise InvalidRequest(f"deploy: {deploy.name} is not a pull deploy")
    machine = session.scalar(select(Machine).where(Machine.name == machine_name))
    if machine is None:
        raise NotFound(f"Machine '{machine_name}' not found")
    if status is not None and status not in (RunStatus.RUNNING, *RunStatus.FINAL):
        raise InvalidRequest(
            f"status: '{status}' is not one of running, succeeded, failed, cancelled"
        )
    if first < 0:
        raise InvalidRequest("from: must be 0 or more")
    run = session.scalar(
        select(MachineRun)
        .where(MachineRun.deploy_id == deploy_id, MachineRun.machine_id == machine.id)
        .with_for_update(of=MachineRun)
    )
    now = utcnow()
    if run is None:
        run = MachineRun(deploy_id=deploy_id, machine_id=machine.id, lines=0, date_started=now)
        session.add(run)
        session.flush()
    if first > run.lines:
        raise InvalidRequest(f"from: {first} skips lines (the server has {run.lines})")
    fresh = list(lines[run.lines - first :])
    for text in fresh:
        session.add(
            MachineOutput(
                deploy_id=deploy_id,
                machine_id=machine.id,
                text=logs.storable(text),
                date_created=now,
            )
        )
    run.lines += len(fresh)
    if status in RunStatus.FINAL and run.status not in RunStatus.FINAL:
        run.status = status
        run.message = message
        run.date_finished = now
    session.flush()
    return run


@dataclass(frozen=True)
class Progress:
    # (output id, machine, text), oldest first
    lines: list[tuple[int, str, str]]
    # machine -> (status, message) of its run
    runs: dict[str, tuple[str, str | None]]
    # each machine that can deploy the environment -> its status now
    machines: dict[str, MachineStatus]


def progress(session: Session, deploy_id: int, *, after: int, now: datetime) -> Progress:
    lines = [
        (output.id, name, output.text)
        for output, name in session.execute(
            select(MachineOutput, Machine.name)
            .join(Machine, Machine.id == MachineOutput.machine_id)
            .where(MachineOutput.deploy_id == deploy_id, MachineOutput.id > after)
            .order_by(MachineOutput.id)
            .limit(1000)
        )
    ]
    runs = {
        run.machine.name: (run.status, run.message)
        for run in session.scalars(select(MachineRun).where(MachineRun.deploy_id == deploy_id))
    }
    deploy = session.get_one(Deploy, deploy_id)
    machines = {
        row.machine.name: MachineStatus(row.machine.status)
        for row in session.scalars(
            select(MachineApp).where(
                MachineApp.app_id == deploy.app_id,
                MachineApp.environment == deploy.environment,
                MachineApp.can_deploy.is_(True),
            )
        )
    }
    return Progress(lines, runs, machines)


def runs_of(session: Session, deploy_id: int) -> list[MachineRun]:
    return list(
        session.scalars(
            select(MachineRun).where(MachineRun.deploy_id == deploy_id).order_by(MachineRun.id)
        )
    )


def app_name(session: Session, app_id: int) -> str:
    return session.get_one(App, app_id).name
