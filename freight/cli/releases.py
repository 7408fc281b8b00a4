"""`freight releases [APP]`: what runs where, with locks, running deploys and queues."""

from __future__ import annotations

from typing import Annotated

import typer

from freight.cli import app, connect
from freight.cli.output import short, status_text, table, when


@app.command()
def releases(app_name: Annotated[str | None, typer.Argument(metavar="[APP]")] = None) -> None:
    """Per app and environment: the live sha, who deployed it and when, what runs, what waits."""
    with connect() as client:
        state = client.get("/releases/", app=app_name)
    table(
        None,
        ("app", "env", "live", "ref", "by", "when", "now", "queued", "lock", "auto-deploy"),
        [
            (
                r["app"],
                r["environment"],
                short(r["sha"]) or "-",
                r["ref"] or "",
                r["user"] or "",
                when(r["dateFinished"]),
                f"{r['running']['name']} {status_text('in_progress')}" if r["running"] else "",
                r["queued"] or "",
                "; ".join(f"{lock['owner']}: {lock['reason']}" for lock in r["locks"]),
                f"{r['autoDeploy']['branch']}: {r['autoDeploy']['reason']}"
                if r["autoDeploy"]
                else "",
            )
            for r in state
        ],
    )
