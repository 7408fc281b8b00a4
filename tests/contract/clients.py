"""Requests exactly as Freight's clients send them (headers, encodings, paths), from their
sources: getsentry/freight-cli (`freight_cli.py`) and getsentry/hubot-freight (`deploy.js`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

JSON = "application/json"


class FreightCli:
    """freight-cli: FREIGHT_BASE_URL=http://host/api/0/, JSON bodies, `Key` auth."""

    def __init__(self, base_url: str, api_key: str, user: str = "ana") -> None:
        parts = urlsplit(base_url)
        self.root = f"{parts.scheme}://{parts.netloc}"
        self.path = parts.path.rstrip("/")
        self.api_key, self.user = api_key, user

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {
            "Accept": JSON,
            "User-Agent": "freight-cli",
            "Authorization": f"Key {self.api_key}",
        }
        content = None
        if body:
            content = json.dumps(body)
            headers["Content-Type"] = JSON
        return httpx.request(
            method, self.root + self.path + path, headers=headers, content=content, timeout=30
        )

    def deploy(self, app: str, env: str | None = None, ref: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"app": app, "user": self.user, "force": False}
        if env:
            body["env"] = env
        if ref:
            body["ref"] = ref
        return self.request("POST", "/deploys/", body)

    def status(self, task: str) -> httpx.Response:
        return self.request("GET", f"/deploys/{_task_path(task)}/")

    def tail_first(self, task: str) -> httpx.Response:
        return self.request("GET", f"/deploys/{_task_path(task)}/log/?offset=-1&limit=1000")

    def tail_next(self, task: str, offset: int) -> httpx.Response:
        return self.request("GET", f"/deploys/{_task_path(task)}/log/?offset={offset}")

    def cancel(self, task: str) -> httpx.Response:
        return self.request("PUT", f"/deploys/{_task_path(task)}/", {"status": "cancelled"})

    def app_create(self, name: str, repository: str, config: str) -> httpx.Response:
        body = {"name": name, "repository": repository, "provider": "shell"}
        body["provider_config"] = config  # the --config string exactly as typed
        return self.request("POST", "/apps/", body)

    def app_edit(self, app: str, edit: dict[str, Any]) -> httpx.Response:
        """GET, drop `id`, apply the editor's changes, PUT every key back; lists and dicts go
        back JSON-encoded, as freight-cli does."""
        data = self.request("GET", f"/apps/{app}/").json()
        data.pop("id")
        data.update(edit)
        body = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in data.items()}
        return self.request("PUT", f"/apps/{app}/", body)

    def webhook_url(self, hook: str, action: str, app: str, env: str) -> str:
        digest = hmac.new(
            self.api_key.encode(), f"{hook}/{action}/{app}/{env}".encode(), hashlib.sha256
        ).hexdigest()
        return f"{self.root}/webhooks/{hook}/{action}/{app}/{env}/{digest}/"


def _task_path(task: str) -> str:
    app, rest = task.split("/", 1)
    env, number = rest.split("#", 1)
    return f"{app}/{env}/{number}"


class Hubot:
    """hubot-freight: HUBOT_FREIGHT_URL=http://host/api/0 (no trailing slash), JSON bodies
    with undefined fields left out, the /tasks/ routes."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url, self.api_key = url, api_key

    def request(self, method: str, path: str, data: dict[str, Any]) -> httpx.Response:
        body = json.dumps({k: v for k, v in data.items() if v is not None})
        headers = {
            "Accept": JSON,
            "Authorization": f"Key {self.api_key}",
            "Content-Type": JSON,
        }
        return httpx.request(method, self.url + path, headers=headers, content=body, timeout=30)

    def deploy(self, app: str, ref: str | None, env: str | None, user: str) -> httpx.Response:
        return self.request("POST", "/tasks/", {"ref": ref, "env": env, "user": user, "app": app})

    def rollback(self, app: str, env: str | None, user: str) -> httpx.Response:
        return self.request(
            "POST", "/tasks/", {"ref": ":previous", "env": env, "user": user, "app": app}
        )

    def cancel(self, app: str, env: str, number: int) -> httpx.Response:
        return self.request("PUT", f"/tasks/{app}/{env}/{number}/", {"status": "cancelled"})
