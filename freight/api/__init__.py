"""The HTTP API (FastAPI): Freight API 0, signed hooks, health."""

from freight.api.app import create_app

__all__ = ["create_app"]
