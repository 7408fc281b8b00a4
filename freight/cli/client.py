"""The command line's connection to the API: where it is, which key, who is asking.

From FREIGHT_URL, FREIGHT_API_KEY and FREIGHT_USER, or the file named by FREIGHT_CONFIG
(default ~/.config/freight/config.toml) with `url`, `api_key` and `user`; the environment wins.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_CONFIG = Path("~/.config/freight/config.toml")
DEFAULT_URL = "http://127.0.0.1:5000"


class ApiError(Exception):
    """The API refused (or could not be reached); `error_name` is the API's, when it gave one."""

    def __init__(self, message: str, error_name: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.error_name, self.status = message, error_name, status


@dataclass(frozen=True)
class Config:
    url: str
    api_key: str | None
    user: str

    @classmethod
    def load(cls, environ: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if environ is None else environ)
        path = Path(env.get("FREIGHT_CONFIG", str(DEFAULT_CONFIG))).expanduser()
        file: dict[str, Any] = {}
        if path.is_file():
            try:
                file = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ApiError(f"{path}: {exc}", "bad_config") from exc
        url = env.get("FREIGHT_URL") or file.get("url") or DEFAULT_URL
        return cls(
            url=str(url).rstrip("/").removesuffix("/api/0"),
            api_key=env.get("FREIGHT_API_KEY") or file.get("api_key"),
            user=env.get("FREIGHT_USER") or file.get("user") or getpass.getuser(),
        )


class Client:
    def __init__(self, config: Config, *, timeout: float = 30) -> None:
        if not config.api_key:
            raise ApiError(
                "No API key: set FREIGHT_API_KEY (or api_key in ~/.config/freight/config.toml)",
                "unauthorized",
            )
        self.config = config
        self.http = httpx.Client(
            base_url=f"{config.url}/api/0",
            headers={"Authorization": f"Key {config.api_key}", "Accept": "application/json"},
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                f"Cannot reach the Freight API at {self.config.url}: {exc}", "unreachable"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            raise ApiError(
                f"{method} {path}: HTTP {response.status_code}, not JSON "
                f"(is {self.config.url} a Freight API?)",
                "bad_response",
                response.status_code,
            ) from None
        if response.is_success:
            return data
        if isinstance(data, dict) and "error" in data:
            raise ApiError(
                str(data["error"]), str(data.get("error_name", "error")), response.status_code
            )
        raise ApiError(
            f"{method} {path}: HTTP {response.status_code}", "error", response.status_code
        )

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, json={k: v for k, v in body.items() if v is not None})

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("PUT", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.call("DELETE", path, params={k: v for k, v in params.items() if v is not None})

    def log_pages(self, task_path: str, *, offset: int = 0) -> Iterator[dict[str, Any]]:
        """Log pages from `offset` on, until an empty page."""
        while True:
            page = self.get(f"/deploys/{task_path}/log/", offset=offset)
            if not page["chunks"]:
                return
            yield page
            offset = page["nextOffset"]


def task_path(task: str) -> str:
    """`APP/ENV#N` (freight's name for a deploy) as the API's `APP/ENV/N` path."""
    app, slash, rest = task.partition("/")
    env, hash_, number = rest.partition("#")
    if not (app and slash and env and hash_ and number.isdigit()):
        raise ApiError(f"'{task}' is not a deploy name: expected APP/ENV#NUMBER", "invalid_request")
    return f"{app}/{env}/{number}"
