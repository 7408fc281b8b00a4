"""Shared checks and data for the contract tests."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.service import logs, releases

DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def body(response: httpx.Response, status: int) -> Any:
    """The JSON body, after checking the status and the exact Content-Type clients require."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    return response.json()


def error(response: httpx.Response, status: int, name: str | None) -> str:
    data = body(response, status)
    assert set(data) == ({"error"} if name is None else {"error", "error_name"}), data
    assert data.get("error_name") == name, data
    assert isinstance(data["error"], str) and data["error"]
    return str(data["error"])


def finish(engine: Engine, deploy_id: int, *, sha: str | None = None) -> None:
    """Mark a deploy finished, as its run would (for tests about release state)."""
    with session_scope(engine) as session:
        deploy = session.get_one(Deploy, deploy_id)
        deploy.status = DeployStatus.FINISHED
        deploy.date_started = deploy.date_started or utcnow()
        deploy.date_finished = utcnow()
        if sha:
            deploy.sha = sha
        releases.record_finished(session, deploy)


def write_log(engine: Engine, deploy_id: int, *lines: str) -> None:
    with session_scope(engine) as session:
        deploy = session.get_one(Deploy, deploy_id)
        for line in lines:
            logs.append(session, deploy, line)


def count_deploys(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count(Deploy.id))) or 0)


def add_deploys(engine: Engine, app_id: int, environment: str, count: int, **values: Any) -> None:
    """Many finished-looking rows at once, without a git fetch each (for paging and listing)."""
    with session_scope(engine) as session:
        start = session.scalar(
            select(func.max(Deploy.number)).where(
                Deploy.app_id == app_id, Deploy.environment == environment
            )
        )
        for number in range((start or 0) + 1, (start or 0) + count + 1):
            session.add(
                Deploy(
                    app_id=app_id,
                    environment=environment,
                    number=number,
                    ref="main",
                    sha=f"{number:040x}",
                    status=values.get("status", DeployStatus.FINISHED),
                    params={},
                    config={},
                    **{k: v for k, v in values.items() if k != "status"},
                )
            )
        session.flush()
        releases.rebuild(session)
