"""Imports point one way: interfaces → service → db, catalogue, adapters; adapters → errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(*patterns: str) -> list[Path]:
    return sorted(p for pattern in patterns for p in ROOT.glob(pattern))


RULES = [
    (
        ("freight/service/*.py",),
        (
            "prefect",
            "fastapi",
            "typer",
            "httpx",
            "os",
            "freight.orchestrator",
            "freight.execution",
            "freight.settings",
        ),
    ),
    (
        ("freight/db/*.py", "freight/db/**/*.py"),
        ("freight.service", "freight.api", "flows", "prefect"),
    ),
    (
        (
            "freight/providers/*.py",
            "freight/checks/*.py",
            "freight/notifiers/*.py",
            "freight/vcs.py",
            "freight/runner.py",
            "freight/catalogue.py",
        ),
        ("freight.db", "freight.service", "freight.settings", "sqlalchemy", "prefect"),
    ),
    (("freight/errors.py",), ("freight",)),
    # Interfaces: the API's routes hand work to the service; the command line talks HTTP.
    (("freight/api/routes/*.py",), ("prefect", "typer", "freight.orchestrator", "freight.runner")),
    (
        (
            "freight/cli/client.py",
            "freight/cli/output.py",
            "freight/cli/deploys.py",
            "freight/cli/releases.py",
            "freight/cli/locks.py",
        ),
        ("freight.db", "freight.service", "freight.api", "sqlalchemy", "prefect"),
    ),
    # The agent runs on every deployed machine: light, and talking only HTTP to Freight.
    (
        ("freight/agent/*.py", "freight/commands.py", "freight/cli/agent.py"),
        (
            "freight.db",
            "freight.service",
            "freight.execution",
            "freight.providers",
            "freight.api",
            "freight.settings",
            "sqlalchemy",
            "prefect",
            "fastapi",
        ),
    ),
    # The worker's command runs before every flow run: the standard library only.
    (
        ("freight/forkclient.py",),
        ("freight.db", "freight.service", "prefect", "sqlalchemy", "httpx"),
    ),
    (
        ("flows/*.py",),
        ("sqlalchemy", "subprocess", "freight.db.models", "freight.vcs", "freight.runner"),
    ),
]


@pytest.mark.parametrize(
    ("patterns", "forbidden"), RULES, ids=lambda v: str(v[0]) if isinstance(v, tuple) else None
)
def test_layers_import_only_downwards(
    patterns: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    files = modules(*patterns)
    assert files, patterns
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imports_of(path)
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    ]
    assert offenders == []


def test_only_the_engine_edge_imports_prefect_inside_freight() -> None:
    # The orchestrator hands deploys to Prefect; the fork server runs Prefect's engine.
    users = sorted(
        str(path.relative_to(ROOT))
        for path in modules("freight/**/*.py")
        if any(name == "prefect" or name.startswith("prefect.") for name in imports_of(path))
    )
    assert users == ["freight/forkserver.py", "freight/orchestrator.py"]


def calls_to(path: Path, attribute: str) -> list[int]:
    """Lines where `X.attribute(...)` is called."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attribute
    ]


def test_the_service_layer_never_commits_nor_opens_its_own_transactions() -> None:
    # The caller (the execution layer, a request) owns the transaction.
    offenders = [
        f"{path.relative_to(ROOT)}:{line} calls .{name}()"
        for path in modules("freight/service/*.py")
        for name in ("commit", "rollback", "begin")
        for line in calls_to(path, name)
    ] + [
        f"{path.relative_to(ROOT)} uses session_scope"
        for path in modules("freight/service/*.py")
        if "session_scope" in path.read_text()
    ]
    assert offenders == []


def test_one_module_hands_deploys_to_the_engine() -> None:
    """Claiming a queue's head and handing it over happen in freight/execution/handover.py."""
    submitters = sorted(
        str(path.relative_to(ROOT))
        for path in modules("freight/**/*.py", "flows/*.py")
        if calls_to(path, "submit") or calls_to(path, "claim_next")
    )
    assert submitters == ["freight/execution/handover.py"]
