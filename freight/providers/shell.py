"""The shell provider: a command template run in the checkout, in its own process group."""

from __future__ import annotations

import re
import shlex
import string
from typing import Literal

from pydantic import Field, field_validator

from freight.errors import InvalidProvider
from freight.plugins import PluginConfig
from freight.providers import registry
from freight.providers.base import DeployContext, ProviderRuntime
from freight.runner import run_process

VARIABLES = {
    "app": "FREIGHT_APP",
    "environment": "FREIGHT_ENVIRONMENT",
    "sha": "FREIGHT_SHA",
    "prev_sha": "FREIGHT_PREV_SHA",
    "ref": "FREIGHT_REF",
    "number": "FREIGHT_NUMBER",
    "workspace": "FREIGHT_WORKSPACE",
}
PARAM = re.compile(r"params\[([A-Za-z_][A-Za-z0-9_]*)\]")


def _fields(template: str) -> list[tuple[str, str | None]]:
    """Split a template into (literal text, variable name or None) pairs."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad command template: {exc}") from None
    result = []
    for literal, name, spec, conversion in parts:
        if name is not None and (spec or conversion):
            raise ValueError(f"template variable '{{{name}}}' takes no format or conversion")
        if name is not None and name not in VARIABLES and not PARAM.fullmatch(name):
            raise ValueError(
                f"unknown template variable '{{{name}}}' (known: "
                + ", ".join([*VARIABLES, "params[NAME]"])
                + ")"
            )
        result.append((literal, name))
    return result


class ShellConfig(PluginConfig):
    type: Literal["shell"] = "shell"
    command: str = Field(min_length=1)
    timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _known_variables(cls, command: str) -> str:
        _fields(command)
        return command


def render_command(template: str, context: DeployContext) -> tuple[str, str]:
    """The command to run and the command to show.

    The command that runs never contains a value: each variable becomes a double-quoted reference
    to its FREIGHT_* environment variable, which the shell expands without re-parsing, so no
    ref, param or other value can inject shell syntax, whichever quotes the template puts around
    it. The shown form carries the values, for the log.
    """
    values = {
        name: str(value) for name, value in context.template_values().items() if name in VARIABLES
    }
    to_run, to_show = [], []
    for literal, name in _fields(template):
        to_run.append(literal)
        to_show.append(literal)
        if name is None:
            continue
        param = PARAM.fullmatch(name)
        if param:
            if param[1] not in context.params:
                raise InvalidProvider(f"The command needs parameter '{param[1]}', not given")
            to_run.append(f'"${{FREIGHT_PARAM_{param[1].upper()}}}"')
            to_show.append(shlex.quote(context.params[param[1]]))
        else:
            to_run.append(f'"${{{VARIABLES[name]}}}"')
            to_show.append(shlex.quote(values[name]))
    return "".join(to_run), "".join(to_show)


class ShellProvider:
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        assert isinstance(config, ShellConfig)
        command, shown = render_command(config.command, context)
        runtime.output(f">> Running {shown}")
        run_process(
            command,
            cwd=context.workspace,
            env={**runtime.base_env, **config.env, **context.env_vars()},
            output=runtime.output,
            timeout=config.timeout or runtime.timeout,
            read_timeout=config.read_timeout or runtime.read_timeout,
            grace=runtime.grace,
            should_cancel=runtime.should_cancel,
            on_start=runtime.on_start,
        )


registry.register("shell", ShellConfig)(ShellProvider())
