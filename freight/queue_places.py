"""Where each waiting deploy stands: a listing of several environments' queues, each in its
own order, numbered within its own environment (the dashboard and the command line)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def places(waiting: Iterable[T], environment: Callable[[T], str]) -> list[tuple[int, T]]:
    """`waiting` in queue order (as the API lists it) grouped by environment, each with its
    place in its environment's queue (1 runs next)."""
    counted: dict[str, int] = {}
    result = []
    for item in sorted(waiting, key=environment):  # stable: each queue keeps its order
        counted[environment(item)] = place = counted.get(environment(item), 0) + 1
        result.append((place, item))
    return result
