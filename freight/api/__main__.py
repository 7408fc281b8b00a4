"""`python -m freight.api`: serve the API with uvicorn on FREIGHT_API_HOST:FREIGHT_API_PORT."""

from __future__ import annotations

import uvicorn

from freight.api import create_app
from freight.dashboard.stream import STREAMS_CLOSE_WITHIN
from freight.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        # Behind a proxy, the public URL is what links use; the request's own scheme is kept.
        proxy_headers=True,
        # Open event streams (dashboards) never end by themselves: a stop cuts them after this.
        timeout_graceful_shutdown=STREAMS_CLOSE_WITHIN,
    )


if __name__ == "__main__":
    main()
