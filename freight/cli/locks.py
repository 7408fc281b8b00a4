"""`freight lock|unlock APP [ENV]`: stop deploys by others for a while, with a reason."""

from __future__ import annotations

from typing import Annotated

import typer

from freight.cli import app, connect
from freight.cli.client import ApiError
from freight.cli.output import out, when

Env = Annotated[str | None, typer.Argument(metavar="[ENV]", help="Default: every environment.")]


@app.command()
def lock(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Env = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")] = "",
    duration: Annotated[
        str | None, typer.Option("--for", help="Expire after e.g. 30m, 2h, 1d.")
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
            },
        )
    scope = f"{app_name}/{env}" if env else f"{app_name} (every environment)"
    until = f" until {when(made['dateExpires'])} UTC" if made["dateExpires"] else ""
    out.print(f"Locked {scope} for {made['owner']}: {made['reason']}{until} (lock {made['id']})")


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
