"""`freight up`: the whole system on this machine, on embedded defaults, until Ctrl-C."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from freight import catalogue
from freight.cli import app
from freight.demo import ensure_demo_repo
from freight.settings import get_settings
from freight.stack import running_stack

out = Console(highlight=False, soft_wrap=True)


@app.command()
def up() -> None:
    """Migrate, sync the catalogue, start Prefect (server, work pool, deployments, worker)."""
    from freight.service.setup import first_admin_key, sync_catalogue

    settings = get_settings()
    for spec, _ in catalogue.load_dir(settings.catalogue_dir):
        if spec.name == "demo" and ensure_demo_repo(Path(spec.repository)):
            out.print(f"Created the demo repository at {spec.repository}")
    report = sync_catalogue(settings, settings.catalogue_dir)
    out.print(
        f"Catalogue: {len(report.created) + len(report.updated) + len(report.unchanged)} apps"
    )
    admin_key = first_admin_key(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    out.print("Starting Prefect server, work pool and worker...")
    try:
        with running_stack(settings) as stack:
            out.print(f"Prefect UI:   {stack.ui_url}")
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
                "Deploy the demo: PREFECT_API_URL="
                f"{settings.prefect_api_url} .venv/bin/prefect deployment run deploy/deploy "
                "--param app=demo --param env=staging"
            )
            out.print(
                f"  or:           FREIGHT_URL={stack.api_url} FREIGHT_API_KEY=<admin key> "
                ".venv/bin/freight deploy demo staging --follow"
            )
            out.print("Press Ctrl-C to stop.")
            while all(p.poll() is None for p in stack.processes.values()):
                time.sleep(0.5)
            dead = [name for name, p in stack.processes.items() if p.poll() is not None]
            out.print(
                Text.assemble(
                    (f"{', '.join(dead)} exited", "red"), f"; see {stack.log_dir}; stopping"
                )
            )
    except KeyboardInterrupt:
        out.print("Stopping...")
    out.print("Stopped.")
