"""What a deploy command sees: its variables (DeployContext) and its template
(`bin/deploy {environment} {sha}`), shared by the providers that run commands and by the agent
(which imports nothing heavier than this). Each variable reaches the shell only as a quoted
reference to its FREIGHT_* environment variable, never as text the shell would parse."""

from __future__ import annotations

import enum
import os
import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from freight.errors import InvalidProvider


@dataclass(frozen=True)
class DeployContext:
    deploy_id: int
    app: str
    environment: str
    number: int
    ref: str
    sha: str
    prev_sha: str | None
    user: str
    workspace: Path
    params: Mapping[str, str] = field(default_factory=dict)

    def template_values(self) -> dict[str, object]:
        return {
            "app": self.app,
            "environment": self.environment,
            "sha": self.sha,
            "prev_sha": self.prev_sha or "",
            "ref": self.ref,
            "number": self.number,
            "workspace": str(self.workspace),
            "params": dict(self.params),
        }

    def env_vars(self) -> dict[str, str]:
        env = {
            "FREIGHT_APP": self.app,
            "FREIGHT_ENVIRONMENT": self.environment,
            "FREIGHT_SHA": self.sha,
            "FREIGHT_PREV_SHA": self.prev_sha or "",
            "FREIGHT_REF": self.ref,
            "FREIGHT_NUMBER": str(self.number),
            "FREIGHT_DEPLOY_ID": str(self.deploy_id),
            "FREIGHT_USER": self.user,
            "FREIGHT_WORKSPACE": str(self.workspace),
        }
        for key, value in self.params.items():
            env[f"FREIGHT_PARAM_{key.upper()}"] = value
        return env


# Environment variables a deploy command inherits from the runner (or the agent) that starts
# it; the rest (keys, database URLs) is not its business.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "SSH_AUTH_SOCK", "TMPDIR")


def inherited_env() -> dict[str, str]:
    return {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}


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


class _Quote(enum.Enum):
    NONE = ""
    SINGLE = "'"
    DOUBLE = '"'


def _quote_after(literal: str, state: _Quote) -> _Quote:
    """The shell quoting in force after `literal`, starting in `state`."""
    escaped = False
    for char in literal:
        if escaped:
            escaped = False
        elif char == "\\" and state != _Quote.SINGLE:
            escaped = True
        elif state == _Quote.NONE and char in "'\"":
            state = _Quote(char)
        elif state.value == char:
            state = _Quote.NONE
    return state


def _fields(template: str) -> list[tuple[str, str | None, _Quote]]:
    """Split a template into (literal text, variable name or None, quoting at the variable)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad command template: {exc}") from None
    result = []
    quote = _Quote.NONE
    for literal, name, spec, conversion in parts:
        quote = _quote_after(literal, quote)
        if name is not None and quote == _Quote.SINGLE:
            raise ValueError(f"template variable '{{{name}}}' inside single quotes never expands")
        if name is not None and (spec or conversion):
            raise ValueError(f"template variable '{{{name}}}' takes no format or conversion")
        if name is not None and name not in VARIABLES and not PARAM.fullmatch(name):
            raise ValueError(
                f"unknown template variable '{{{name}}}' (known: "
                + ", ".join([*VARIABLES, "params[NAME]"])
                + ")"
            )
        result.append((literal, name, quote))
    return result


def check_template(template: str) -> None:
    """Raise ValueError (for the config's validator) if the template is not usable."""
    _fields(template)


def render_command(template: str, context: DeployContext) -> tuple[str, str]:
    """The command to run and the command to show.

    The command that runs never contains a value: each variable becomes a reference to its
    FREIGHT_* environment variable, double-quoted unless the template already puts it inside
    double quotes. The shell expands such a reference without re-parsing it, so no ref, param or
    other value can inject shell syntax or split into several words. The shown form carries the
    values, for the log.
    """
    values = {
        name: str(value) for name, value in context.template_values().items() if name in VARIABLES
    }
    to_run, to_show = [], []
    for literal, name, quote in _fields(template):
        to_run.append(literal)
        to_show.append(literal)
        if name is None:
            continue
        param = PARAM.fullmatch(name)
        if param:
            if param[1] not in context.params:
                raise InvalidProvider(f"The command needs parameter '{param[1]}', not given")
            variable, value = f"FREIGHT_PARAM_{param[1].upper()}", context.params[param[1]]
        else:
            variable, value = VARIABLES[name], values[name]
        if quote == _Quote.DOUBLE:
            to_run.append(f"${{{variable}}}")
            to_show.append(value)
        else:
            to_run.append(f'"${{{variable}}}"')
            to_show.append(shlex.quote(value))
    return "".join(to_run), "".join(to_show)


def exports(env: Mapping[str, str]) -> str:
    """`export NAME='value' ...`: the variables a rendered command refers to, for a shell that
    does not have them in its environment (a remote one)."""
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
