"""A name-to-kind registry shared by the three plugin families (providers, checks, notifiers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from freight.errors import InvalidConfig


class PluginConfig(BaseModel):
    """Base of every plugin's config model: unknown keys are errors, `type` names the kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    # Fields whose values may hold `${NAME}` secret references, resolved only at run time.
    secret_fields: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ServiceUrls:
    """Where the outside services are: settings, so that tests point them at local doubles."""

    github: str = "https://api.github.com"
    slack: str = "https://slack.com/api/"
    sentry: str = "https://sentry.io/api/0/"
    heroku: str = "https://api.heroku.com"


K = TypeVar("K")


class Registry(Generic[K]):
    def __init__(self, family: str, error: type[InvalidConfig]) -> None:
        self.family = family
        self.error = error
        self._kinds: dict[str, tuple[type[PluginConfig], K]] = {}

    def register(self, name: str, config: type[PluginConfig]) -> Callable[[K], K]:
        def add(kind: K) -> K:
            self._kinds[name] = (config, kind)
            return kind

        return add

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def config_model(self, name: str) -> type[PluginConfig]:
        return self._lookup(name)[0]

    def get(self, name: str) -> K:
        return self._lookup(name)[1]

    def parse(self, data: object) -> PluginConfig:
        """Validate one config mapping against the model of the kind it names."""
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise self.error(
                f"Each {self.family} needs a 'type' (one of: {', '.join(self.names())})"
            )
        return self.config_model(data["type"]).model_validate(data)

    def _lookup(self, name: str) -> tuple[type[PluginConfig], K]:
        try:
            return self._kinds[name]
        except KeyError:
            raise self.error(
                f"Unknown {self.family} type '{name}' (known: {', '.join(self.names()) or 'none'})"
            ) from None
