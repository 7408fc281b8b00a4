"""Schema-driven fuzzing: schemathesis generates requests from our OpenAPI document, valid and
not, for every operation; none may get a 5xx, and every answer is JSON with the exact type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.schemas import APIOperation

from freight.db import make_engine, session_scope
from freight.db.migrate import upgrade
from freight.settings import Settings
from tests.apiserver import ApiServer, serve_api
from tests.factories import GitRepo, RecordingOrchestrator, make_app

EXAMPLES_PER_OPERATION = 40


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[ApiServer]:
    # One database suffices: the property is about the API's handling of input, not SQL.
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    upgrade(url)
    engine = make_engine(url)
    settings = Settings(
        home=tmp_path / "home",
        database_url=url,
        workspace_root=tmp_path / "workspaces",
        allow_local_repositories=True,
        api_key="s3cr3t-api-key",
    )
    with session_scope(engine) as session:
        make_app(session, GitRepo.create(tmp_path / "repo"), name="web")
    with serve_api(settings, engine, RecordingOrchestrator()) as running:
        yield running
    engine.dispose()


def fuzz(operation: APIOperation, client: httpx.Client, failures: list[str]) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Case) -> None:
        response = client.request(
            case.method,
            case.formatted_path,
            params=case.query,
            json=case.body if isinstance(case.body, dict | list) else None,
            headers={k: str(v) for k, v in (case.headers or {}).items()},
        )
        if (
            response.status_code >= 500
            or response.headers.get("content-type") != "application/json"
        ):
            failures.append(
                f"{case.method} {case.formatted_path} {case.query} {case.body!r} -> "
                f"{response.status_code} {response.text[:200]}"
            )

    check()


def test_no_generated_request_gets_a_server_error(fuzzed: ApiServer) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.api}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    with httpx.Client(
        base_url=fuzzed.url, headers={"Authorization": "Key s3cr3t-api-key"}, timeout=30
    ) as client:
        for operation in operations:
            fuzz(operation, client, failures)
    assert failures == []
