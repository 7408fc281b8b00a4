"""The `fabric` provider against real OpenSSH servers on loopback (two "hosts"): a deploy that
writes on each host, serial and parallel, a failing command, cancel and time limits that leave
no remote process behind, sudo, and values that cannot inject shell syntax."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freight import procs
from freight.errors import CommandFailed, DeployCancelled, DeployTimeout
from freight.providers import ProviderRuntime
from freight.providers.fabric import FabricConfig, FabricProvider
from tests.helpers import command_line, wait_for
from tests.integrations.events import SHA, deploy_context
from tests.sshd import SshKeys, SshServer, two_hosts

# The port a command's sshd listens on: tells the two loopback "hosts" apart.
PORT = "$(echo $SSH_CONNECTION | cut -d' ' -f4)"


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SshKeys, SshServer, SshServer]]:
    with two_hosts(tmp_path_factory.mktemp("sshd")) as servers:
        yield servers


class Run:
    def __init__(self, **params: str) -> None:
        self.lines: list[str] = []
        self.cancel = threading.Event()
        self.context = deploy_context(Path("/tmp"), **params)

    def __call__(
        self, config: FabricConfig, *, read_timeout: float = 30, timeout: float = 60
    ) -> None:
        FabricProvider().run(
            config,
            self.context,
            ProviderRuntime(
                output=self.lines.append,
                should_cancel=self.cancel.is_set,
                timeout=timeout,
                read_timeout=read_timeout,
                grace=1,
            ),
        )


def config(
    keys: SshKeys, servers: list[SshServer], commands: list[Any], **extra: Any
) -> FabricConfig:
    return FabricConfig.model_validate(
        {
            "type": "fabric",
            "hosts": [s.host for s in servers],
            "user": "root",
            "key": keys.private,
            "commands": commands,
            **extra,
        }
    )


def remote_sleeps(marker: int) -> list[int]:
    return [p.pid for p in procs.live_processes() if f"sleep {marker}" in command_line(p.pid)]


def test_deploy_writes_on_each_host_with_prefixed_lines(
    hosts: tuple[SshKeys, SshServer, SshServer], tmp_path: Path
) -> None:
    keys, one, two = hosts
    run = Run(target=str(tmp_path))
    run(
        config(
            keys,
            [one, two],
            [
                "echo deploying {sha} to {environment}",
                {"run": f'echo "{{sha}}" > "{{params[target]}}/deployed-{PORT}"'},
            ],
        )
    )
    for server in (one, two):
        assert (tmp_path / f"deployed-{server.port}").read_text() == f"{SHA}\n"
        assert f"[{server.host}] deploying {SHA} to production" in run.lines
    assert run.lines[0] == f">> [{one.host}] Running echo deploying {SHA} to production"
    # Serial: the first host did everything before the second began.
    first_of_two = next(i for i, line in enumerate(run.lines) if two.host in line)
    assert all(two.host not in line for line in run.lines[:first_of_two])
    assert sum(one.host in line for line in run.lines[:first_of_two]) == 3


def test_parallel_hosts_run_at_once(
    hosts: tuple[SshKeys, SshServer, SshServer], tmp_path: Path
) -> None:
    keys, one, two = hosts
    # Each host waits for the other's mark: only a parallel run gets past it.
    rendezvous = (
        f'touch "{{params[dir]}}/{PORT}"; '
        'while [ "$(ls "{params[dir]}" | wc -l)" -lt 2 ]; do sleep 0.05; done; echo met'
    )
    run = Run(dir=str(tmp_path))
    run(config(keys, [one, two], [rendezvous], parallel=True), read_timeout=20)
    assert {f"[{one.host}] met", f"[{two.host}] met"} <= set(run.lines)


def test_the_first_failure_stops_the_deploy_naming_host_and_exit_code(
    hosts: tuple[SshKeys, SshServer, SshServer], tmp_path: Path
) -> None:
    keys, one, two = hosts
    commands = [
        f"if [ {PORT} = {two.port} ]; then echo broken; exit 3; fi",
        f"touch {tmp_path}/{PORT}",
    ]
    run = Run()
    with pytest.raises(CommandFailed, match=f"^{two.host}: command exited with 3$") as failed:
        run(config(keys, [one, two], commands))
    assert failed.value.returncode == 3
    assert (tmp_path / str(one.port)).exists() and not (tmp_path / str(two.port)).exists()
    assert (
        f">> [{two.host}] Command exited with 3" in run.lines
        and f"[{two.host}] broken" in run.lines
    )


def test_cancel_closes_the_channels_and_the_remote_command_ends(
    hosts: tuple[SshKeys, SshServer, SshServer],
) -> None:
    keys, one, two = hosts
    marker = random.randint(600_000, 699_999)
    run = Run()
    result: list[BaseException] = []

    def deploy() -> None:
        try:
            run(config(keys, [one, two], [f"echo started; sleep {marker}"], parallel=True))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=deploy)
    thread.start()
    wait_for(lambda: len(remote_sleeps(marker)) == 2, 20, "the remote sleeps to start")
    run.cancel.set()
    thread.join(30)
    assert isinstance(result[0], DeployCancelled)
    assert ">> Cancelled: closing the SSH connections" in run.lines
    wait_for(lambda: not remote_sleeps(marker), 20, "no remote sleep left")


def test_no_output_for_too_long_ends_it_remotely_too(
    hosts: tuple[SshKeys, SshServer, SshServer],
) -> None:
    keys, one, _ = hosts
    marker = random.randint(700_000, 799_999)
    run = Run()
    with pytest.raises(DeployTimeout, match="No output for 1s"):
        run(config(keys, [one], [f"echo hi; sleep {marker}"]), read_timeout=1)
    wait_for(lambda: not remote_sleeps(marker), 20, "no remote sleep left")


def test_sudo_and_values_that_try_to_inject(
    hosts: tuple[SshKeys, SshServer, SshServer], tmp_path: Path
) -> None:
    keys, one, _ = hosts
    hostile = f"x; touch {tmp_path}/owned $(touch {tmp_path}/owned2)"
    run = Run(note=hostile)
    run(
        config(
            keys,
            [one],
            [
                {"run": "echo as $(id -un) via ${{SUDO_USER:-nobody}}", "sudo": True},
                "echo {params[note]}",
            ],
        )
    )
    assert f"[{one.host}] as root via root" in run.lines
    assert f"[{one.host}] {hostile}" in run.lines
    assert not list(tmp_path.glob("owned*"))


def test_an_unreachable_host_is_a_clear_failure(
    hosts: tuple[SshKeys, SshServer, SshServer],
) -> None:
    keys, _, _ = hosts
    cfg = FabricConfig.model_validate(
        {
            "type": "fabric",
            "hosts": ["127.0.0.1:1"],
            "user": "root",
            "key": keys.private,
            "commands": ["true"],
            "connect_timeout": 2,
        }
    )
    with pytest.raises(Exception, match=r"127\.0\.0\.1:1: SSH failed"):
        Run()(cfg)
