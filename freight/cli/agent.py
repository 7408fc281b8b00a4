"""`freight agent`: the agent of this machine (see freight/agent/); `freight machines`: every
machine whose agent checks in, what it runs, and whether that drifted from the environment."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.text import Text

from freight.cli import app, connect
from freight.cli.output import out, short, table, when

STATUS_STYLE = {"online": "green", "stale": "yellow", "lost": "red"}


@app.command()
def agent(
    config: Annotated[
        Path, typer.Option("--config", help="The agent's YAML file (url, key, name, apps).")
    ] = Path("/etc/freight/agent.yaml"),
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Check in once (and run what Freight orders to its end), then exit: for cron.",
        ),
    ] = False,
) -> None:
    """Report what runs on this machine to Freight, and deploy it here when Freight asks (an
    environment with `provider: {type: pull}`). Talks only outbound HTTP(S) to Freight, and
    keeps going while Freight is away. SIGTERM or Ctrl-C stops it (and its running command)."""
    from freight.agent.config import command_user, load
    from freight.agent.service import Agent

    settings = load(config)
    user = command_user(settings, config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("freight.agent")
    if user is None:
        log.warning(
            "Commands run as the agent's own user and could read its key: set run_as to an "
            "unprivileged user (the agent running as root)"
        )
    service = Agent(settings, user=user)
    if once:
        raise SystemExit(service.once())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        service.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "Agent %s checks in with %s every %gs for %s",
        settings.name,
        settings.url,
        settings.interval,
        ", ".join(f"{e.app}/{e.env}" for e in settings.apps),
    )
    service.serve()


@app.command()
def machines(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]")] = None,
    env: Annotated[str | None, typer.Argument(metavar="[ENV]")] = None,
    status: Annotated[str | None, typer.Option(help="Only machines online, stale or lost.")] = None,
    label: Annotated[
        str | None, typer.Option(help="Only machines with this KEY=VALUE label.")
    ] = None,
) -> None:
    """Every machine whose agent checks in: its status, last check-in, and per app the version
    it runs against the environment's live sha (drift, and how many commits apart)."""
    params = {
        name: value
        for name, value in (("app", app_name), ("env", env), ("status", status), ("label", label))
        if value is not None
    }
    with connect() as client:
        found = client.get("/machines/", **params)
    if not found:
        out.print("No machine has checked in: run `freight agent` on one.")
        return
    rows = []
    drifted = lost = 0
    for machine in found:
        lost += machine["status"] == "lost"
        for state in machine["apps"]:
            if (app_name and state["app"] != app_name) or (env and state["env"] != env):
                continue
            drifted += state["drift"]
            rows.append(
                [
                    machine["name"],
                    Text(machine["status"], style=STATUS_STYLE.get(machine["status"], "white")),
                    when(machine["lastSeen"]),
                    f"{state['app']}/{state['env']}",
                    state["version"] or Text(state["error"] or "?", style="red"),
                    short(state["liveSha"]) or "-",
                    _drift(state),
                ]
            )
    table(None, ["Machine", "Status", "Last check-in", "App", "Runs", "Live", "Drift"], rows)
    out.print(f"{len(found)} machine(s), {drifted} drifted, {lost} lost")


def _drift(state: dict[str, object]) -> Text:
    if not state["drift"]:
        return Text("no", style="green")
    behind, ahead = state.get("commitsBehind"), state.get("commitsAhead")
    apart = []
    if behind:
        apart.append(f"{behind} behind")
    if ahead:
        apart.append(f"{ahead} ahead")
    return Text("yes" + (f" ({', '.join(apart)})" if apart else ""), style="red")
