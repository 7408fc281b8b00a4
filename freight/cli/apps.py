"""`freight apps validate|sync`: check the catalogue, and apply it to the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from freight.cli import app as root
from freight.cli import connect
from freight.cli.output import table
from freight.settings import get_settings

apps = typer.Typer(help="Apps (through the API), and the catalogue (deployments/*.yaml).")
root.add_typer(apps, name="apps")
out = Console(highlight=False, soft_wrap=True)


@apps.callback(invoke_without_command=True)
def list_apps(context: typer.Context) -> None:
    """Without a subcommand: the apps, their environments and locks."""
    if context.invoked_subcommand is not None:
        return
    with connect() as client:
        rows = client.get("/apps/")
    table(
        None,
        ("app", "environments", "repository", "source", "locked"),
        [
            (
                a["name"],
                ", ".join(a["environments"]),
                a["repository"],
                a["source"],
                a["lockedReason"] or "",
            )
            for a in rows
        ],
    )


@apps.command()
def show(name: str) -> None:
    """One app's whole config."""
    with connect() as client:
        data = client.get(f"/apps/{name}/")
    out.print_json(data=data)


Directory = Annotated[
    Path | None, typer.Argument(help="Catalogue directory (default: FREIGHT_CATALOGUE_DIR).")
]


@apps.command()
def validate(directory: Directory = None) -> None:
    """Check every catalogue file; print each app, or the first problem (file, field, why)."""
    # Here, not at the top: every other command would pay for importing the providers.
    from freight import catalogue

    settings = get_settings()
    entries = catalogue.load_dir(
        directory or settings.catalogue_dir, allow_local=settings.allow_local_repositories
    )
    for spec, path in entries:
        envs = ", ".join(spec.environments)
        out.print(
            Text.assemble(
                ("ok", "green"), f" {spec.name} ({path.name}): {spec.provider.type}; {envs}"
            )
        )


@apps.command()
def sync(directory: Directory = None) -> None:
    """Validate the whole catalogue, then create or update its apps in the Freight database."""
    from freight.execution.setup import sync_catalogue

    settings = get_settings()
    report = sync_catalogue(settings, directory or settings.catalogue_dir)
    for label, names in (
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("no longer in the catalogue (kept)", report.orphaned),
    ):
        if names:
            out.print(f"{label}: {', '.join(names)}")
