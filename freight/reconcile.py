"""`python -m freight.reconcile`: the reconciler as a process of the control plane (see
freight/execution/reconciler.py), with the fleet watch beside it (freight/execution/
fleet_watch.py) and the sweep of the control plane's git cache (freight/execution/git_cache.py).
`freight up` runs one; several may run, one acts."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from types import FrameType

from freight import tls, wiring
from freight.execution import delivery, fleet_watch, git_cache
from freight.execution.reconciler import Reconciler, Timing
from freight.orchestrator import PrefectOrchestrator, one_try_each
from freight.settings import get_settings
from freight.telemetry import report_errors

# Each pass asks the engine again, so one request need not wait long: a pass held on a hung
# engine would hold the reaping of lost runners with it (they are judged by heartbeats alone
# when the engine does not answer).
ENGINE_REQUEST_TIMEOUT = 10.0


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
    # A pass that hangs is diagnosed from outside: SIGUSR1 prints every thread's stack.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with (
        one_try_each(ENGINE_REQUEST_TIMEOUT),
        PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
        tls.client(timeout=settings.notify_timeout) as http,
    ):
        reconciler = Reconciler(
            wiring.hand_over(settings, orchestrator),
            timing=Timing(
                lost_after=settings.runner_lost_after,
                submit_after=settings.submit_after,
                pending_for=settings.pending_for,
                worker_beat=settings.heartbeat_interval,
            ),
            workspace_root=settings.workspaces,
            grace=settings.cancel_grace,
            host=settings.host_name,
        )
        watch = threading.Thread(
            target=fleet_watch.serve,
            args=(reconciler.engine, delivery.courier(settings, http)),
            kwargs={
                "holder": reconciler.holder,
                "interval": settings.fleet_watch_interval,
                "ttl": settings.reconciler_lease,
                "stop": stop,
            },
            name="fleet-watch",
        )
        # The control plane's own git cache (the API resolves refs in it).
        cache = threading.Thread(
            target=git_cache.serve,
            args=(reconciler.engine, settings.workspaces, settings.host_name),
            kwargs={
                "limit_bytes": settings.git_cache_bytes,
                "gc_every": settings.git_gc_hours * 3600,
                "stop": stop,
            },
            name="git-cache",
            daemon=True,  # a `git gc` under way must not hold up the process's end
        )
        watch.start()
        cache.start()
        try:
            reconciler.serve(
                interval=settings.reconcile_interval,
                lease_ttl=settings.reconciler_lease,
                stop=stop,
            )
        finally:
            stop.set()
            watch.join()


if __name__ == "__main__":
    main()
