"""The agent's configuration file (`/etc/freight/agent.yaml`), validated before the agent starts:
an error names the file and the field. `${NAME}` in a value is read from the environment, so
that the key need not be written in the file."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from freight import system_users
from freight.commands import check_template
from freight.errors import InvalidConfig
from freight.names import MachineName, Name
from freight.system_users import RunAs

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class AgentConfigError(InvalidConfig):
    """The message reads `FILE: FIELD: problem`."""

    def __init__(self, problem: str, *, path: str, field: str = "") -> None:
        super().__init__(": ".join(part for part in (path, field, problem) if part))
        self.problem = problem
        self.path = path
        self.field = field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionSource(Strict):
    """Where the version of an app on this machine is read: a command's first line, or a
    file's."""

    command: str | None = Field(default=None, min_length=1)
    file: Path | None = None
    timeout: float = Field(default=10, gt=0, le=300)

    @model_validator(mode="after")
    def _one_source(self) -> VersionSource:
        if (self.command is None) == (self.file is None):
            raise ValueError("give exactly one of 'command' or 'file'")
        return self


class DeployCommand(Strict):
    """How this machine deploys an app itself (pull): a command template with the shell
    provider's variables ({sha}, {environment}, ...), also exported as FREIGHT_* variables."""

    command: str = Field(min_length=1)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=3600, gt=0)
    read_timeout: float = Field(default=600, gt=0)
    grace: float = Field(default=10, ge=0, le=600)

    @field_validator("command")
    @classmethod
    def _template(cls, command: str) -> str:
        check_template(command)
        return command


class AppEntry(Strict):
    app: Name
    env: Name
    version: VersionSource
    deploy: DeployCommand | None = None


class AgentConfig(Strict):
    url: str = Field(pattern=r"^https?://[^\s/]+", description="Freight's address")
    key: SecretStr = Field(min_length=1)
    name: MachineName = Field(default_factory=lambda: socket.gethostname())
    labels: dict[str, str] = Field(default_factory=dict)
    interval: float = Field(default=15, ge=1, le=3600)
    # A CA bundle to trust for Freight's certificate (default: the system's).
    ca_file: Path | None = None
    # The user deploy and version commands run as (the agent runs as root to switch to it), so
    # that they cannot read the agent's key; unset, they run as the agent's own user.
    run_as: str | None = Field(default=None, min_length=1, max_length=32)
    apps: list[AppEntry] = Field(min_length=1)
    # The values `${NAME}` references stood for: masked in every line sent to Freight.
    _secrets: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets | {self.key.get_secret_value()}

    @model_validator(mode="after")
    def _each_place_once(self) -> AgentConfig:
        seen = set()
        for index, entry in enumerate(self.apps):
            place = (entry.app, entry.env)
            if place in seen:
                raise ValueError(f"apps[{index}]: {entry.app}/{entry.env} is listed twice")
            seen.add(place)
        return self

    def entry(self, app: str, environment: str) -> AppEntry | None:
        return next((e for e in self.apps if (e.app, e.env) == (app, environment)), None)


def _expand(value: Any, where: str, environ: dict[str, str], found: set[str]) -> Any:
    """The value with each `${NAME}` read from `environ`; the values read go to `found`."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise AgentConfigError(
                    f"${{{name}}} is not set in the environment", path="", field=where
                )
            found.add(environ[name])
            return environ[name]

        return REFERENCE.sub(lookup, value)
    if isinstance(value, dict):
        return {
            k: _expand(v, f"{where}.{k}" if where else str(k), environ, found)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", environ, found) for i, v in enumerate(value)]
    return value


def command_user(config: AgentConfig, path: Path) -> RunAs | None:
    """Whom commands run as: `run_as`, which this agent must be able to switch to."""
    if config.run_as is None:
        return None
    found = system_users.run_as(config.run_as)
    if found is None:
        raise AgentConfigError(
            f"cannot run commands as '{config.run_as}': not a user of this machine, or root, "
            "or the agent does not run as root",
            path=str(path),
            field="run_as",
        )
    return found


def load(path: Path, environ: dict[str, str] | None = None) -> AgentConfig:
    """The configuration in `path`; AgentConfigError names the file and the field at fault."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentConfigError(f"cannot read it: {exc.strerror}", path=str(path)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(data, dict):
        raise AgentConfigError("must be a mapping of settings", path=str(path))
    secrets: set[str] = set()
    try:
        data = _expand(data, "", dict(os.environ if environ is None else environ), secrets)
    except AgentConfigError as exc:
        raise AgentConfigError(exc.problem, path=str(path), field=exc.field) from None
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in error["loc"]
        ).replace(".[", "[")
        raise AgentConfigError(error["msg"], path=str(path), field=field) from None
    config._secrets = frozenset(secrets)
    return config
