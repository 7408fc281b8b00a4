"""Work done under a lease of the Freight database, renewed while it goes on: one holder at a
time, and a holder that dies (kill -9, a lost host) loses it within `ttl` seconds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from freight.db import session_scope
from freight.service import leases


@contextmanager
def holding(engine: Engine, name: str, holder: str, *, ttl: float) -> Iterator[bool]:
    """Yields True while this holder has the lease (renewed every third of `ttl`), False if
    someone else holds it; gives it up on the way out."""
    with session_scope(engine) as session:
        taken = leases.take(session, name, holder, ttl=ttl)
    if not taken:
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                with session_scope(engine) as session:
                    leases.take(session, name, holder, ttl=ttl)
            except Exception:  # a hiccup: the next renewal tries again before the lease runs out
                continue

    renewer = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    renewer.start()
    try:
        yield True
    finally:
        stop.set()
        renewer.join()
        with session_scope(engine) as session:
            leases.give_up(session, name, holder)
