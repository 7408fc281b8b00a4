"""Freight's paging: `cursor` is a 1-based page number, `limit` at most 100 (default 25), and a
`Link` header with `rel="previous"`/`rel="next"` URLs that keep the other query arguments."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
# Pages past this would start beyond any row id the database can hold.
MAX_CURSOR = 2**31 // MAX_LIMIT


@dataclass(frozen=True)
class Page:
    cursor: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.cursor - 1) * self.limit


def link_header(request: Request, links: dict[str, dict[str, str | int]]) -> str:
    """`<URL>; rel="NAME"` for each link: this URL with the given arguments replaced."""
    base = str(request.url.replace(query=""))
    parts = []
    for rel, replace in links.items():
        args = [(k, v) for k, v in request.query_params.multi_items() if k not in replace]
        args += [(k, str(v)) for k, v in replace.items()]
        parts.append(f'<{base}?{urlencode(args)}>; rel="{rel}"')
    return ", ".join(parts)


def paged(request: Request, page: Page, rows: list[object], body: list[object]) -> JSONResponse:
    """The response for one page; `rows` was fetched with one extra row to tell if more follow."""
    links: dict[str, dict[str, str | int]] = {}
    if page.cursor > 1:
        links["previous"] = {"cursor": page.cursor - 1}
    if len(rows) > page.limit:
        links["next"] = {"cursor": page.cursor + 1}
    response = JSONResponse(body[: page.limit])
    if links:
        response.headers["Link"] = link_header(request, links)
    return response
