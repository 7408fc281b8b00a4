"""Request arguments as Freight API 0 clients send them.

Arguments come from the query string, a form body or a JSON body (the body wins). Structured
fields (`params`, `provider_config`, `checks`, ...) arrive as JSON-encoded strings (freight-cli
and Freight's own forms) or as plain JSON values; booleans as JSON booleans or `true/false/1/0`.
Each route validates the merged arguments with a pydantic model that refuses unknown fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Path, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from freight.api.errors import describe_validation
from freight.errors import InvalidRequest, MissingArgument

M = TypeVar("M", bound=BaseModel)

# Filters that may repeat in a query string (`?status=a&status=b`); any other repeated argument,
# and any argument of a write, keeps its last value.
REPEATABLE = frozenset({"status"})


# Deeper JSON than any config needs; past it a value is refused before anything recurses into it.
MAX_DEPTH = 32


def flaw(value: object, depth: int = 0) -> str | None:
    """What makes a JSON value unfit to store: a NUL character (databases refuse it in text)
    or nesting deeper than MAX_DEPTH; None when it is fine."""
    if depth > MAX_DEPTH:
        return f"must not be nested more than {MAX_DEPTH} deep"
    if isinstance(value, str):
        return "must not contain a NUL character" if "\x00" in value else None
    items: list[object] = []
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    return next((f for item in items if (f := flaw(item, depth + 1)) is not None), None)


def load_json(text: str | bytes) -> Any:
    """Parse JSON that a client sent; a ValueError says what is wrong with it."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"must not be nested more than {MAX_DEPTH} deep") from None
    problem = flaw(data)
    if problem is not None:
        raise ValueError(problem)
    return data


def _json_or_value(value: object) -> object:
    if isinstance(value, str | bytes):
        try:
            return load_json(value)
        except ValueError as exc:
            if str(exc).startswith("must not"):
                raise
            raise ValueError("must be JSON (or a JSON-encoded string)") from None
    return value


def _boolean(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError("must be true, false, 1 or 0")


# The largest integer the databases store in an INTEGER column: ids and numbers beyond it are
# refused as bad input rather than failing in the driver.
DB_INT = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=DB_INT)]
Offset = Annotated[int, Field(ge=-1, le=DB_INT)]
Count = Annotated[int, Field(ge=1, le=DB_INT)]

JsonField = BeforeValidator(_json_or_value)
Flag = Annotated[bool, BeforeValidator(_boolean)]


class Arguments(BaseModel):
    """Base of every route's argument model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


async def collect(request: Request) -> dict[str, Any]:
    """The query string's arguments, overlaid with those of a form or JSON body."""
    repeatable = REPEATABLE if request.method == "GET" else frozenset()
    values: dict[str, Any] = _pairs(request.query_params.multi_items(), repeatable)
    body = await request.body()
    if not body.strip():
        return values
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise InvalidRequest("The form body is not valid UTF-8") from None
        values.update(_pairs(pairs, frozenset()))
        return values
    if kind not in ("application/json", "") and not kind.endswith("+json"):
        raise InvalidRequest(f"Unsupported Content-Type '{kind}': send JSON or a form")
    try:
        data = json.loads(body)
    except RecursionError:
        raise InvalidRequest(f"The body must not be nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The JSON body must be an object of named arguments")
    for name, value in data.items():
        problem = flaw(value, depth=1)
        if "\x00" in name:
            raise InvalidRequest(f"{name!r}: must not contain a NUL character")
        if problem is not None:
            raise InvalidRequest(f"{name}: {problem}")
    values.update(data)
    return values


def _pairs(items: list[tuple[str, str]], repeatable: frozenset[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in items:
        if key in repeatable:
            values.setdefault(key, []).append(value)
        else:
            values[key] = value
    return values


def parse(model: type[M], values: Mapping[str, Any]) -> M:
    """Validate arguments; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        errors = exc.errors()
        kind = MissingArgument if errors[0]["type"] == "missing" else InvalidRequest
        raise kind(describe_validation(errors)) from None


def documented(model: type[BaseModel], *, body: bool) -> dict[str, Any]:
    """OpenAPI for a route's arguments (they are parsed from the request by hand, so FastAPI
    cannot see them): a JSON body (forms and query strings work too), or query parameters."""
    schema = _inline(model.model_json_schema(by_alias=True))
    if body:
        return {
            "requestBody": {
                "required": bool(schema.get("required")),
                "content": {"application/json": {"schema": schema}},
            }
        }
    required = set(schema.get("required", []))
    return {
        "parameters": [
            {"name": name, "in": "query", "required": name in required, "schema": field}
            for name, field in schema.get("properties", {}).items()
        ]
    }


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its `$defs` references replaced by the definitions themselves."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved = resolve(schema)
    assert isinstance(resolved, dict)
    return resolved
