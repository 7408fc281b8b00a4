"""`freight apps validate|sync`: check the catalogue, and apply it to the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from freight import catalogue
from freight.cli import app as root
from freight.settings import get_settings

apps = typer.Typer(help="The app catalogue (deployments/*.yaml).", no_args_is_help=True)
root.add_typer(apps, name="apps")
out = Console(highlight=False, soft_wrap=True)

Directory = Annotated[
    Path | None, typer.Argument(help="Catalogue directory (default: FREIGHT_CATALOGUE_DIR).")
]


@apps.command()
def validate(directory: Directory = None) -> None:
    """Check every catalogue file; print each app, or the first problem (file, field, why)."""
    for spec, path in catalogue.load_dir(directory or get_settings().catalogue_dir):
        envs = ", ".join(spec.environments)
        out.print(f"[green]ok[/green] {spec.name} ({path.name}): {spec.provider.type}; {envs}")


@apps.command()
def sync(directory: Directory = None) -> None:
    """Validate the whole catalogue, then create or update its apps in the Freight database."""
    from freight.service.setup import sync_catalogue

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
