"""The shell provider: a command template run in the checkout, in its own process group."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from freight.commands import check_template, render_command
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

    secret_fields: ClassVar[tuple[str, ...]] = ("env",)

    @field_validator("command")
    @classmethod
    def _known_variables(cls, command: str) -> str:
        check_template(command)
        return command


class ShellProvider:
    def run(self, config: PluginConfig, context: DeployContext, runtime: ProviderRuntime) -> None:
        assert isinstance(config, ShellConfig)
        command, shown = render_command(config.command, context)
        runtime.output(f">> Running {shown}")
        run_process(
            command,
            cwd=context.workspace,
            env=runtime.command_env(config.env, context.env_vars()),
            identity=runtime.run_as.popen() if runtime.run_as else None,
            output=runtime.output,
            timeout=config.timeout or runtime.timeout,
            read_timeout=config.read_timeout or runtime.read_timeout,
            grace=runtime.grace,
            should_cancel=runtime.should_cancel,
            on_start=runtime.on_start,
        )


registry.register("shell", ShellConfig)(ShellProvider())
