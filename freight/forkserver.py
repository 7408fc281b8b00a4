"""The fork server: a warm interpreter that forks flow-run processes on request.

Prefect's process worker runs one command per flow run. A new interpreter importing Prefect,
SQLAlchemy and Freight costs ~2 s of CPU before the flow does anything: that was most of a
deploy's start latency, and what saturated a 2-core machine in bursts. The worker's command is
instead `python -m freight.forkclient` (see there for the client's side and the wire format),
which asks this server to fork a child that has all of it imported already. The child becomes
what `python -m prefect.engine` would have been: the client's environment, working directory and
standard streams, running Prefect's own engine entry point.

Run it beside each worker: `python -m freight.forkserver SOCKET` (`freight up` does).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import selectors
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from freight.forkclient import FORWARDED, HEADER, STD_FDS, connect

# Imported once by the server so that forked children start with them loaded.
PRELOAD = (
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.utilities.visualization",
    "prefect._internal.observers",
    "prefect.logging.handlers",
    "prefect.events.clients",
    "anyio._backends._asyncio",
    "psycopg2",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "flows.autodeploy",
    "flows.deploy",
    "flows.maintenance",
)
ENGINE = "prefect.engine"
MAX_REQUEST = 1 << 20
__all__ = ["ENGINE", "become", "default_socket", "main", "serve"]


@dataclass(frozen=True)
class Request:
    env: dict[str, str]
    cwd: str
    argv: list[str]
    fds: list[int]
    # A detached child outlives the connection that asked for it (Freight's launcher starts
    # runs this way; nobody stands in for them). At most `limit` run at once.
    detach: bool = False
    limit: int | None = None


# The host's name as Freight knows it (FREIGHT_HOST_NAME), else the system's.
HOST_ENV = "FREIGHT_HOST_NAME"


def serve(path: Path) -> Request | None:
    """Serve until SIGTERM/SIGINT (returns None), or return a request inside a forked child."""
    import gc
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    from freight import tls

    tls.context()  # built once here, inherited by every run
    # The collector would otherwise walk (and so copy) every preloaded object in each child.
    gc.freeze()
    listener = _listen(path)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A handler (not SIG_IGN) so that the wakeup fd sees it and children become reapable.
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: dict[int, socket.socket] = {}
    detached: set[int] = set()
    forked: Request | None = None
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wakeup_r, selectors.EVENT_READ, "wakeup")
    _say(f"Fork server ready on {path}")
    try:
        while not stopping:
            for key, _ in selector.select():
                if key.data == "wakeup":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup_r, 4096)
                    _reap(children, detached, selector)
                elif key.data == "accept":
                    forked = _accept(listener, children, detached, selector)
                    if forked is not None:  # this is the child now
                        signal.set_wakeup_fd(-1)
                        for signum in (*FORWARDED, signal.SIGCHLD):
                            signal.signal(signum, signal.SIG_DFL)
                        for conn in children.values():
                            conn.close()
                        selector.close()
                        listener.close()
                        os.close(wakeup_r)
                        os.close(wakeup_w)
                        return forked
                else:  # a client's connection closed: the client is gone, so is its run
                    pid = key.data
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    selector.unregister(key.fileobj)
    finally:
        if forked is None:
            _shutdown(listener, path, children)
    return None


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _listen(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A unix socket serves its own host only: on a filesystem that hosts share, another host's
    # server would unlink this one's socket, and this host's runs would start the slow way.
    host = os.environ.get(HOST_ENV) or socket.gethostname()
    owner_file = path.with_name(f"{path.name}.host")
    owner = owner_file.read_text().strip() if owner_file.exists() else host
    if owner != host:
        raise SystemExit(
            f"{path.parent} belongs to host {owner}: give this host ({host}) a FREIGHT_HOME of "
            f"its own, or remove {owner_file} if {owner} is gone"
        )
    owner_file.write_text(host)
    if path.exists():
        if connect(str(path)) is not None:
            raise SystemExit(f"A fork server already listens on {path}")
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    return listener


def _accept(
    listener: socket.socket,
    children: dict[int, socket.socket],
    detached: set[int],
    selector: selectors.BaseSelector,
) -> Request | None:
    conn, _ = listener.accept()
    try:
        request = _read_request(conn)
    except (OSError, ValueError) as exc:
        _say(f"Bad request from a client: {exc}")
        conn.close()
        return None
    if _hung_up(conn):  # the client gave up (or died) while the request waited: nobody to run for
        _close_all(request.fds)
        conn.close()
        return None
    if request.detach and request.limit is not None and len(detached) >= request.limit:
        _reply(conn, {"error": "busy"})
        conn.close()
        _close_all(request.fds)
        return None
    # Buffered output would otherwise be written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        _reply(conn, {"error": f"fork failed: {exc}"})
        conn.close()
        _close_all(request.fds)
        return None
    if pid == 0:
        conn.close()
        return request
    _close_all(request.fds)
    _reply(conn, {"pid": pid})
    if request.detach:
        detached.add(pid)
        conn.close()
        return None
    children[pid] = conn
    selector.register(conn, selectors.EVENT_READ, pid)
    return None


def _hung_up(conn: socket.socket) -> bool:
    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLRDHUP)
    for _, events in poller.poll(0):
        if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return True
    return False


def _read_request(conn: socket.socket) -> Request:
    conn.settimeout(5)
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_LEN(STD_FDS * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if len(fds) != STD_FDS:
        _close_all(list(fds))
        raise ValueError("expected stdin, stdout and stderr")
    if len(data) < HEADER.size:
        raise ValueError("short request")
    (size,) = HEADER.unpack_from(data)
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = data[HEADER.size :]
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise ValueError("truncated request")
        body += more
    conn.settimeout(None)
    message = json.loads(body)
    limit = message.get("limit")
    return Request(
        env={str(k): str(v) for k, v in message["env"].items()},
        cwd=str(message["cwd"]),
        argv=[str(a) for a in message["argv"]],
        fds=list(fds),
        detach=bool(message.get("detach", False)),
        limit=int(limit) if limit is not None else None,
    )


def _reap(
    children: dict[int, socket.socket], detached: set[int], selector: selectors.BaseSelector
) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        detached.discard(pid)
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        _reply(conn, {"exit": code})
        conn.close()


def _reply(conn: socket.socket, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(message) + "\n").encode())


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _shutdown(listener: socket.socket, path: Path, children: dict[int, socket.socket]) -> None:
    listener.close()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    # Running flows go on; their clients see the connection close and wait for them to end.
    for conn in children.values():
        conn.close()


# -- the forked child -------------------------------------------------------------------------


def become(request: Request, module: str = ENGINE) -> None:
    """Turn this forked child into `python -m MODULE ARGV` for the client (Prefect's engine)."""
    import runpy
    import warnings

    import prefect.context

    os.setsid()  # signals meant for the server's group are not meant for runs
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    before = (os.getcwd(), _prefect_settings(os.environ))
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    if (os.getcwd(), _prefect_settings(os.environ)) != before:
        # Prefect read its settings from the server's environment (and working directory) at
        # import; this run's differ. (Reading them again is a tenth of a run's CPU.)
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()
    sys.argv = [sys.executable, *request.argv]
    # runpy warns that the module is already imported: it is, on purpose, and it runs afresh.
    warnings.filterwarnings(
        "ignore", message=f"'{module}' found in sys.modules", category=RuntimeWarning
    )
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _prefect_settings(env: Mapping[str, str]) -> dict[str, str]:
    # PREFECT__* (two underscores) are per-run values the engine reads itself, not settings.
    return {k: v for k, v in env.items() if k.startswith("PREFECT_") and k[8:9] != "_"}


def default_socket(home: Path) -> Path:
    return home.resolve() / "run" / "forkserver.sock"


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(f"usage: python -m freight.forkserver SOCKET [MODULE (default {ENGINE})]")
    request = serve(Path(sys.argv[1]))
    if request is not None:
        become(request, *sys.argv[2:])


if __name__ == "__main__":
    main()
