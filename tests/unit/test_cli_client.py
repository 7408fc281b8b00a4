"""The command line's configuration and deploy names, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from freight.cli.client import ApiError, Client, Config, task_path


def test_config_comes_from_the_file_and_the_environment_wins(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text(
        'url = "http://freight.internal:5000/api/0/"\napi_key = "from-file"\nuser = "ana"\n'
    )
    from_file = Config.load({"FREIGHT_CONFIG": str(file)})
    assert from_file == Config(url="http://freight.internal:5000", api_key="from-file", user="ana")
    overridden = Config.load(
        {"FREIGHT_CONFIG": str(file), "FREIGHT_API_KEY": "from-env", "FREIGHT_USER": "bob"}
    )
    assert (overridden.api_key, overridden.user, overridden.url) == (
        "from-env",
        "bob",
        "http://freight.internal:5000",
    )
    bare = Config.load({"FREIGHT_CONFIG": str(tmp_path / "missing.toml"), "USER": "x"})
    assert bare.url == "http://127.0.0.1:5000" and bare.api_key is None


def test_a_broken_config_file_or_no_key_is_one_clear_error(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text("url = \n")
    with pytest.raises(ApiError, match=str(file)):
        Config.load({"FREIGHT_CONFIG": str(file)})
    with pytest.raises(ApiError, match="FREIGHT_API_KEY"):
        Client(Config(url="http://x", api_key=None, user="ana"))


@pytest.mark.parametrize(
    ("name", "path"),
    [("web/production#12", "web/production/12"), ("my.app/eu-west#1", "my.app/eu-west/1")],
)
def test_deploy_names_become_api_paths(name: str, path: str) -> None:
    assert task_path(name) == path


@pytest.mark.parametrize("name", ["web", "web/production", "web#1", "web/production#x", "/p#1"])
def test_anything_else_is_refused(name: str) -> None:
    with pytest.raises(ApiError, match="APP/ENV#NUMBER"):
        task_path(name)


@pytest.mark.parametrize("queue", ["../prod", "prod\x00net", ""])
def test_a_worker_asked_to_serve_a_hostile_queue_name_refuses_naming_the_option(
    queue: str,
) -> None:
    from typer.testing import CliRunner

    from freight.cli import app, worker  # noqa: F401  (the command registers on import)

    result = CliRunner().invoke(app, ["worker", "--queue", queue])
    assert result.exit_code == 2, result.output
    assert "--queue" in result.output and "is not a valid name" in result.output
