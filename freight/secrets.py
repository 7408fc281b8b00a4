"""Secret references (`${NAME}`) in app config, resolved at run time and never stored resolved."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from freight.errors import InvalidConfig
from freight.plugins import PluginConfig

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve(value: str, lookup: Mapping[str, str], found: list[str]) -> str:
    """Replace each `${NAME}` with its value from lookup, adding the values to `found`."""

    def substitute(match: re.Match[str]) -> str:
        if match[1] not in lookup:
            raise InvalidConfig(f"Secret '{match[1]}' is not set where the deploy runs")
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
