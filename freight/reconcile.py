"""`python -m freight.reconcile`: the reconciler as a process of the control plane (see
freight/execution/reconciler.py). `freight up` runs one; several may run, one acts."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from freight import wiring
from freight.execution.reconciler import Reconciler, Timing
from freight.orchestrator import PrefectOrchestrator
from freight.settings import get_settings
from freight.telemetry import report_errors


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per look otherwise
    settings = get_settings()
    report_errors(settings, "reconciler")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with PrefectOrchestrator(settings.deploy_deployment) as orchestrator:
        reconciler = Reconciler(
            wiring.hand_over(settings, orchestrator),
            timing=Timing(
                lost_after=settings.runner_lost_after,
                submit_after=settings.submit_after,
                pending_for=settings.pending_for,
            ),
            workspace_root=settings.workspaces,
            grace=settings.cancel_grace,
        )
        reconciler.serve(
            interval=settings.reconcile_interval, lease_ttl=settings.reconciler_lease, stop=stop
        )


if __name__ == "__main__":
    main()
