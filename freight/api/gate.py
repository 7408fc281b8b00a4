"""What every request must pass before a route sees it: a body under the size limit, and no
NUL character in its path, query string or form body. Databases cannot store NUL in text
(PostgreSQL refuses it), so such input is refused here as bad input, naming where it was,
instead of failing deep inside a query. JSON bodies are checked where they are parsed
(`freight.api.inputs`)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORM = b"application/x-www-form-urlencoded"


def nul_in_pairs(pairs: list[tuple[str, str]]) -> str | None:
    """The name of the first argument whose name or value holds a NUL character."""
    return next((repr(k) if "\x00" in k else k for k, v in pairs if "\x00" in k + v), None)


class RequestGate:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _refuse(send, 413, f"Request body over {self.limit} bytes", "too_large")
            return
        if "\x00" in scope["path"]:
            await _refuse(send, 400, "path: must not contain a NUL character", "invalid_request")
            return
        query = scope["query_string"].decode("latin-1")
        bad = nul_in_pairs(parse_qsl(query, keep_blank_values=True))
        if bad is not None:
            await _refuse(send, 400, f"{bad}: must not contain a NUL character", "invalid_request")
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _refuse(send, 413, f"Request body over {self.limit} bytes", "too_large")
                return
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() == FORM:
            bad = nul_in_pairs(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            if bad is not None:
                message = f"{bad}: must not contain a NUL character"
                await _refuse(send, 400, message, "invalid_request")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, message: str, name: str) -> None:
    payload = json.dumps({"error": message, "error_name": name}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
