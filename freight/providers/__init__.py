"""Providers: how an app is deployed. Each kind is one module registered here."""

from freight.errors import InvalidProvider
from freight.plugins import Registry
from freight.providers.base import DeployContext, Provider, ProviderRuntime

registry: Registry[Provider] = Registry("provider", InvalidProvider)

from freight.providers import fabric, heroku, pull, shell  # noqa: E402  (each registers itself)

__all__ = [
    "DeployContext",
    "Provider",
    "ProviderRuntime",
    "fabric",
    "heroku",
    "pull",
    "registry",
    "shell",
]
