"""Apps and their repositories: lookup, typed config, and syncing the catalogue into the DB."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.catalogue import AppSpec, EnvironmentConfig
from freight.db import App, AppSource, Deploy, DeployStatus, Repository
from freight.errors import Conflict, NotFound
from freight.windows import Window


def find_app(session: Session, name: str) -> App | None:
    return session.scalar(select(App).where(App.name == name))


def not_found(name: str) -> NotFound:
    """What an unknown app answers, and so also an app that a key may not see."""
    return NotFound(f"App '{name}' not found")


def get_app(session: Session, name: str, *, apps: frozenset[str] | None = None) -> App:
    """The app of this name; with `apps`, one outside them answers as an unknown one."""
    app = find_app(session, name) if apps is None or name in apps else None
    if app is None:
        raise not_found(name)
    return app


def spec_of(app: App) -> AppSpec:
    return AppSpec.model_validate(app.config)


def environment_names(app: App) -> list[str]:
    """The app's environments, in their order, without validating its whole config again
    (it was validated when saved): cheap enough for a page of hundreds of apps."""
    return list(app.config["environments"])


def windows_of(app: App, environment: str) -> list[Window]:
    """The environment's deploy windows (its own, else the app's), without validating the whole
    config again: /releases/ asks this for every environment of every app."""
    own = app.config["environments"][environment].get("windows")
    found = (app.config.get("windows") or []) if own is None else own
    return _WINDOWS.validate_python(found) if found else []


_WINDOWS = TypeAdapter(list[Window])


def default_ref_of(app: App, environment: str) -> str:
    """The environment's default ref, read from the stored config alone (see windows_of)."""
    return str(app.config["environments"][environment].get("default_ref") or "main")


def is_protected(app: App, environment: str) -> bool:
    """Production-like: deploying there from the dashboard asks for its name to be typed."""
    return bool(app.config["environments"][environment].get("protected"))


def environment_of(app: App, environment: str) -> EnvironmentConfig:
    return spec_of(app).environment(environment)


def get_or_create_repository(session: Session, url: str) -> Repository:
    repository = session.scalar(select(Repository).where(Repository.url == url))
    if repository is None:
        repository = Repository(url=url)
        session.add(repository)
        session.flush()
    return repository


def repository_urls(session: Session) -> set[str]:
    """The repositories some app deploys from."""
    return set(
        session.scalars(select(Repository.url).join(App, App.repository_id == Repository.id))
    )


def save_app(
    session: Session, spec: AppSpec, *, source: AppSource, source_file: str | None = None
) -> App:
    """Create or replace the app described by spec."""
    repository = get_or_create_repository(session, spec.repository)
    app = find_app(session, spec.name)
    if app is None:
        app = App(name=spec.name, config={}, repository_id=repository.id)
        session.add(app)
    app.repository_id = repository.id
    app.repository = repository
    app.config = spec.model_dump(mode="json")
    app.source = source
    app.source_file = source_file
    session.flush()
    return app


def list_apps(session: Session, *, name: str | None = None) -> list[App]:
    query = select(App).order_by(App.name)
    if name is not None:
        query = query.where(App.name == name)
    return list(session.scalars(query))


def _refuse_catalogue_owned(app: App, doing: str) -> None:
    if app.source == AppSource.CATALOGUE:
        raise Conflict(
            f"App {app.name} is defined by the catalogue file {app.source_file}: "
            f"{doing} it there and run `freight apps sync`"
        )


def create_app(session: Session, spec: AppSpec) -> App:
    """An app made through the API (the catalogue's apps come from `sync_catalogue`)."""
    existing = find_app(session, spec.name)
    if existing is not None:
        raise Conflict(f"App {spec.name} already exists")
    return save_app(session, spec, source=AppSource.API)


def update_app(session: Session, app: App, spec: AppSpec) -> App:
    _refuse_catalogue_owned(app, "change")
    if spec.name != app.name and find_app(session, spec.name) is not None:
        raise Conflict(f"App {spec.name} already exists")
    repository = get_or_create_repository(session, spec.repository)
    app.name = spec.name
    app.repository_id = repository.id
    app.repository = repository
    app.config = spec.model_dump(mode="json")
    session.flush()
    return app


def delete_app(session: Session, app: App) -> None:
    """Delete an app and its history; refused while one of its deploys runs."""
    _refuse_catalogue_owned(app, "remove")
    running = session.scalar(
        select(Deploy.id).where(Deploy.app_id == app.id, Deploy.status == DeployStatus.IN_PROGRESS)
    )
    if running is not None:
        raise Conflict(f"App {app.name} has a deploy in progress; cancel it first")
    session.delete(app)
    session.flush()


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Catalogue apps whose file is gone: kept, because their deploy history must survive.
    orphaned: list[str] = field(default_factory=list)


def sync_catalogue(session: Session, entries: list[tuple[AppSpec, Path]]) -> SyncReport:
    """Apply a fully validated catalogue (spec, file) list in the caller's transaction."""
    report = SyncReport()
    for spec, file in entries:
        path = str(file)
        existing = find_app(session, spec.name)
        if existing is None:
            report.created.append(spec.name)
        elif existing.config == spec.model_dump(mode="json") and existing.source_file == path:
            report.unchanged.append(spec.name)
            continue
        else:
            report.updated.append(spec.name)
        save_app(session, spec, source=AppSource.CATALOGUE, source_file=path)
    names = {spec.name for spec, _ in entries}
    report.orphaned = sorted(
        app.name
        for app in session.scalars(select(App).where(App.source == AppSource.CATALOGUE))
        if app.name not in names
    )
    return report
