"""Work done side by side in threads on behalf of one caller."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def side_by_side(work: Callable[[T], R], items: Iterable[T], *, at_once: int) -> list[R]:
    """`work(item)` for every item, at most `at_once` at a time; the results in order.

    Each call runs in a copy of the caller's context: a pool's threads start with an empty one,
    and would lose what the caller set for its requests (how long to wait on the engine, and
    whether to retry), falling back to the process's defaults.
    """
    pending = list(items)
    if not pending:
        return []
    # One copy per call, made here: a context cannot be entered by two threads at once.
    contexts = [contextvars.copy_context() for _ in pending]
    with ThreadPoolExecutor(max_workers=max(1, min(at_once, len(pending)))) as pool:
        return list(pool.map(lambda context, item: context.run(work, item), contexts, pending))
