"""The agent's configuration file: a good one loads (with `${NAME}` read from the environment),
and each kind of bad one is refused with its file and field named, before the agent starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from freight.agent.config import AgentConfigError, load

GOOD = {
    "url": "https://freight.example.com",
    "key": "${FREIGHT_AGENT_KEY}",
    "name": "web-1",
    "labels": {"region": "eu-west", "role": "web"},
    "interval": 15,
    "apps": [
        {
            "app": "web",
            "env": "production",
            "version": {"command": "cat /srv/web/REVISION"},
            "deploy": {"command": "/srv/web/bin/deploy {sha}"},
        },
        {"app": "api", "env": "production", "version": {"file": "/srv/api/REVISION"}},
    ],
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_app(**changes: object) -> dict[str, object]:
    app = {**GOOD["apps"][0], **changes}  # type: ignore[index]
    return {**GOOD, "apps": [app]}


def test_a_good_file_loads_with_its_key_from_the_environment(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD), {"FREIGHT_AGENT_KEY": "frt_secret"})
    assert config.key.get_secret_value() == "frt_secret"
    assert "frt_secret" not in repr(config)
    assert config.secrets == {"frt_secret"}  # what its lines to Freight are masked of
    assert config.entry("web", "production") is not None
    assert config.entry("api", "production").deploy is None  # type: ignore[union-attr]
    assert config.entry("web", "staging") is None


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({**GOOD, "url": "ftp://freight"}, "url", "should match pattern"),
        ({**GOOD, "interval": 0}, "interval", "greater than or equal to 1"),
        ({**GOOD, "intervall": 15}, "intervall", "Extra inputs are not permitted"),
        ({**GOOD, "name": "../etc"}, "name", "not a valid machine name"),
        ({**GOOD, "apps": []}, "apps", "at least 1 item"),
        (with_app(app="web/../x"), "apps[0].app", "not a valid name"),
        (with_app(version={}), "apps[0].version", "exactly one of 'command' or 'file'"),
        (
            with_app(version={"command": "x", "file": "/x"}),
            "apps[0].version",
            "exactly one of 'command' or 'file'",
        ),
        (
            with_app(deploy={"command": "deploy {nope}"}),
            "apps[0].deploy.command",
            "unknown template variable '{nope}'",
        ),
        (
            with_app(deploy={"command": "deploy '{sha}'"}),
            "apps[0].deploy.command",
            "inside single quotes",
        ),
        ({**GOOD, "apps": [GOOD["apps"][0]] * 2}, "", "web/production is listed twice"),  # type: ignore[index]
        ({**GOOD, "key": "${NOT_SET}"}, "key", "${NOT_SET} is not set in the environment"),
        ("url: [unclosed", "", "not valid YAML"),
        ("- just\n- a list\n", "", "must be a mapping"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, data: object, field: str, problem: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(AgentConfigError) as caught:
        load(path, {"FREIGHT_AGENT_KEY": "k"})
    assert caught.value.path == str(path)
    assert caught.value.field == field
    assert problem in caught.value.message
    assert caught.value.message.startswith(f"{path}: ")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="cannot read it: No such file"):
        load(tmp_path / "absent.yaml", {})


def test_freight_agent_with_a_bad_file_does_not_start(tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "interval": "often"})
    done = subprocess.run(
        [str(Path(sys.executable).parent / "freight"), "agent", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"FREIGHT_AGENT_KEY": "k", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert f"{path}: interval: Input should be a valid number" in done.stderr
    assert "Agent" not in done.stderr  # it never said it checks in


def test_the_agent_imports_neither_prefect_nor_the_database() -> None:
    # What `freight agent` loads: the command line and the agent.
    code = (
        "import sys, re, pathlib; "
        "from freight.cli import agent, apps, deploys, keys, locks, releases, up, worker; "
        "import freight.agent.service; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'prefect', 'sqlalchemy', 'fastapi', 'uvicorn', 'fabric', 'paramiko', 'alembic'}); "
        # Resident now (ru_maxrss would count the forking test process's pages too).
        "status = pathlib.Path('/proc/self/status').read_text(); "
        "print(heavy, int(re.search(r'VmRSS:\\s+(\\d+)', status).group(1)) // 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    heavy, rss_mb = done.stdout.rsplit(" ", 1)
    assert heavy == "[]", done.stdout
    assert int(rss_mb) < 80, f"the agent's process holds {rss_mb} MB"
