"""The GitHub REST API as Freight's checks and notifiers use it: auth and version headers,
`Link` paging, and GitHub's errors turned into ones that say what to do."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from freight.errors import IntegrationError

API_VERSION = "2022-11-28"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_REPO = re.compile(
    r"^(?:git@github\.com:|ssh://git@github\.com/|https?://(?:[^@/]+@)?github\.com/)"
    r"([\w.-]+)/([\w.-]+?)(?:\.git)?/?$"
)


class GitHubError(IntegrationError):
    """GitHub refused or failed; `retry_after` is set when waiting may help (5xx, rate limit)."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def repo_of(url: str) -> str | None:
    """`owner/name` of a GitHub remote in any of its forms, else None."""
    match = _REPO.match(url)
    return f"{match[1]}/{match[2]}" if match else None


@dataclass(frozen=True)
class GitHub:
    client: httpx.Client
    base_url: str
    token: str | None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else f"{self.base_url.rstrip('/')}{path}"
        try:
            response = self.client.request(method, url, headers=self._headers(), **kwargs)
        except httpx.HTTPError as exc:
            raise GitHubError(
                f"GitHub unreachable at {self.base_url}: {exc}", status=0, retry_after=5
            ) from exc
        if response.is_success:
            return response
        raise _error(method, path, response)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def paged(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paged list (the `key` list of each page), following `Link` next."""
        items: list[Any] = []
        url: str | None = path
        query: dict[str, Any] | None = {"per_page": 100, **(params or {})}
        while url:
            response = self.request("GET", url, params=query)
            items.extend(response.json()[key])
            found = _NEXT.search(response.headers.get("link", ""))
            url, query = (found[1], None) if found else (None, None)
        return items


def _error(method: str, path: str, response: httpx.Response) -> GitHubError:
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = response.text[:200]
    status = response.status_code
    where = f"GitHub {method} {path}"
    if status in (403, 429) and (
        response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers
    ):
        wait = _rate_limit_wait(response)
        return GitHubError(
            f"{where}: rate limited ({message}); retrying in {wait:.0f}s",
            status=status,
            retry_after=wait,
        )
    if status >= 500:
        return GitHubError(
            f"{where}: GitHub answered {status} {message}", status=status, retry_after=5
        )
    hint = {
        401: " (is the token right, and not expired?)",
        403: " (does the token have access to this repository?)",
        404: " (is the repository name right, and can the token see it?)",
    }.get(status, "")
    return GitHubError(f"{where}: {status} {message}{hint}", status=status)


def _rate_limit_wait(response: httpx.Response) -> float:
    if "retry-after" in response.headers:
        try:
            return max(1.0, float(response.headers["retry-after"]))
        except ValueError:
            return 60.0
    try:
        return max(1.0, float(response.headers["x-ratelimit-reset"]) - time.time())
    except (KeyError, ValueError):
        return 60.0
