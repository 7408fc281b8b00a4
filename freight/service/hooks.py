"""Signed webhook URLs (Freight's `/webhooks/HOOK/ACTION/APP/ENV/DIGEST/`) and the deliveries
already acted on, so that a redelivered hook does not deploy twice."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from freight.db import Deploy, HookDelivery
from freight.errors import AlreadyDelivered
from freight.service import server_secrets

HOOK_KEY = "hook_key"


def signing_key(session: Session, api_key: str | None) -> str:
    """Freight signed hook URLs with its API key; without one, with a key of the server's own."""
    return api_key or server_secrets.get_or_create(session, HOOK_KEY)


def digest(key: str, *, hook: str, action: str, app: str, environment: str) -> str:
    message = f"{hook}/{action}/{app}/{environment}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def verify(key: str, given: str, *, hook: str, action: str, app: str, environment: str) -> bool:
    expected = digest(key, hook=hook, action=action, app=app, environment=environment)
    return hmac.compare_digest(expected.encode(), given.lower().encode())


def delivered(session: Session, delivery: str) -> Deploy | None:
    """The deploy an earlier delivery with this id made, if any."""
    return session.scalar(
        select(Deploy)
        .join(HookDelivery, HookDelivery.deploy_id == Deploy.id)
        .where(HookDelivery.delivery == delivery)
    )


def record_delivery(session: Session, delivery: str | None, deploy: Deploy) -> None:
    """Note that this delivery made this deploy, in the transaction that made it. A concurrent
    delivery of the same id that got there first raises AlreadyDelivered (undo the deploy)."""
    if delivery is None:
        return
    try:
        with session.begin_nested():
            session.add(HookDelivery(delivery=delivery, deploy_id=deploy.id))
    except IntegrityError:
        raise AlreadyDelivered(f"Delivery {delivery} was acted on already") from None
