"""`freight worker`: join this host to the work pool; `freight workers`: every worker host and
what it runs now."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError
from rich.text import Text

from freight import procs
from freight.cli import app, connect
from freight.cli.output import out, table, when
from freight.cli.up import isolate_commands
from freight.names import Name
from freight.settings import Settings, get_settings


def pidfile(settings: Settings) -> Path:
    return settings.home.resolve() / "run" / "worker.pid"


@app.command()
def worker(
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Deploys run here at once (default FREIGHT_WORKER_LIMIT)."),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            help="A work queue to take deploys from (repeatable; default FREIGHT_WORKER_QUEUES, "
            "'deploys'). Environments name theirs with `work_queue:`; serve only 'prod-net' on "
            "the hosts inside production's network, say.",
        ),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option(
            "--drain",
            help="Ask the worker running from this FREIGHT_HOME to take no more runs, and wait "
            "until the deploys it runs have ended and it has exited.",
        ),
    ] = False,
) -> None:
    """Run deploys on this host: a fork server and a Prefect worker named after the host
    (FREIGHT_HOST_NAME), for the control plane at PREFECT_API_URL (FREIGHT_PREFECT_API_URL,
    FREIGHT_PREFECT_AUTH) and the Freight database at FREIGHT_DATABASE_URL. The first SIGTERM
    or Ctrl-C drains it (no more runs; it exits once its deploys end); a second stops it now."""
    settings = get_settings()
    if limit is not None:
        settings = settings.model_copy(update={"worker_limit": limit})
    if queue:
        try:
            queues = TypeAdapter(list[Name]).validate_python(queue)
        except ValidationError as exc:
            raise typer.BadParameter(exc.errors()[0]["msg"], param_hint="--queue") from None
        settings = settings.model_copy(update={"worker_queues": queues})
    if drain:
        _drain_running(settings)
        return
    from freight.db import get_engine
    from freight.execution.worker_host import WorkerHost, version_conflict
    from freight.stack import running_stack

    settings = isolate_commands(settings)
    engine = get_engine(settings.database_url)
    conflict = version_conflict(engine)
    if conflict is not None:
        out.print(Text(f"Refusing to take runs: {conflict}", style="red"))
        raise SystemExit(1)
    draining, stop = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        (stop if draining.is_set() else draining).set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    say = lambda line: out.print(Text(line, style="yellow"))  # noqa: E731
    host = WorkerHost.of(settings, limit=settings.worker_limit, say=say)
    out.print(
        f"Starting worker {settings.host_name} (up to {settings.worker_limit} deploys at once, "
        f"work queues {', '.join(settings.worker_queues)}) for {settings.prefect_api_url}..."
    )
    path = pidfile(settings)
    try:
        with running_stack(settings, control_plane=False) as stack:
            path.write_text(str(os.getpid()))
            out.print("Ready. Ctrl-C or SIGTERM drains it, a second one stops it now.")
            halt, keep_down = threading.Event(), set[str]()
            failure: list[RuntimeError] = []

            def supervise() -> None:
                try:
                    stack.supervise(halt, say, keep_down=keep_down)
                except RuntimeError as exc:  # a process of this host keeps dying
                    failure.append(exc)
                    stop.set()

            supervisor = threading.Thread(target=supervise, name="supervisor", daemon=True)
            supervisor.start()

            def runs_here() -> bool:  # the fork server's children are this host's flow runs
                server = stack.processes["forkserver"].pid
                return bool(procs.descendants({server}) - {server})

            host.serve(
                lambda: stack.processes.get("worker"),
                runs_here,
                drain=draining,
                stop=stop,
                keep_down=keep_down,
            )
            halt.set()
            supervisor.join()
            if failure:
                raise failure[0]
    except RuntimeError as exc:
        out.print(Text(str(exc), style="red"))
        raise SystemExit(1) from None
    finally:
        path.unlink(missing_ok=True)
    out.print("Drained and stopped." if not stop.is_set() else "Stopped.")


def _drain_running(settings: Settings) -> None:
    path = pidfile(settings)
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        raise SystemExit(f"No worker runs from {settings.home.resolve()}") from None
    if not procs.is_alive(pid):
        path.unlink(missing_ok=True)
        raise SystemExit(f"The worker {pid} of {settings.home.resolve()} is gone")
    os.kill(pid, signal.SIGTERM)
    out.print(f"Draining worker {settings.host_name} (pid {pid}): no more runs are taken")
    while procs.is_alive(pid):
        time.sleep(0.5)
    out.print("It has finished its deploys and exited.")


@app.command()
def workers() -> None:
    """Every worker host: its version, limit, state, last beat and the deploys it runs now."""
    with connect() as client:
        found = client.get("/workers/")
    if not found:
        out.print("No worker has reported yet: start one with `freight worker`.")
        return
    table(
        None,
        ["Worker", "State", "Version", "Queues", "Limit", "Last beat", "Running"],
        [
            [
                w["name"],
                w["state"],
                w["version"],
                ", ".join(w["queues"]),
                str(w["limit"]),
                when(w["lastHeartbeat"]),
                ", ".join(w["running"]) or "-",
            ]
            for w in found
        ],
    )
