"""One verifying TLS context per process, for Freight's HTTP clients (GitHub, Slack, Sentry,
Heroku, webhooks). Building one parses the whole CA bundle (~50 ms of CPU); flow-run processes
fork from the fork server with it built already."""

from __future__ import annotations

import ssl
from functools import lru_cache

import certifi
import httpx


@lru_cache(maxsize=1)
def context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def client(*, timeout: float) -> httpx.Client:
    """An HTTP client for the services Freight talks to."""
    return httpx.Client(timeout=timeout, verify=context())
