"""Real OpenSSH servers on loopback for the Fabric provider's tests: a generated host key, a
generated user key, each server on a free port of its own."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_for

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class SshKeys:
    private: str  # the user's private key, as a secret holds it
    authorized_keys: Path
    host_key: Path


def make_keys(directory: Path) -> SshKeys:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True
        )
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "user.pub").read_text())
    authorized.chmod(0o600)
    return SshKeys((directory / "user").read_text(), authorized, directory / "host")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sshd(directory: Path, keys: SshKeys) -> Iterator[SshServer]:
    assert SSHD.exists(), "openssh-server is missing: `make test` installs it (see Makefile)"
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = _free_port()
    config = directory / f"sshd-{port}.conf"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {keys.host_key}",
                f"AuthorizedKeysFile {keys.authorized_keys}",
                f"PidFile {directory / f'sshd-{port}.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                f"PermitRootLogin {'prohibit-password' if os.getuid() == 0 else 'no'}",
                "StrictModes no",
                "UsePAM no",
                "PrintMotd no",
                "AcceptEnv LANG",
                "",
            ]
        )
    )
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(lambda: listening() or process.poll() is not None, 20, "sshd to listen")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        yield SshServer(port, process)
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


@contextmanager
def two_hosts(directory: Path) -> Iterator[tuple[SshKeys, SshServer, SshServer]]:
    keys = make_keys(directory / "keys")
    with ExitStack() as stack:
        first = stack.enter_context(sshd(directory, keys))
        second = stack.enter_context(sshd(directory, keys))
        yield keys, first, second
