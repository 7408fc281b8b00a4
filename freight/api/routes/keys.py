"""API keys: create (the key is shown once), list, revoke. Admin only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field

from freight.api import schemas
from freight.api.deps import Admin, SessionDep, Values
from freight.api.inputs import Arguments, Flag, RowId, documented, parse
from freight.api.routing import Router
from freight.service import keys

router = Router(tags=["keys"])


def _names(value: object) -> object:
    return (
        [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, str)
        else value
    )


Names = Annotated[list[str], BeforeValidator(_names)]


class KeyCreate(Arguments):
    name: str = Field(min_length=1, max_length=200)
    scopes: Names
    apps: Names | None = None


class KeyQuery(Arguments):
    revoked: Flag = False


@router.get("/keys/", operation_id="list_keys", openapi_extra=documented(KeyQuery, body=False))
def list_keys(db: SessionDep, who: Admin, values: Values) -> list[dict[str, Any]]:
    who.require_unlimited()
    query = parse(KeyQuery, values)
    return [schemas.key_public(row) for row in keys.list_keys(db, include_revoked=query.revoked)]


@router.post(
    "/keys/",
    status_code=201,
    operation_id="create_key",
    openapi_extra=documented(KeyCreate, body=True),
)
def create_key(db: SessionDep, who: Admin, values: Values) -> JSONResponse:
    who.require_unlimited()
    args = parse(KeyCreate, values)
    row, key = keys.create_key(
        db, name=args.name, scopes=args.scopes, apps=args.apps, created_by=who.name
    )
    body = schemas.KeyCreated(**schemas.key_public(row), key=key)
    return JSONResponse(body, status_code=201)


@router.delete("/keys/{key_id}/", operation_id="revoke_key")
def revoke_key(db: SessionDep, who: Admin, key_id: RowId) -> dict[str, Any]:
    who.require_unlimited()
    return schemas.key_public(keys.revoke_key(db, key_id, by=who.name))
