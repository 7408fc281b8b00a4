"""`python -m freight.tether PID MODULE [ARG...]`: run a Python module as this process, and end
it the moment its parent is no longer PID, the process that started it (given, not read at
start: that parent may be gone already by then). A worker host's fork server and Prefect worker
run so: a `freight worker` killed with -9 must not leave a Prefect worker taking runs for a host
that no longer reports itself, nor a fork server holding the socket its successor needs.

Linux's PR_SET_PDEATHSIG would fire when the starting *thread* ends, and processes started
again after a crash are started by the supervisor's thread; a look at the parent every second
is about the process.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

LOOK_EVERY = 1.0


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(LOOK_EVERY)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parent, module, *args = sys.argv[1:]
    # Forked children (the fork server's runs) get only the forking thread: no tether of theirs.
    threading.Thread(target=_watch, args=(int(parent),), name="tether", daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
