"""What a name given by a user (an app, an environment, a work queue) may be, and the name of
the work queue deploys go to unless told otherwise."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Every worker serves it unless told to serve only some queues (`freight worker --queue`).
DEFAULT_WORK_QUEUE = "deploys"


def check_name(value: str) -> str:
    # Names end up in paths, URLs and flow-run names, so `..` is refused even between letters.
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise PydanticCustomError(
            "invalid_name",
            "'{name}' is not a valid name: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'",
            {"name": value},
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]


# A machine is named for its host (`web-1`, `web-1.eu.example.com`), so longer names are fine.
MACHINE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


def check_machine_name(value: str) -> str:
    if not MACHINE_PATTERN.fullmatch(value) or ".." in value:
        raise PydanticCustomError(
            "invalid_name",
            "'{name}' is not a valid machine name: 1 to 253 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'",
            {"name": value},
        )
    return value


MachineName = Annotated[str, AfterValidator(check_machine_name)]
