"""The shell provider: a command template run in the checkout, in its own process group."""

from __future__ import annotations

import shlex
import string
from typing import Literal

from pydantic import Field

from freight.errors import InvalidProvider
from freight.plugins import PluginConfig
from freight.providers import registry
from freight.providers.base import DeployContext, ProviderRuntime
from freight.runner import run_process


class ShellConfig(PluginConfig):
    type: Literal["shell"] = "shell"
    command: str = Field(min_length=1)
    timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    env: dict[str, str] = Field(default_factory=dict)


class _QuotingFormatter(string.Formatter):
    """Formats a template so every substituted value is one shell word, whatever it contains."""

    def format_field(self, value: object, format_spec: str) -> str:
        return shlex.quote(super().format_field(value, format_spec))

    def get_value(self, key: int | str, args: object, kwargs: dict[str, object]) -> object:
        try:
            return super().get_value(key, args, kwargs)  # type: ignore[arg-type]
        except (KeyError, IndexError):
            raise InvalidProvider(f"Unknown template variable '{{{key}}}' in command") from None


def render_command(template: str, context: DeployContext) -> str:
    try:
        return _QuotingFormatter().format(template, **context.template_values())
    except KeyError as exc:  # a {params[name]} that this deploy did not get
        raise InvalidProvider(f"Missing parameter {exc} for command") from None
    except ValueError as exc:
        raise InvalidProvider(f"Bad command template: {exc}") from None


class ShellProvider:
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        assert isinstance(config, ShellConfig)
        command = render_command(config.command, context)
        runtime.output(f">> Running {command}")
        run_process(
            command,
            cwd=context.workspace,
            env={**runtime.base_env, **config.env, **context.env_vars()},
            output=runtime.output,
            timeout=config.timeout or runtime.timeout,
            read_timeout=config.read_timeout or runtime.read_timeout,
            grace=runtime.grace,
            should_cancel=runtime.should_cancel,
        )


registry.register("shell", ShellConfig)(ShellProvider())
