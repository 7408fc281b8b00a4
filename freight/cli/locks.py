"""`freight lock|unlock APP [ENV]`: stop deploys by others for a while, with a reason;
`freight freeze APP [ENV]`: stop everyone's deploys for a set period."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from freight.cli import app, connect
from freight.cli.client import ApiError
from freight.cli.output import out, table, when

Env = Annotated[str | None, typer.Argument(metavar="[ENV]", help="Default: every environment.")]


@app.command()
def lock(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Env = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")] = "",
    duration: Annotated[
        str | None, typer.Option("--for", help="Expire after e.g. 30m, 2h, 1d.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Expire at a time: 2026-12-24T18:00 (your local time) or with a zone."),
    ] = None,
) -> None:
    """Lock APP (or one ENV): only you may deploy it until you unlock it or it expires."""
    if not reason.strip():
        raise ApiError("A lock needs a reason: --reason '...'", "missing_argument")
    with connect() as client:
        made = client.post(
            "/locks/",
            {
                "app": app_name,
                "env": env,
                "reason": reason,
                "owner": client.config.user,
                "for": duration,
                "expires": _moment(until, "--until") if until else None,
            },
        )
    scope = f"{app_name}/{env}" if env else f"{app_name} (every environment)"
    until = f" until {when(made['dateExpires'])} UTC" if made["dateExpires"] else ""
    out.print(f"Locked {scope} for {made['owner']}: {made['reason']}{until} (lock {made['id']})")


def _moment(text: str, option: str) -> str:
    """An ISO time as UTC; one without a zone is the user's local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            f"{option}: '{text}' is not a time; use e.g. 2026-12-24T18:00", "invalid_request"
        ) from None
    return moment.astimezone(UTC).isoformat()


@app.command()
def freeze(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Env = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")] = "",
    start: Annotated[
        str | None,
        typer.Option("--from", help="Start at 2026-12-20T18:00 (your local time); default now."),
    ] = None,
    until: Annotated[
        str, typer.Option(help="End at 2027-01-04T08:00 (your local time) or with a zone.")
    ] = "",
) -> None:
    """Freeze APP (or one ENV): nobody deploys it (forcing needs a reason) from --from until
    --until. Announced when it begins and when it ends; `freight unlock` lifts it early."""
    if not reason.strip():
        raise ApiError("A freeze needs a reason: --reason '...'", "missing_argument")
    if not until:
        raise ApiError("A freeze needs an end: --until 2027-01-04T08:00", "missing_argument")
    with connect() as client:
        made = client.post(
            "/freezes/",
            {
                "app": app_name,
                "env": env,
                "reason": reason,
                "owner": client.config.user,
                "from": _moment(start, "--from") if start else None,
                "until": _moment(until, "--until"),
            },
        )
    scope = f"{app_name}/{env}" if env else f"{app_name} (every environment)"
    since = f"from {when(made['dateStarts'])} UTC " if made["dateStarts"] else ""
    out.print(
        f"Frozen {scope} {since}until {when(made['dateExpires'])} UTC: {made['reason']} "
        f"(lock {made['id']})"
    )


@app.command()
def unlock(app_name: Annotated[str, typer.Argument(metavar="APP")], env: Env = None) -> None:
    """Release the locks on APP (or on ENV, and the app-wide ones)."""
    with connect() as client:
        found = client.get("/locks/", app=app_name, env=env)
        if not found:
            raise ApiError(f"{app_name}{'/' + env if env else ''} is not locked", "invalid_request")
        for held in found:
            client.delete(f"/locks/{held['id']}/", user=client.config.user)
            scope = f"{app_name}/{held['environment']}" if held["environment"] else app_name
            out.print(f"Unlocked {scope} (was {held['owner']}: {held['reason']})")


def _released(held: dict[str, str | None]) -> str:
    if held["releasedBy"] == "expired" or (not held["active"] and not held["releasedBy"]):
        return f"expired {when(held['dateReleased'] or held['dateExpires'])}"
    return f"{when(held['dateReleased'])} by {held['releasedBy']}" if held["releasedBy"] else ""


@app.command("locks")
def list_locks(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]")] = None,
    env: Env = None,
    history: Annotated[bool, typer.Option("--history", help="Released ones too.")] = False,
) -> None:
    """The locks in force (or, with --history, every lock): who locked what, why, until when,
    and who unlocked it."""
    with connect() as client:
        found = client.get("/locks/", app=app_name, env=env, history="true" if history else None)
    table(
        None,
        ("lock", "kind", "app", "env", "owner", "reason", "since", "until", "released"),
        [
            (
                held["id"],
                "freeze" if held["freeze"] else "lock",
                held["app"],
                held["environment"] or "(all)",
                held["owner"],
                held["reason"],
                when(held["dateStarts"] or held["dateCreated"]),
                when(held["dateExpires"]),
                _released(held),
            )
            for held in found
        ],
    )
