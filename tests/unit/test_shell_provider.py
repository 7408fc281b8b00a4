"""Rendering shell command templates: values only ever reach the shell as variable expansions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from freight.commands import render_command
from freight.errors import InvalidProvider
from freight.providers import DeployContext
from freight.providers.shell import ShellConfig

CONTEXT = DeployContext(
    deploy_id=7,
    app="web",
    environment="production",
    number=42,
    ref="main; rm -rf /",
    sha="3f2a" * 10,
    prev_sha=None,
    user="ana",
    workspace=Path("/tmp/w/7"),
    params={"region": "eu west $(id)"},
)


def test_render_runs_variables_and_shows_values() -> None:
    to_run, shown = render_command(
        "bin/deploy {environment} {sha} --ref={ref} {params[region]}", CONTEXT
    )
    assert to_run == (
        'bin/deploy "${FREIGHT_ENVIRONMENT}" "${FREIGHT_SHA}" --ref="${FREIGHT_REF}" '
        '"${FREIGHT_PARAM_REGION}"'
    )
    assert shown == f"bin/deploy production {'3f2a' * 10} --ref='main; rm -rf /' 'eu west $(id)'"


def test_render_keeps_literal_braces_and_empty_prev_sha() -> None:
    to_run, shown = render_command("echo {{x}} {prev_sha}", CONTEXT)
    assert to_run == 'echo {x} "${FREIGHT_PREV_SHA}"'
    assert shown == "echo {x} ''"


def test_missing_param_is_a_clear_error() -> None:
    with pytest.raises(InvalidProvider, match="parameter 'colour'"):
        render_command("echo {params[colour]}", CONTEXT)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("echo {nope}", "unknown template variable '{nope}'"),
        ("echo {sha!r}", "takes no format"),
        ("echo {sha:>10}", "takes no format"),
        ("echo {params[bad-name]}", "unknown template variable"),
        ("echo {sha", "bad command template"),
    ],
)
def test_config_refuses_bad_templates(command: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        ShellConfig(command=command)


def test_environment_exports_every_variable_and_param() -> None:
    env = CONTEXT.env_vars()
    assert env["FREIGHT_NUMBER"] == "42"
    assert env["FREIGHT_PARAM_REGION"] == "eu west $(id)"
    assert env["FREIGHT_PREV_SHA"] == ""
    assert env["FREIGHT_USER"] == "ana"


def test_variables_inside_double_quotes_stay_one_word_and_inert() -> None:
    to_run, shown = render_command('echo "ref: {ref}" \'{{literal}}\' "x\\"{sha}"', CONTEXT)
    assert to_run == 'echo "ref: ${FREIGHT_REF}" \'{literal}\' "x\\"${FREIGHT_SHA}"'
    assert shown == f'echo "ref: main; rm -rf /" \'{{literal}}\' "x\\"{"3f2a" * 10}"'


def test_variable_inside_single_quotes_is_refused() -> None:
    with pytest.raises(ValidationError, match="inside single quotes"):
        ShellConfig(command="echo '{sha}'")
    # A quote escaped outside quotes opens nothing.
    assert ShellConfig(command="echo \\'{sha}").command
