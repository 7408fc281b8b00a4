"""`freight releases [APP]`: what runs where, with locks, running deploys and queues."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from freight.cli import app, connect
from freight.cli.output import out, short, status_text, table, when


@app.command()
def releases(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]")] = None,
    env: Annotated[str | None, typer.Argument(metavar="[ENV]")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="With ENV: how many.")] = 25,
    page: Annotated[int, typer.Option(min=1, help="With ENV: which page of that many.")] = 1,
) -> None:
    """Per app and environment: the live sha, who deployed it and when, what runs, what waits.
    With APP and ENV: what was live there, newest first."""
    if env is not None:
        _history(str(app_name), env, limit, page)
        return
    with connect() as client:
        state = client.get("/releases/", app=app_name)
    table(
        None,
        (
            "app",
            "env",
            "live",
            "ref",
            "by",
            "when",
            "now",
            "queued",
            "lock",
            "window",
            "auto-deploy",
        ),
        [
            (
                r["app"],
                r["environment"],
                short(r["sha"]) or "-",
                r["ref"] or "",
                r["user"] or "",
                when(r["dateFinished"]),
                Text.assemble(f"{r['running']['name']} ", status_text("in_progress"))
                if r["running"]
                else "",
                r["queued"] or "",
                "; ".join(
                    f"{'frozen by ' if lock['freeze'] else ''}{lock['owner']}: {lock['reason']}"
                    for lock in r["locks"]
                ),
                r["window"]["text"] if r["window"] else "",
                f"{r['autoDeploy']['branch']}: {r['autoDeploy']['reason']}"
                if r["autoDeploy"]
                else "",
            )
            for r in state
        ],
    )


def _history(app_name: str, env: str, limit: int, page: int) -> None:
    with connect() as client:
        rows = client.get("/releases/", app=app_name, env=env, limit=limit, cursor=page)
    table(
        None,
        ("deploy", "sha", "ref", "by", "finished", "took"),
        [
            (
                d["name"],
                short(d["sha"]),
                d["ref"],
                d["user"]["name"] if d.get("user") else "",
                when(d["dateFinished"]),
                f"{d['duration']:.0f}s" if d["duration"] is not None else "",
            )
            for d in rows
        ],
    )


@app.command()
def commits(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(metavar="ENV")],
    start: Annotated[
        str | None, typer.Option("--from", help="Default: what is live in ENV.")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Default: ENV's default ref.")] = None,
) -> None:
    """The commits between two releases (refs, shas, :current, :previous), newest first: by
    default what a deploy of ENV would ship now."""
    with connect() as client:
        span = client.get("/releases/commits/", app=app_name, env=env, **{"from": start, "to": end})
    count = len(span["commits"])
    out.print(
        f"{short(span['from']) or '(nothing live)'}..{short(span['to'])}: "
        f"{count} commit{'' if count == 1 else 's'}"
    )
    for commit in span["commits"]:
        out.print(
            Text.assemble(
                f"{short(commit['sha'])} {commit['subject']} ",
                (f"({commit['author']['name']})", "dim"),
            )
        )
