"""The `freight` command line: one module per command group. Commands talk to the API (see
`client.py`); `up` and `apps validate|sync` work on this machine. Errors are one readable line."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from freight.cli.client import ApiError, Client, Config
from freight.errors import FreightError

app = typer.Typer(
    name="freight", help="Freight: deploy apps to environments.", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)


def connect() -> Client:
    return Client(Config.load())


def main() -> None:
    from freight.cli import (  # noqa: F401  (commands register on import)
        agent,
        apps,
        deploys,
        keys,
        locks,
        releases,
        up,
        worker,
    )

    try:
        app()
    except (FreightError, ApiError) as exc:
        err.print(f"[red]error[/red] ({exc.error_name}): {escape(exc.message)}", highlight=False)
        sys.exit(1)
