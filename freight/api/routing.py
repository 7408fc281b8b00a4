"""A router whose routes answer with and without their trailing slash (Freight's paths end in
`/`; clients differ), without a redirect a POST would not survive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.datastructures import Default, DefaultPlaceholder

PREFIX = "/api/0"


class Router(APIRouter):
    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # Routes build their answers from the wire shapes already; FastAPI would check them
        # again against the return annotation, on a request thread for a sync route, while the
        # route's transaction still holds its database connection (it commits after): with as
        # many requests as threads, threads waiting for connections and connections waiting
        # for threads stood still until the pool timed out.
        if isinstance(kwargs.get("response_model", Default(None)), DefaultPlaceholder):
            kwargs["response_model"] = None
        super().add_api_route(path, endpoint, **kwargs)
        if path.endswith("/") and path.strip("/"):
            twin = {**kwargs, "include_in_schema": False}
            if kwargs.get("operation_id"):
                twin["operation_id"] = f"{kwargs['operation_id']}_noslash"
            super().add_api_route(path.rstrip("/"), endpoint, **twin)
