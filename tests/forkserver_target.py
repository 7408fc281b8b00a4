"""What the fork server's tests have it become instead of Prefect's engine (`python -m` style)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    action = argv[0]
    if action == "report":
        print(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "ppid": os.getppid(),
                    "cwd": os.getcwd(),
                    "argv": argv,
                    "marker": os.environ.get("FORK_TEST_MARKER"),
                    "stdin": sys.stdin.readline().strip(),
                }
            ),
            flush=True,
        )
        print("to stderr", file=sys.stderr, flush=True)
    elif action == "exit":
        sys.exit(int(argv[1]))
    elif action == "wait-term":

        def terminated(signum: int, frame: object) -> None:
            print("terminated", flush=True)
            sys.exit(3)

        signal.signal(signal.SIGTERM, terminated)
        print(f"ready {os.getpid()}", flush=True)
        time.sleep(60)
    elif action == "kill-self":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "wait-file":
        print(f"ready {os.getpid()}", flush=True)
        while not Path(argv[1]).exists():
            time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1:])
