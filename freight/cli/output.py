"""How the command line prints: rich tables and lines, deploy logs as they are. Markup is off:
what the server sends (reasons, refs, names) is printed as it is, colour comes from `Text`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from freight.cli.client import Client

out = Console(highlight=False, soft_wrap=True, markup=False)
FINAL = ("finished", "failed", "cancelled")
STATUS_STYLE = {
    "finished": "green",
    "failed": "red",
    "cancelled": "yellow",
    "in_progress": "cyan",
    "pending": "blue",
}
FOLLOW_INTERVAL = 0.5


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, "white"))


def short(sha: str | None) -> str:
    return (sha or "")[:7]


def when(date: str | None) -> str:
    return (date or "").replace("T", " ")[:19]


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(
            *(
                cell if isinstance(cell, Text) else Text("" if cell is None else str(cell))
                for cell in row
            )
        )
    out.print(grid)


def deploy_line(deploy: dict[str, Any]) -> Text:
    who = deploy["user"]["name"] if deploy.get("user") else "?"
    return Text.assemble(
        f"{deploy['name']} ",
        status_text(deploy["status"]),
        f": {deploy['ref']} ({short(deploy['sha'])}) by {who}",
    )


def follow(client: Client, path: str) -> str:
    """Print a deploy's log as it grows, until the deploy ends; return its final status."""
    offset = 0
    while True:
        # Status first: once it is final, the pages fetched after it hold the whole log.
        status = str(client.get(f"/deploys/{path}/")["status"])
        for page in client.log_pages(path, offset=offset):
            for chunk in page["chunks"]:
                sys.stdout.write(chunk["text"])
            sys.stdout.flush()
            offset = page["nextOffset"]
        if status in FINAL:
            return status
        time.sleep(FOLLOW_INTERVAL)
