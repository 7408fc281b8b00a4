"""The command Prefect's worker runs for each flow run: `python -m freight.forkclient [ID]`.

It asks the fork server (freight/forkserver.py) for a flow-run process forked from a warm
interpreter, then stands in for it: the worker knows only this process. SIGTERM, SIGINT and
SIGHUP are passed on to the child (Prefect cancels with SIGTERM), and this process exits as the
child did. If it is killed itself, the server kills the child, as if the worker had killed the
flow-run process. With no server to ask, it replaces itself with `python -m prefect.engine`:
slower to start, same behaviour.

Only the standard library, and little of it: this runs before every flow run.

Wire format on the unix socket: the client sends a 4-byte big-endian length and a JSON request
`{"env", "cwd", "argv"}`, with its stdin, stdout and stderr attached (SCM_RIGHTS). The server
answers with JSON lines: `{"pid": N}`, then `{"exit": CODE}` (negative: killed by that signal);
or `{"error": "..."}` if it could not fork. A request with `"detach": true` (and an optional
`"limit"` of detached runs at once) is answered with the pid alone: that run outlives the
connection, and no client stands in for it.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn

SOCKET_ENV = "FREIGHT_FORKSERVER_SOCKET"
HEADER = struct.Struct("!I")
STD_FDS = 3
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SPAWN_TIMEOUT = 5.0
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv: list[str]) -> NoReturn:
    """Have the server fork the flow-run process, then mirror its exit."""
    child: int | None = None
    early: list[int] = []  # signals that came before the child's pid was known

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is None:
            early.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    # Runs start in the project of the Python that runs them, wherever this host installed it
    # (the worker's temporary directory would make each forked run read Prefect's settings
    # again, and no path of the host that registered the deployments is baked into them).
    os.chdir(PROJECT_DIR)
    path = os.environ.get(SOCKET_ENV)
    conn = connect(path) if path else None
    if conn is None:
        _exec_engine(argv, f"no fork server at {path}" if path else f"{SOCKET_ENV} is not set")
    payload = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": argv}).encode()
    conn.sendmsg(
        [HEADER.pack(len(payload)), payload],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", range(STD_FDS)))],
    )
    replies = conn.makefile("r", encoding="utf-8")
    first = json.loads(replies.readline() or '{"error": "the fork server closed the connection"}')
    if "pid" not in first:
        conn.close()
        _exec_engine(argv, str(first.get("error", "unexpected answer")))
    child = int(first["pid"])
    for signum in early:
        forward(signum, None)
    line = replies.readline()
    if not line:
        # The server went away (a restart); the run goes on, and this process stands for it.
        _wait_gone(child)
        os._exit(1)
    code = int(json.loads(line)["exit"])
    if code < 0:
        # Die the way the child died, so the worker reports what it would have reported.
        if -code != signal.SIGKILL:  # the one that cannot have a handler
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def spawn_detached(
    path: str, *, env: dict[str, str], cwd: str, argv: list[str], log_fd: int, limit: int
) -> int:
    """Have the server at `path` start a run that nobody stands in for (Freight's launcher):
    its output goes to `log_fd`, and it outlives this call. Its pid; OSError if the server
    cannot be reached, RuntimeError if it refused (`busy`: `limit` such runs go on already)."""
    conn = connect(path)
    if conn is None:
        raise OSError(f"no fork server at {path}")
    # A fork server that does not answer (stopped, overloaded) must not hold the caller: the
    # run then goes to the workers.
    conn.settimeout(SPAWN_TIMEOUT)
    with conn, open(os.devnull, "rb") as devnull:
        payload = json.dumps(
            {"env": env, "cwd": cwd, "argv": argv, "detach": True, "limit": limit}
        ).encode()
        fds = array.array("i", [devnull.fileno(), log_fd, log_fd])
        conn.sendmsg(
            [HEADER.pack(len(payload)), payload],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)],
        )
        answer = json.loads(conn.makefile("r", encoding="utf-8").readline() or "{}")
    if "pid" not in answer:
        raise RuntimeError(str(answer.get("error", "the fork server closed the connection")))
    return int(answer["pid"])


def _wait_gone(pid: int) -> None:
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([handle], [], [])
    finally:
        os.close(handle)


def connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def _exec_engine(argv: list[str], reason: str) -> NoReturn:
    sys.stderr.write(f"freight: {reason}; starting the Prefect engine directly\n")
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])


if __name__ == "__main__":
    run(sys.argv[1:])
