"""The API's beat: each API process holds a lease of its own while it serves, renewed every few
seconds. Machines are judged by the check-ins the API hears, so their silence counts only
while an API was there to hear them (see freight/execution/fleet_watch.py)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from freight.db import session_scope
from freight.service import leases

log = logging.getLogger(__name__)

PREFIX = "api:"
EVERY = 2.0
# A beat older than this says no API serves (it died, or cannot reach the database).
TTL = 6.0


@contextmanager
def beating(engine: Engine) -> Iterator[None]:
    name = f"{PREFIX}{socket.gethostname()}:{os.getpid()}"
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                with session_scope(engine) as session:
                    leases.take(session, name, name, ttl=TTL)
            except Exception as exc:  # the database is away: the beat stops, as it should
                log.warning("API beat failed: %s", exc)
            if stop.wait(EVERY):
                return

    thread = threading.Thread(target=beat, name="api-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        try:
            with session_scope(engine) as session:
                leases.give_up(session, name, name)
        except Exception as exc:
            log.warning("API beat not given up: %s", exc)


def serving(engine: Engine) -> bool:
    """Whether some API process beats now."""
    with session_scope(engine, read_only=True) as session:
        return leases.held(session, PREFIX)
