"""What a name given by a user (an app, an environment, a work queue) may be, and the name of
the work queue deploys go to unless told otherwise."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


def _pattern(longest: int) -> re.Pattern[str]:
    return re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{longest - 1}}}")


NAME_PATTERN = _pattern(64)

# Every worker serves it unless told to serve only some queues (`freight worker --queue`).
DEFAULT_WORK_QUEUE = "deploys"


def _checker(noun: str, longest: int) -> AfterValidator:
    pattern = _pattern(longest)

    def check(value: str) -> str:
        # Names end up in paths, URLs and flow-run names, so `..` is refused even between
        # letters.
        if not pattern.fullmatch(value) or ".." in value:
            raise PydanticCustomError(
                "invalid_name",
                f"'{{name}}' is not a valid {noun}: 1 to {longest} letters, digits, '.', '_' or "
                "'-', starting with a letter or digit, without '..'",
                {"name": value},
            )
        return value

    return AfterValidator(check)


Name = Annotated[str, _checker("name", 64)]

# A machine is named for its host (`web-1`, `web-1.eu.example.com`), so longer names are fine.
MachineName = Annotated[str, _checker("machine name", 253)]
