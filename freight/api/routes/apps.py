"""Apps: list, create, show, edit (config and Freight's `lockedReason`), delete.

Freight API 0 spells app config its own way (`provider` + `provider_config`, plugins as
`{"type", "config"}`, environments as `{"defaultRef"}`); it is translated here to the catalogue's
`AppSpec`, which validates it exactly as it validates a catalogue file.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import BackgroundTasks
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError
from sqlalchemy.orm import Session

from freight import vcs
from freight.api import schemas
from freight.api.deps import Admin, Reader, Runtime, RuntimeDep, SessionDep, Values
from freight.api.errors import describe_validation
from freight.api.inputs import Arguments, JsonField, documented, parse
from freight.api.routes.locks import announce_later
from freight.api.routing import Router
from freight.catalogue import AppSpec
from freight.db import App
from freight.errors import (
    InvalidCheck,
    InvalidConfig,
    InvalidEnvironment,
    InvalidNotifier,
    InvalidProvider,
    InvalidRequest,
    MissingArgument,
)
from freight.service import apps, locks
from freight.service.keys import Principal, Scope

router = Router(tags=["apps"])

Json = Annotated[Any, JsonField]
UNLOCK = (None, False, "", "false", "False", "null", "None")


class AppQuery(Arguments):
    name: str | None = None


class AppFields(Arguments):
    """Freight's app fields; on edit, each one given replaces the current value."""

    name: str | None = None
    repository: str | None = None
    provider: str | None = None
    provider_config: Json = None
    providerConfig: Json = None
    notifiers: Json = None
    checks: Json = None
    environments: Json = None
    lockedReason: Any = Field(default=None)
    # Sent back by clients that edit what they read (freight-cli's `app edit`); not editable.
    changeLabels: Json = None
    source: str | None = None
    sourceFile: str | None = None


# Freight's error names say which part of the config was wrong.
SECTION_ERRORS: dict[str, type[InvalidRequest]] = {
    "provider": InvalidProvider,
    "checks": InvalidCheck,
    "notifiers": InvalidNotifier,
    "environments": InvalidEnvironment,
}


def _plugins(value: object, field: str) -> list[dict[str, Any]]:
    wrong = SECTION_ERRORS[field]
    if not isinstance(value, list):
        raise wrong(f"{field}: must be a list of {{type, config}} objects")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise wrong(f"{field}[{index}]: needs a 'type'")
        config = item.get("config", {k: v for k, v in item.items() if k != "type"})
        if not isinstance(config, dict):
            raise wrong(f"{field}[{index}].config: must be an object")
        out.append({**config, "type": item["type"]})
    return out


def _environments(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise InvalidEnvironment("environments: must be an object of environment names")
    out = {}
    for name, settings in value.items():
        if not isinstance(settings, dict):
            raise InvalidEnvironment(f"environments.{name}: must be an object")
        settings = dict(settings)
        if "defaultRef" in settings:
            settings["default_ref"] = settings.pop("defaultRef")
        out[name] = settings
    return out


def _spec(fields: AppFields, current: AppSpec | None, *, allow_local: bool) -> AppSpec:
    """The AppSpec the fields describe, on top of the current one when editing."""
    data: dict[str, Any] = current.model_dump(mode="json") if current else {}
    for key in ("name", "repository"):
        if getattr(fields, key) is not None:
            data[key] = getattr(fields, key)
    config = fields.providerConfig if fields.providerConfig is not None else fields.provider_config
    if fields.provider is not None or config is not None:
        kind = fields.provider or data.get("provider", {}).get("type")
        if kind is None:
            raise InvalidConfig("provider: required")
        if config is None:
            config = {k: v for k, v in data.get("provider", {}).items() if k != "type"}
        if not isinstance(config, dict):
            raise InvalidProvider("provider_config: must be an object")
        data["provider"] = {**config, "type": kind}
    for key in ("notifiers", "checks"):
        value = getattr(fields, key)
        if value is not None:
            data[key] = _plugins(value, key)
    if fields.environments is not None:
        data["environments"] = _environments(fields.environments)
    data.setdefault("environments", {"production": {"default_ref": "main"}})
    try:
        spec = AppSpec.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    if fields.repository is not None:
        vcs.check_url(spec.repository, allow_local=allow_local)
    return spec


def _config_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    section = str(first["loc"][0]) if first["loc"] else ""
    return SECTION_ERRORS.get(section, InvalidConfig)(describe_validation([first]))


def _set_lock(
    db: Session, rt: Runtime, later: BackgroundTasks, app: App, reason: object, who: Principal
) -> None:
    if reason in UNLOCK:
        changed = locks.set_app_locked_reason(db, app, None, by=who.user)
    elif isinstance(reason, str):
        changed = locks.set_app_locked_reason(db, app, reason.strip(), by=who.user)
    else:
        raise InvalidRequest("lockedReason: must be a string (locks) or false/null (unlocks)")
    for lock, event in changed:
        announce_later(later, rt, lock, event, by=who.user)


@router.get("/apps/", operation_id="list_apps", openapi_extra=documented(AppQuery, body=False))
def list_apps(db: SessionDep, who: Reader, values: Values) -> list[dict[str, Any]]:
    query = parse(AppQuery, values)
    return [
        schemas.app_public(db, app)
        for app in apps.list_apps(db, name=query.name)
        if who.allows_app(app.name)
    ]


@router.post(
    "/apps/",
    status_code=201,
    operation_id="create_app",
    openapi_extra=documented(AppFields, body=True),
)
def create_app(
    db: SessionDep, rt: RuntimeDep, who: Admin, values: Values, later: BackgroundTasks
) -> JSONResponse:
    fields = parse(AppFields, values)
    if not fields.name or not fields.repository:
        missing = "name" if not fields.name else "repository"
        raise MissingArgument(f"Missing required argument '{missing}'")
    who.require(Scope.ADMIN, fields.name)
    spec = _spec(fields, None, allow_local=rt.settings.allow_local_repositories)
    app = apps.create_app(db, spec)
    if fields.lockedReason not in UNLOCK:
        _set_lock(db, rt, later, app, fields.lockedReason, who)
    return JSONResponse(schemas.app_public(db, app), status_code=201)


@router.get("/apps/{app}/", operation_id="show_app")
def show_app(db: SessionDep, who: Reader, app: str) -> dict[str, Any]:
    who.require(Scope.READ, app)
    return schemas.app_details(db, apps.get_app(db, app))


@router.put(
    "/apps/{app}/", operation_id="update_app", openapi_extra=documented(AppFields, body=True)
)
def update_app(
    db: SessionDep, rt: RuntimeDep, who: Admin, app: str, values: Values, later: BackgroundTasks
) -> dict[str, Any]:
    who.require(Scope.ADMIN, app)
    row = apps.get_app(db, app)
    fields = parse(AppFields, values)
    current = apps.spec_of(row)
    spec = _spec(fields, current, allow_local=rt.settings.allow_local_repositories)
    # A lock is state, not config: it may change on an app whose config a catalogue file owns.
    if spec != current:
        apps.update_app(db, row, spec)
    if "lockedReason" in fields.model_fields_set:
        _set_lock(db, rt, later, row, fields.lockedReason, who)
    return schemas.app_details(db, row)


@router.delete("/apps/{app}/", operation_id="delete_app")
def delete_app(db: SessionDep, who: Admin, app: str) -> dict[str, str]:
    who.require(Scope.ADMIN, app)
    row = apps.get_app(db, app)
    app_id = row.id
    apps.delete_app(db, row)
    return {"id": str(app_id)}
