"""`python -m freight.api`: serve the API with uvicorn on FREIGHT_API_HOST:FREIGHT_API_PORT."""

from __future__ import annotations

from types import FrameType

import uvicorn
from fastapi import FastAPI

from freight.api import create_app
from freight.api.app import stopping
from freight.settings import get_settings


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        stopping(self.app)  # open event streams first: the server waits for them
        super().handle_exit(sig, frame)


def main() -> None:
    settings = get_settings()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        # Behind a proxy, the public URL is what links use; the request's own scheme is kept.
        proxy_headers=True,
    )
    _Server(config, app).run()


if __name__ == "__main__":
    main()
