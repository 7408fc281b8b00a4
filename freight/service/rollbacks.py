"""Automatic rollbacks: a deploy whose verification failed puts back what was live before it,
at the front of the queue, and locks its environment until someone has looked."""

from __future__ import annotations

from sqlalchemy.orm import Session

from freight.db import Deploy, Lock
from freight.service import deploys, locks, queue

# Who makes automatic rollbacks, and owns the lock each leaves (so that its own rollback passes).
ROLLBACK_USER = "freight"


def roll_back(session: Session, failed: Deploy, *, reason: str) -> tuple[Deploy, Lock] | None:
    """Queue `failed`'s previous sha at the front, forced (past windows, freezes and promotion
    rules: it restores what ran), and lock the environment with `reason`, which holds automatic
    deploys until someone unlocks. None when nothing was live before, or when `failed` is itself
    an automatic rollback (no loop of them)."""
    if failed.prev_sha is None or (failed.user and failed.user.name == ROLLBACK_USER):
        return None
    lock = locks.create_lock(
        session,
        app=failed.app.name,
        environment=failed.environment,
        reason=reason,
        owner=ROLLBACK_USER,
    )
    plan = deploys.plan_deploy(
        session,
        app=failed.app.name,
        environment=failed.environment,
        ref=failed.prev_sha,
        user=ROLLBACK_USER,
        force=True,
        force_reason=reason,
    )
    back = deploys.create_deploy(session, plan, sha=failed.prev_sha)
    queue.move_to_front(session, back)
    return back, lock
