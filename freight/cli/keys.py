"""`freight keys create|list|revoke`: API keys (an admin key is needed)."""

from __future__ import annotations

from typing import Annotated

import typer

from freight.cli import app, connect
from freight.cli.output import out, table, when

keys = typer.Typer(
    help="API keys: scopes read < deploy < admin, and agent (a machine's `freight agent`: "
    "check-ins and pull deploys only), optionally for some apps.",
    no_args_is_help=True,
)
app.add_typer(keys, name="keys")


@keys.command("create")
def create(
    name: str,
    scope: Annotated[str, typer.Option(help="read, deploy, admin or agent.")] = "deploy",
    apps: Annotated[
        list[str] | None, typer.Option("--app", help="Limit to this app (repeat).")
    ] = None,
) -> None:
    """Make a key; it is shown once, here."""
    with connect() as client:
        made = client.post("/keys/", {"name": name, "scopes": [scope], "apps": apps or None})
    out.print(
        f"Key {made['id']} ({made['name']}, {scope}{' for ' + ', '.join(apps) if apps else ''}):"
    )
    out.print(made["key"])


@keys.command("list")
def list_keys() -> None:
    """Keys in use (never the keys themselves)."""
    with connect() as client:
        rows = client.get("/keys/")
    table(
        None,
        ("id", "name", "starts", "scopes", "apps", "created", "last used"),
        [
            (
                k["id"],
                k["name"],
                k["prefix"] + "…",
                ", ".join(k["scopes"]),
                ", ".join(k["apps"] or ["all"]),
                when(k["dateCreated"]),
                when(k["dateLastUsed"]),
            )
            for k in rows
        ],
    )


@keys.command("revoke")
def revoke(key_id: int) -> None:
    """Revoke a key by its id: it stops working at once."""
    with connect() as client:
        gone = client.delete(f"/keys/{key_id}/")
    out.print(f"Revoked key {gone['id']} ({gone['name']})")


@keys.command("create-admin")
def create_admin(
    name: Annotated[str, typer.Option(help="A name to tell it by.")] = "admin",
) -> None:
    """On the server's machine: make an admin key straight in its database (a first or lost
    key; needs no API key)."""
    from freight.execution.setup import new_admin_key
    from freight.settings import get_settings

    out.print(new_admin_key(get_settings(), name))
