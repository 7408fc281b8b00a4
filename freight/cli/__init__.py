"""The `freight` command line. One module per command group; errors become one readable line."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from freight.errors import FreightError

app = typer.Typer(
    name="freight", help="Freight: deploy apps to environments.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)


def main() -> None:
    from freight.cli import apps, up  # noqa: F401  (commands register themselves on import)

    try:
        app()
    except FreightError as exc:
        err.print(f"[red]error[/red] ({exc.error_name}): {exc.message}", highlight=False)
        sys.exit(1)
