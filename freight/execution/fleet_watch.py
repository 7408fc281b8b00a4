"""The fleet watch, a loop of the control plane beside the reconciler: it moves silent machines
to stale and lost, and tells the notifiers of the fleet's news (drift found or resolved, a
machine lost), each event once, from the outbox the check-ins fill. One holder at a time acts,
under a lease."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from sqlalchemy import Engine

from freight.db import session_scope, utcnow
from freight.execution import api_beat, delivery
from freight.execution.delivery import Courier
from freight.notifiers import MachineNotice
from freight.plugins import PluginConfig
from freight.service import leases, machines, notifications

log = logging.getLogger(__name__)

LEASE = "fleet-watch"


class Hearing:
    """Since when an API has been there without a break to hear check-ins (None: not now)."""

    def __init__(self) -> None:
        self.since: datetime | None = None

    def look(self, engine: Engine) -> datetime | None:
        if not api_beat.serving(engine):
            self.since = None
        elif self.since is None:
            self.since = utcnow()
        return self.since


def pass_once(engine: Engine, courier: Courier, hearing: Hearing) -> int:
    """Judge every machine's status, then deliver what the outbox holds; the events sent.
    While no API serves, nobody is judged: the silence is Freight's, not the machines'."""
    heard_since = hearing.look(engine)
    if heard_since is not None:
        with session_scope(engine) as session:
            for machine in machines.judge_statuses(session, utcnow(), heard_since=heard_since):
                log.warning("Machine %s is lost", machine.name)
    sent = 0
    while True:
        with session_scope(engine, read_only=True) as session:
            batch: list[tuple[int, list[PluginConfig], MachineNotice | None]] = []
            for event in machines.undelivered_events(session):
                if event.app is None or event.environment is None:
                    batch.append((event.id, [], None))
                    continue
                notice = MachineNotice(
                    event=event.event,
                    machine=event.machine.name,
                    app=event.app.name,
                    environment=event.environment,
                    detail=event.detail,
                    date=event.date_created.isoformat().replace("+00:00", "Z"),
                )
                configs = notifications.environment_notifiers(event.app, event.environment)
                batch.append((event.id, configs, notice))
        if not batch:
            return sent
        for event_id, configs, notice in batch:
            if notice is not None and configs:
                delivery.announce(configs, notice, courier, log.warning)
                sent += 1
            with session_scope(engine) as session:
                machines.mark_delivered(session, event_id)


def serve(
    engine: Engine,
    courier: Courier,
    *,
    holder: str,
    interval: float,
    ttl: float,
    stop: threading.Event,
) -> None:
    hearing = Hearing()
    while not stop.is_set():
        started = time.monotonic()
        try:
            with session_scope(engine) as session:
                leading = leases.take(session, LEASE, holder, ttl=ttl)
            if leading:
                pass_once(engine, courier, hearing)
        except Exception as exc:  # the database is away: look again later
            log.warning("Fleet watch pass failed: %s", exc)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    with session_scope(engine) as session:
        leases.give_up(session, LEASE, holder)
