"""The `fabric` provider: commands run on a list of hosts over SSH with Fabric.

Serial (the default) deploys host after host, each running every command; `parallel` runs all
hosts at once. The first failure stops the deploy, naming the host and the exit code. Each
output line is prefixed `[host]`. Commands are templates as in the shell provider: values reach
the remote shell as quoted `export`s, referred to by the command, never as text it parses.
Commands run on a pty, so closing the connection (cancel, a time limit) ends them remotely.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from fabric import Connection
from pydantic import BaseModel, ConfigDict, Field, field_validator

from freight.commands import check_template, exports, render_command
from freight.errors import CommandFailed, DeployCancelled, DeployTimeout, ExternalError
from freight.plugins import PluginConfig
from freight.providers import registry
from freight.providers.base import DeployContext, ProviderRuntime

WATCH_INTERVAL = 0.2


class FabricCommand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    run: str = Field(min_length=1)
    sudo: bool = False

    @field_validator("run")
    @classmethod
    def _template(cls, run: str) -> str:
        check_template(run)
        return run


class FabricConfig(PluginConfig):
    type: Literal["fabric"] = "fabric"
    hosts: list[str] = Field(min_length=1)  # host or host:port
    commands: list[FabricCommand] = Field(min_length=1)
    user: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    key: str | None = None  # the private key itself, e.g. "${DEPLOY_SSH_KEY}"
    parallel: bool = False
    connect_timeout: float = Field(default=10, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    secret_fields: ClassVar[tuple[str, ...]] = ("key",)

    @field_validator("commands", mode="before")
    @classmethod
    def _plain_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"run": item} if isinstance(item, str) else item for item in value]
        return value


class _HostLines:
    """The file invoke writes a command's output to: whole lines go to the log, prefixed."""

    def __init__(self, host: str, output: Callable[[str], None], seen: Callable[[], None]):
        self.host, self.output, self.seen, self.partial = host, output, seen, ""

    def write(self, data: str) -> int:
        self.seen()
        self.partial += data
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self.output(f"[{self.host}] {line.rstrip(chr(13))}")
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.partial.strip():
            self.output(f"[{self.host}] {self.partial.rstrip(chr(13))}")
        self.partial = ""


@dataclass
class _Session:
    """The connections of one deploy and why they were closed, for the watcher to end them."""

    connections: list[Connection] = field(default_factory=list)
    last_output: float = field(default_factory=time.monotonic)
    stopped: ExternalError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, why: ExternalError) -> None:
        with self.lock:
            if self.stopped is None:
                self.stopped = why
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()


class FabricProvider:
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        assert isinstance(config, FabricConfig)
        timeout = config.timeout or runtime.timeout
        read_timeout = config.read_timeout or runtime.read_timeout
        prepared = [(command, *render_command(command.run, context)) for command in config.commands]
        prelude = exports(context.env_vars())
        session = _Session()
        done = threading.Event()
        deadline = time.monotonic() + timeout
        watcher = threading.Thread(
            target=self._watch,
            args=(session, done, runtime, deadline, timeout, read_timeout),
            daemon=True,
        )
        with _key_file(config.key) as key_file:

            def deploy_host(host: str) -> None:
                connection = _connect(host, config, key_file)
                with session.lock:
                    session.connections.append(connection)
                try:
                    for command, to_run, shown in prepared:
                        self._run_one(
                            connection, host, command, to_run, shown, prelude, session, runtime
                        )
                finally:
                    connection.close()

            watcher.start()
            try:
                if config.parallel:
                    _all_at_once(config.hosts, deploy_host, session)
                else:
                    for host in config.hosts:
                        deploy_host(host)
            finally:
                done.set()
                watcher.join()

    def _run_one(
        self,
        connection: Connection,
        host: str,
        command: FabricCommand,
        to_run: str,
        shown: str,
        prelude: str,
        session: _Session,
        runtime: ProviderRuntime,
    ) -> None:
        if session.stopped is not None:
            raise session.stopped
        runtime.output(f">> [{host}] Running {'(sudo) ' if command.sudo else ''}{shown}")
        remote = f"{prelude}; {to_run}"
        if command.sudo:
            # -n: a sudo that wants a password fails at once instead of waiting for one.
            remote = f"sudo -n -- /bin/sh -c {shlex.quote(remote)}"
        lines = _HostLines(
            host, runtime.output, lambda: setattr(session, "last_output", time.monotonic())
        )
        try:
            result = connection.run(
                remote, pty=True, warn=True, hide=True, out_stream=lines, in_stream=False
            )
        except Exception as exc:
            if session.stopped is not None:
                raise session.stopped from exc
            raise ExternalError(f"{host}: SSH failed: {type(exc).__name__}: {exc}") from exc
        finally:
            lines.close()
        if session.stopped is not None:
            raise session.stopped
        if result.exited != 0:
            runtime.output(f">> [{host}] Command exited with {result.exited}")
            raise CommandFailed(
                f"{host}: command exited with {result.exited}", returncode=result.exited
            )

    def _watch(
        self,
        session: _Session,
        done: threading.Event,
        runtime: ProviderRuntime,
        deadline: float,
        timeout: float,
        read_timeout: float,
    ) -> None:
        """End every connection on cancel or a time limit; their commands end with them."""
        while not done.wait(WATCH_INTERVAL):
            now = time.monotonic()
            if runtime.should_cancel():
                runtime.output(">> Cancelled: closing the SSH connections")
                session.stop(DeployCancelled("Deploy cancelled"))
            elif now > deadline:
                runtime.output(f">> Process exceeded time limit of {timeout:g}s")
                session.stop(DeployTimeout(f"Deploy exceeded its time limit of {timeout:g}s"))
            elif now - session.last_output > read_timeout:
                runtime.output(f">> No output for {read_timeout:g}s")
                session.stop(DeployTimeout(f"No output for {read_timeout:g}s"))
            else:
                continue
            return


def _connect(host: str, config: FabricConfig, key_file: str | None) -> Connection:
    name, _, port = host.partition(":")
    connect_kwargs: dict[str, object] = {
        "look_for_keys": key_file is None,
        "allow_agent": key_file is None,
    }
    if key_file is not None:
        connect_kwargs["key_filename"] = key_file
    return Connection(
        name,
        user=config.user,
        port=int(port) if port else config.port,
        connect_timeout=config.connect_timeout,
        connect_kwargs=connect_kwargs,
    )


def _all_at_once(hosts: list[str], deploy_host: Callable[[str], None], session: _Session) -> None:
    errors: list[BaseException] = []

    def one(host: str) -> None:
        try:
            deploy_host(host)
        except BaseException as exc:  # the first failure stops the others
            errors.append(exc)
            if isinstance(exc, ExternalError):
                session.stop(exc)

    threads = [threading.Thread(target=one, args=(host,), daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise session.stopped or errors[0]


@contextlib.contextmanager
def _key_file(key: str | None) -> Iterator[str | None]:
    """The private key, in a file only this user can read, for as long as the deploy runs."""
    if key is None:
        yield None
        return
    handle, path = tempfile.mkstemp(prefix="freight-key-")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(key if key.endswith("\n") else key + "\n")
        os.chmod(path, 0o600)
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


registry.register("fabric", FabricConfig)(FabricProvider())
