"""SQL the two databases spell differently, as SQLAlchemy constructs."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement
from sqlalchemy.types import Float, Integer


# Lower case: it reads as the SQL function it stands for.
class seconds_between(FunctionElement[float]):
    """Seconds from the first timestamp to the second."""

    type = Float()
    inherit_cache = True

    def __init__(self, start: ColumnElement[Any], end: ColumnElement[Any]) -> None:
        super().__init__(start, end)


@compiles(seconds_between, "postgresql")
def _postgresql(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"


@compiles(seconds_between, "sqlite")
def _sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (
        f"((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0)"
    )


class whole_days_between(FunctionElement[int]):
    """Whole days from the first timestamp to the second (not before it)."""

    type = Integer()
    inherit_cache = True

    def __init__(self, start: ColumnElement[Any], end: ColumnElement[Any]) -> None:
        super().__init__(start, end)


@compiles(whole_days_between, "postgresql")
def _postgresql_days(element: whole_days_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    seconds = (
        f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"
    )
    return f"CAST(FLOOR({seconds} / 86400) AS INTEGER)"


@compiles(whole_days_between, "sqlite")
def _sqlite_days(element: whole_days_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    # Never negative here, so truncating is flooring.
    return (
        f"CAST(julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)}) AS INTEGER)"
    )
