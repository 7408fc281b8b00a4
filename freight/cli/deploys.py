"""`freight deploy|rollback|promote|status|log|cancel|history`: deploys through the API."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from freight.cli import app, connect
from freight.cli.client import ApiError, task_path
from freight.cli.output import FINAL, deploy_line, follow, out, short, status_text, table, when
from freight.queue_places import places

Follow = Annotated[bool, typer.Option("--follow", "-f", help="Print the log until it ends.")]


def _start(
    app_name: str,
    env: str,
    ref: str | None,
    force: bool,
    follow_log: bool,
    reason: str | None = None,
) -> None:
    with connect() as client:
        deploy = client.post(
            "/deploys/",
            {
                "app": app_name,
                "env": env,
                "ref": ref,
                "force": force,
                "reason": reason,
                "user": client.config.user,
            },
        )
        out.print(Text.assemble("Queued ", deploy_line(deploy)))
        if not follow_log:
            return
        status = follow(client, task_path(deploy["name"]))
    out.print(Text.assemble(f"{deploy['name']} ", status_text(status)))
    if status != "finished":
        sys.exit(1)


Force = Annotated[
    bool,
    typer.Option(help="Skip checks; go past others' locks, freezes, windows, promotion rules."),
]
Reason = Annotated[str | None, typer.Option(help="Why (needed to --force past any of those).")]


@app.command()
def deploy(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(help="Environment.")] = "production",
    ref: Annotated[
        str | None, typer.Option(help="Branch, tag or sha (default: the env's).")
    ] = None,
    force: Force = False,
    reason: Reason = None,
    follow_log: Follow = False,
) -> None:
    """Deploy APP to ENV; with --follow, print the log and exit 1 unless it finished."""
    _start(app_name, env, ref, force, follow_log, reason)


@app.command()
def rollback(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(help="Environment.")],
    force: Force = False,
    reason: Reason = None,
    follow_log: Follow = False,
) -> None:
    """Deploy the commit that was live before the current one (ref `:previous`)."""
    _start(app_name, env, ":previous", force, follow_log, reason)


@app.command()
def promote(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    source: Annotated[str, typer.Argument(metavar="FROM", help="Where it is live now.")],
    target: Annotated[str, typer.Argument(metavar="TO", help="Where it goes.")],
    force: Force = False,
    reason: Reason = None,
    follow_log: Follow = False,
) -> None:
    """Deploy to TO the commit live on FROM (TO's promotion rules say whether it baked long
    enough there)."""
    with connect() as client:
        state = client.get("/releases/", app=app_name)
    live = next((r["sha"] for r in state if r["environment"] == source), None)
    if live is None:
        raise ApiError(f"Nothing is live on {app_name}/{source} to promote", "invalid_request")
    _start(app_name, target, live, force, follow_log, reason)


@app.command()
def status(task: Annotated[str, typer.Argument(metavar="APP/ENV#N")]) -> None:
    """One deploy: status, ref and sha, who, and when."""
    with connect() as client:
        deploy = client.get(f"/deploys/{task_path(task)}/")
    table(
        deploy["name"],
        ("field", "value"),
        [
            ("status", deploy["status"]),
            ("ref", deploy["ref"]),
            ("sha", deploy["sha"]),
            ("user", deploy["user"]["name"] if deploy.get("user") else ""),
            ("created", when(deploy["dateCreated"])),
            ("started", when(deploy["dateStarted"])),
            ("finished", when(deploy["dateFinished"])),
            ("duration", f"{deploy['duration']:.1f}s" if deploy["duration"] is not None else ""),
            ("reason", deploy.get("reason") or ""),
        ],
    )


@app.command()
def log(
    task: Annotated[str, typer.Argument(metavar="APP/ENV#N")], follow_log: Follow = False
) -> None:
    """Print a deploy's log (with --follow, until the deploy ends)."""
    path = task_path(task)
    with connect() as client:
        if follow_log:
            follow(client, path)
            return
        for page in client.log_pages(path):
            for chunk in page["chunks"]:
                sys.stdout.write(chunk["text"])
    sys.stdout.flush()


@app.command()
def cancel(task: Annotated[str, typer.Argument(metavar="APP/ENV#N")]) -> None:
    """Cancel a deploy: a queued one leaves the queue, a running one is stopped."""
    with connect() as client:
        deploy = client.put(
            f"/deploys/{task_path(task)}/", {"status": "cancelled", "user": client.config.user}
        )
    word = "cancelled" if deploy["status"] in FINAL else "asked to stop"
    out.print(f"{deploy['name']} {word}")


@app.command()
def history(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]")] = None,
    env: Annotated[str | None, typer.Argument(metavar="[ENV]")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 25,
) -> None:
    """Recent deploys, newest first (of one app, or one app and environment)."""
    with connect() as client:
        rows = client.get("/deploys/", app=app_name, env=env, limit=limit)
    table(
        None,
        ("deploy", "status", "ref", "sha", "user", "started", "duration"),
        [
            (
                d["name"],
                status_text(d["status"]),
                d["ref"],
                short(d["sha"]),
                d["user"]["name"] if d.get("user") else "",
                when(d["dateStarted"]),
                f"{d['duration']:.0f}s" if d["duration"] is not None else "",
            )
            for d in rows
        ],
    )


@app.command("queue")
def show_queue(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str | None, typer.Argument(metavar="[ENV]", help="Default: every one.")] = None,
) -> None:
    """The deploys waiting for APP/ENV (or each of APP's environments), in the order they will
    run."""
    with connect() as client:
        waiting = client.get("/deploys/", app=app_name, env=env, status="pending", limit=100)
    table(
        None,
        ("#", "deploy", "ref", "sha", "user", "queued"),
        [
            (
                place,
                d["name"],
                d["ref"],
                short(d["sha"]),
                d["user"]["name"] if d.get("user") else "",
                when(d["dateCreated"]),
            )
            for place, d in places(waiting, lambda d: str(d["environment"]))
        ],
    )


@app.command()
def front(task: Annotated[str, typer.Argument(metavar="APP/ENV#N")]) -> None:
    """Move a queued deploy to the front of its queue."""
    with connect() as client:
        deploy = client.put(f"/deploys/{task_path(task)}/", {"position": "front"})
    out.print(f"{deploy['name']} is next")
