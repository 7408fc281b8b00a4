"""The API's access log without credentials: a signed hook's URL is its own credential (no key
is needed to deploy with it), so its digest must not be written where log readers see it."""

from __future__ import annotations

import logging
import re

HIDDEN = "********"
# /webhooks/HOOK/ACTION/APP/ENV/DIGEST/ (see freight.api.routes.webhooks)
SIGNED_HOOK = re.compile(r"(/webhooks/[^/?]*/[^/?]*/[^/?]*/[^/?]*/)[^/?]+")


def hide_digests(text: str) -> str:
    return SIGNED_HOOK.sub(rf"\g<1>{HIDDEN}", text)


class HideDigests(logging.Filter):
    """Rewrites the request path of uvicorn's access records (they carry it as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                hide_digests(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        record.msg = hide_digests(str(record.msg))
        return True


def install() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideDigests) for f in logger.filters):
        logger.addFilter(HideDigests())
