"""Secret references (`${NAME}`) in app config, resolved at run time and never stored resolved."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from freight.errors import InvalidConfig
from freight.plugins import PluginConfig

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def block_name(reference: str) -> str:
    """The Prefect Secret block a reference may live in: `DEPLOY_TOKEN` -> `deploy-token` (block
    names are lowercase letters, digits and dashes)."""
    return reference.lower().replace("_", "-")


class Sources(Mapping[str, str]):
    """Where a deploy's references are looked up: the environment first, then, where given, a
    reader of secret blocks (name -> value, None if there is none). Each block is read once."""

    def __init__(
        self, environment: Mapping[str, str], blocks: Callable[[str], str | None] | None = None
    ) -> None:
        self.environment = environment
        self.blocks = blocks
        self._read: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        if name in self.environment:
            return self.environment[name]
        if self.blocks is not None:
            if name not in self._read:
                self._read[name] = self.blocks(block_name(name))
            value = self._read[name]
            if value is not None:
                return value
        raise KeyError(name)

    def places(self, name: str) -> str:
        """Where `name` was looked for, for the message that it was found nowhere."""
        if self.blocks is None:
            return "its environment"
        return f"its environment, nor Prefect's Secret block '{block_name(name)}'"

    def __iter__(self) -> Iterator[str]:
        return iter(self.environment)

    def __len__(self) -> int:
        return len(self.environment)


def resolve(value: str, lookup: Mapping[str, str], found: list[str]) -> str:
    """Replace each `${NAME}` with its value from lookup, adding the values to `found`."""

    def substitute(match: re.Match[str]) -> str:
        if match[1] not in lookup:
            where = lookup.places(match[1]) if isinstance(lookup, Sources) else "its environment"
            raise InvalidConfig(f"Secret '{match[1]}' is not set where the deploy runs ({where})")
        found.append(lookup[match[1]])
        return lookup[match[1]]

    return REFERENCE.sub(substitute, value)


def resolve_config(
    config: PluginConfig, lookup: Mapping[str, str]
) -> tuple[PluginConfig, list[str]]:
    """The config with its secret fields resolved, and the secret values (to mask in logs)."""
    found: list[str] = []
    update: dict[str, object] = {}
    for name in config.secret_fields:
        value = getattr(config, name)
        if isinstance(value, str):
            update[name] = resolve(value, lookup, found)
        elif isinstance(value, dict):
            update[name] = {k: resolve(v, lookup, found) for k, v in value.items()}
    return config.model_copy(update=update), found


def resolve_all(
    configs: Iterable[PluginConfig], lookup: Mapping[str, str]
) -> tuple[list[PluginConfig], list[str]]:
    """Each config resolved, and all the secret values found."""
    resolved, found = [], []
    for config in configs:
        config, values = resolve_config(config, lookup)
        resolved.append(config)
        found.extend(values)
    return resolved, found
