"""`freight up`: the whole system on this machine, on embedded defaults, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from freight.cli import app
from freight.demo import ensure_demo_repo
from freight.settings import Settings, get_settings
from freight.system_users import DEPLOY_USER, ensure_user, exposed, unreachable

if TYPE_CHECKING:
    from freight.stack import Stack

out = Console(highlight=False, soft_wrap=True)


@app.command()
def up() -> None:
    """Start the whole system here: the embedded PostgreSQL, Prefect (server, work pool,
    deployments, worker), the API and the reconciler, with the catalogue synced."""
    settings = get_settings()
    if "allow_local_repositories" not in settings.model_fields_set:
        # One machine and its owner: the demo app's repository is on this disk. Every process
        # of the stack gets the settings from here (Settings.to_env).
        settings = settings.model_copy(update={"allow_local_repositories": True})
    _serve(settings, worker=True)


@app.command()
def server() -> None:
    """Start the control plane here and no worker: the database (embedded unless
    FREIGHT_DATABASE_URL names one), Prefect's server, work pool and deployments, the API and
    the reconciler. Deploys run on hosts that run `freight worker`."""
    _serve(get_settings(), worker=False)


def _serve(settings: Settings, *, worker: bool) -> None:
    # Here, not at the top: every other command would pay for importing the stack.
    from freight import catalogue
    from freight.execution.setup import first_admin_key, sync_catalogue
    from freight.stack import running_stack

    settings = isolate_commands(settings)
    for spec, _ in catalogue.load_dir(
        settings.catalogue_dir, allow_local=settings.allow_local_repositories
    ):
        if spec.name == "demo" and ensure_demo_repo(Path(spec.repository)):
            out.print(f"Created the demo repository at {spec.repository}")
    admin_key: list[str | None] = []

    def prepare() -> None:
        report = sync_catalogue(settings, settings.catalogue_dir)
        total = len(report.created) + len(report.updated) + len(report.unchanged)
        out.print(f"Catalogue: {total} apps")
        admin_key.append(first_admin_key(settings))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    what = "worker and API" if worker else "API (no worker: deploys run on `freight worker` hosts)"
    out.print(f"Starting the database, Prefect server, work pool, {what}...")
    try:
        with running_stack(settings, worker=worker, prepare=prepare, say=out.print) as stack:
            _welcome(settings, stack, admin_key[0] if admin_key else None)
            say = lambda line: out.print(Text(line, style="yellow"))  # noqa: E731
            beating = _beat_local_worker(settings, stack, stop, say) if worker else None
            stack.supervise(stop, say=say)
            out.print("Stopping...")
            if beating is not None:
                beating.join()
    except RuntimeError as exc:
        stop.set()
        out.print(Text(str(exc), style="red"))
        out.print("Stopped.")
        raise SystemExit(1) from None
    out.print("Stopped.")


def _beat_local_worker(
    settings: Settings, stack: Stack, stop: threading.Event, say: Callable[[str], None]
) -> threading.Thread:
    """This machine's worker reports itself as any worker host does (`freight workers`)."""
    from freight.execution.worker_host import WorkerHost

    # It is its own control plane: no other version to compare with.
    host = WorkerHost.of(settings, limit=settings.concurrent_deploys, say=say, checks_version=False)
    thread = threading.Thread(
        target=host.serve,
        args=(lambda: stack.processes.get("worker"), lambda: False),
        kwargs={"drain": threading.Event(), "stop": stop, "keep_down": set()},
        name="worker-beat",
        daemon=True,
    )
    thread.start()
    return thread


def isolate_commands(settings: Settings) -> Settings:
    """Deploy commands run as a user of their own, who cannot read Freight's secrets: made
    here when started by root. Otherwise say loudly that they run with Freight's rights."""
    from freight.stack import guard_home

    # Files Freight makes are its own; the checkouts are given to the command's user.
    os.umask(0o077)
    if os.geteuid() == 0 and "run_as" not in settings.model_fields_set:
        made = ensure_user(DEPLOY_USER, "to run deploy commands (they must not read secrets)")
        if made:
            out.print(made[0].upper() + made[1:])
        settings = settings.model_copy(update={"run_as": DEPLOY_USER})
    guard_home(settings)
    problem = exposed(settings.run_as)
    if problem is not None:
        out.print(Text(f"WARNING: {problem}", style="bold red"))
    elif settings.run_as and (blocked := unreachable(settings.workspaces, settings.run_as)):
        message = (
            f"{settings.run_as} cannot enter {blocked}, above the checkouts of the deploys it "
            "runs: give that directory o+x, or move FREIGHT_HOME"
        )
        out.print(Text(message, style="red"))
        raise SystemExit(1)
    return settings


def _welcome(settings: Settings, stack: Stack, admin_key: str | None) -> None:
    auth = settings.home.resolve() / "prefect-auth"
    out.print(f"Prefect UI:   {stack.ui_url}  (it asks for the auth string in {auth})")
    out.print(f"Prefect API:  {settings.prefect_api_url}")
    out.print(f"Dashboard:    {stack.api_url}/  (log in with an API key)")
    out.print(f"Freight API:  {stack.api_url}/api/0/  (docs: {stack.api_url}/api/0/docs)")
    if admin_key:
        out.print(f"Admin key:    {admin_key}")
        out.print("              (shown this once; it is stored hashed)")
    else:
        out.print(
            "Admin key:    made on the first start; for a new one run "
            "`.venv/bin/freight keys create-admin`"
        )
    out.print(f"Freight DB:   {settings.database_url}")
    out.print(f"Logs:         {stack.log_dir}")
    out.print(
        f'Deploy the demo: PREFECT_API_AUTH_STRING="$(cat {auth})" PREFECT_API_URL='
        f"{settings.prefect_api_url} .venv/bin/prefect deployment run deploy/deploy "
        "--param app=demo --param env=staging"
    )
    out.print(
        f"  or:           FREIGHT_URL={stack.api_url} FREIGHT_API_KEY=<admin key> "
        ".venv/bin/freight deploy demo staging --follow"
    )
    out.print("Press Ctrl-C to stop.")
