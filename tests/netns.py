"""Separate machines on this one: a bridge on this machine (the control plane's side) and a
network namespace per host, joined to it by a veth pair, so that each host reaches the control
plane only through the bridge. Needs root."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def namespace(host: str) -> str:
    return f"freight-{host}"


def inside(host: str) -> list[str]:
    """The argv prefix that runs a command on `host`."""
    return ["ip", "netns", "exec", namespace(host)]


@contextlib.contextmanager
def network(bridge: str, control_ip: str, hosts: Sequence[str]) -> Iterator[None]:
    """The bridge at `control_ip`/24 and each host at the next addresses (.11, .12, ...)."""
    prefix = control_ip.rsplit(".", 1)[0]
    with contextlib.suppress(subprocess.CalledProcessError):
        sh("ip", "link", "del", bridge)
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "addr", "add", f"{control_ip}/24", "dev", bridge)
    sh("ip", "link", "set", bridge, "up")
    try:
        for number, host in enumerate(hosts, start=11):
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "netns", "del", namespace(host))
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "link", "del", f"fr-{host}")
            sh("ip", "netns", "add", namespace(host))
            sh("ip", "link", "add", f"fr-{host}", "type", "veth", "peer", "name", "eth0",
               "netns", namespace(host))  # fmt: skip
            sh("ip", "link", "set", f"fr-{host}", "master", bridge, "up")
            sh(*inside(host), "ip", "addr", "add", f"{prefix}.{number}/24", "dev", "eth0")
            sh(*inside(host), "ip", "link", "set", "eth0", "up")
            sh(*inside(host), "ip", "link", "set", "lo", "up")
        yield
    finally:
        for host in hosts:
            for pid in in_namespace(host):  # a host's end is the end of all it runs
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "link", "del", f"fr-{host}")
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "netns", "del", namespace(host))
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("ip", "link", "del", bridge)


def in_namespace(host: str) -> list[int]:
    found = subprocess.run(
        ["ip", "netns", "pids", namespace(host)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


@contextlib.contextmanager
def forwarded(address: tuple[str, int], to: tuple[str, int]) -> Iterator[None]:
    """A service of this machine's loopback (PostgreSQL) offered at `address` on the bridge,
    as a database host would offer it."""
    listener = socket.create_server(address)
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(to)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        listener.close()
