"""A GitHub REST API double: combined commit status, check runs (paged, `Link` headers),
commit statuses, deployments and deployment statuses, as GitHub documents them (REST API
2022-11-28): bearer-token auth, `{"message", "documentation_url"}` errors, 422 validation."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.doubles import HttpDouble, Reply, Request

DOCS = "https://docs.github.com/rest"
STATUS_STATES = {"error", "failure", "pending", "success"}
DEPLOYMENT_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}


@dataclass
class GitHubDouble(HttpDouble):
    token: str = "gh-token"
    repo: str = "acme/web"
    # sha -> statuses as GitHub keeps them (latest per context) and check runs
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    check_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    created_statuses: list[dict[str, Any]] = field(default_factory=list)
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)
    deployment_statuses: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1000)
        repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        self.route("GET", repo + r"/commits/(?P<ref>[^/]+)/status", self._combined)
        self.route("GET", repo + r"/commits/(?P<ref>[^/]+)/check-runs", self._check_runs)
        self.route("POST", repo + r"/statuses/(?P<sha>[0-9a-f]{40})", self._create_status)
        self.route("POST", repo + r"/deployments", self._create_deployment)
        self.route("POST", repo + r"/deployments/(?P<id>\d+)/statuses", self._deployment_status)

    # -- what tests set up ----------------------------------------------------------------

    def set_status(self, sha: str, context: str, state: str, description: str = "") -> None:
        kept = [s for s in self.statuses.get(sha, []) if s["context"] != context]
        kept.append(
            {
                "context": context,
                "state": state,
                "description": description,
                "target_url": f"https://ci.example.com/{context}/{sha[:7]}",
                "id": next(self._ids),
            }
        )
        self.statuses[sha] = kept

    def add_check_run(
        self, sha: str, name: str, status: str, conclusion: str | None = None, title: str = ""
    ) -> None:
        run_id = next(self._ids)
        self.check_runs.setdefault(sha, []).append(
            {
                "id": run_id,
                "name": name,
                "head_sha": sha,
                "status": status,
                "conclusion": conclusion,
                "started_at": f"2026-12-01T10:{run_id % 60:02d}:00Z",
                "html_url": f"https://github.com/{self.repo}/runs/{run_id}",
                "output": {"title": title, "summary": ""},
            }
        )

    # -- the API ----------------------------------------------------------------------------

    def _refuse(self, request: Request) -> Reply | None:
        auth = request.headers.get("authorization", "")
        if auth not in (f"Bearer {self.token}", f"token {self.token}"):
            return Reply(401, {"message": "Bad credentials", "documentation_url": DOCS})
        if f"{request.match['owner']}/{request.match['name']}" != self.repo:
            return Reply(404, {"message": "Not Found", "documentation_url": DOCS})
        return None

    def _combined(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        statuses = self.statuses.get(request.match["ref"], [])
        states = {s["state"] for s in statuses}
        if states & {"error", "failure"}:
            state = "failure"
        elif not statuses or "pending" in states:
            state = "pending"
        else:
            state = "success"
        return Reply(
            200,
            {
                "state": state,
                "sha": request.match["ref"],
                "total_count": len(statuses),
                "statuses": statuses,
            },
        )

    def _check_runs(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        runs = self.check_runs.get(request.match["ref"], [])
        if request.arg("filter", "latest") == "latest":
            latest: dict[str, dict[str, Any]] = {}
            for run in runs:
                latest[run["name"]] = run
            runs = list(latest.values())
        per_page = min(int(request.arg("per_page", "30") or 30), 100)
        page = int(request.arg("page", "1") or 1)
        chunk = runs[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(runs):
            kind = request.arg("filter", "latest")
            base = f"{self.url}{request.path}?per_page={per_page}&filter={kind}"
            last = (len(runs) + per_page - 1) // per_page
            headers["Link"] = (
                f'<{base}&page={page + 1}>; rel="next", <{base}&page={last}>; rel="last"'
            )
        return Reply(200, {"total_count": len(runs), "check_runs": chunk}, headers)

    def _create_status(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        body = request.json()
        if body.get("state") not in STATUS_STATES:
            return _invalid("Status", "state", "invalid")
        if len(body.get("description") or "") > 140:
            return _invalid("Status", "description", "custom")
        status = {**body, "sha": request.match["sha"], "id": next(self._ids)}
        self.created_statuses.append(status)
        return Reply(201, status)

    def _create_deployment(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        body = request.json()
        if not body.get("ref"):
            return _invalid("Deployment", "ref", "missing_field")
        deployment_id = next(self._ids)
        deployment = {
            "id": deployment_id,
            "sha": body["ref"],
            "ref": body["ref"],
            "task": body.get("task", "deploy"),
            "environment": body.get("environment", "production"),
            "description": body.get("description", ""),
            "payload": body.get("payload", {}),
            "statuses_url": f"{self.url}/repos/{self.repo}/deployments/{deployment_id}/statuses",
        }
        self.deployments[deployment_id] = {**deployment, "request": body}
        return Reply(201, deployment)

    def _deployment_status(self, request: Request) -> Reply:
        if refused := self._refuse(request):
            return refused
        deployment_id = int(request.match["id"])
        if deployment_id not in self.deployments:
            return Reply(404, {"message": "Not Found", "documentation_url": DOCS})
        body = request.json()
        if body.get("state") not in DEPLOYMENT_STATES:
            return _invalid("DeploymentStatus", "state", "invalid")
        if len(body.get("description") or "") > 140:
            return _invalid("DeploymentStatus", "description", "custom")
        status = {**body, "deployment_id": deployment_id, "id": next(self._ids)}
        self.deployment_statuses.append(status)
        return Reply(201, status)


def _invalid(resource: str, field_name: str, code: str) -> Reply:
    return Reply(
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": resource, "field": field_name, "code": code}],
            "documentation_url": DOCS,
        },
    )


def rate_limited(reset: float) -> Reply:
    return Reply(
        403,
        {"message": "API rate limit exceeded for user ID 1.", "documentation_url": DOCS},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(reset))},
    )
