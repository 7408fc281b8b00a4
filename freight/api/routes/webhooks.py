"""Signed hooks: `POST /webhooks/github/deploy/APP/ENV/DIGEST/` deploys a GitHub push to the
environment's default branch, as Freight did. DIGEST signs `HOOK/ACTION/APP/ENV` (see
freight.service.hooks); no API key is needed, the URL is the credential. With a GitHub webhook
secret configured, `X-Hub-Signature-256` must match the body too.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse

from freight.api import schemas
from freight.api.deps import Admin, Runtime, RuntimeDep, SessionDep
from freight.api.inputs import load_json
from freight.api.routes.deploys import request_deploy
from freight.api.routing import PREFIX, Router
from freight.errors import AlreadyDelivered, Forbidden, InvalidRequest, NotFound
from freight.execution.intake import DeployRequest
from freight.service import apps, deploys, hooks
from freight.service.keys import Scope

router = Router(tags=["webhooks"])
WEB_FLOW = ("noreply@github.com", "web-flow")


def _signed_by_github(request_body: bytes, header: str | None, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), request_body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected.encode(), header.encode())


def _pusher(head_commit: dict[str, Any]) -> str:
    """Who to deploy as: the committer, or the author when GitHub's web flow committed."""
    committer = head_commit.get("committer") or {}
    if (committer.get("email"), committer.get("username")) == WEB_FLOW:
        committer = head_commit.get("author") or {}
    email = committer.get("email") or committer.get("name")
    if not isinstance(email, str) or not email:
        raise InvalidRequest("head_commit: no committer email")
    return email


async def raw_body(request: Request) -> bytes:
    return await request.body()


@router.get(f"{PREFIX}/hooks/{{hook}}/{{action}}/{{app}}/{{env}}/", operation_id="hook_url")
def hook_url(
    db: SessionDep, rt: RuntimeDep, who: Admin, hook: str, action: str, app: str, env: str
) -> dict[str, str]:
    """The signed URL to give GitHub for this hook (what `freight webhook create` prints)."""
    who.require(Scope.ADMIN, app)
    apps.environment_of(apps.get_app(db, app), env)
    key = hooks.signing_key(db, _api_key(rt))
    signed = hooks.digest(key, hook=hook, action=action, app=app, environment=env)
    base = rt.settings.public_url.rstrip("/")
    return {"url": f"{base}/webhooks/{hook}/{action}/{app}/{env}/{signed}/"}


def _api_key(rt: Runtime) -> str | None:
    return rt.settings.api_key.get_secret_value() if rt.settings.api_key else None


@router.post("/webhooks/{hook}/{action}/{app}/{env}/{digest}/", operation_id="webhook")
def webhook(
    request: Request,
    db: SessionDep,
    rt: RuntimeDep,
    later: BackgroundTasks,
    body: Annotated[bytes, Depends(raw_body)],
    hook: str,
    action: str,
    app: str,
    env: str,
    digest: str,
) -> JSONResponse:
    key = hooks.signing_key(db, _api_key(rt))
    if not hooks.verify(key, digest, hook=hook, action=action, app=app, environment=env):
        raise Forbidden("Invalid signature for this hook URL")
    if hook != "github":
        raise NotFound(f"Unknown hook '{hook}'")
    if action != "deploy":
        raise NotFound(f"Unknown action '{action}'")
    config = apps.environment_of(apps.get_app(db, app), env)
    secret = rt.settings.github_webhook_secret
    if secret and not _signed_by_github(
        body, request.headers.get("x-hub-signature-256"), secret.get_secret_value()
    ):
        raise Forbidden("X-Hub-Signature-256 does not match the body")
    event = request.headers.get("x-github-event", "push")
    if event != "push":
        return JSONResponse({"ignored": f"'{event}' event"})
    try:
        payload = load_json(body)
    except ValueError as exc:
        raise InvalidRequest(f"The push payload is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The push payload must be a JSON object")
    branch = f"refs/heads/{config.default_ref}"
    if payload.get("ref") != branch:
        return JSONResponse({"ignored": f"push to {payload.get('ref')}, not {branch}"})
    head = payload.get("head_commit")
    if not isinstance(head, dict) or not isinstance(head.get("id"), str):
        return JSONResponse({"ignored": "push without a head commit (a deleted branch)"})
    user = _pusher(head)
    delivery = request.headers.get("x-github-delivery")
    earlier = hooks.delivered(db, delivery) if delivery else None
    if earlier is None:
        db.commit()  # no transaction of ours may stand in the way of the deploy's
        try:
            deploy_id = request_deploy(
                rt,
                later,
                DeployRequest(app=app, environment=env, ref=head["id"], user=user),
                also=lambda session, deploy: hooks.record_delivery(session, delivery, deploy),
            )
        except AlreadyDelivered:  # a redelivery of the same push got there first
            earlier = hooks.delivered(db, delivery) if delivery else None
        else:
            return JSONResponse(
                schemas.deploy_public(db, deploys.get_deploy(db, deploy_id)), status_code=201
            )
    assert earlier is not None
    return JSONResponse(schemas.deploy_public(db, earlier), status_code=200)
