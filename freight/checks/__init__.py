"""Checks: gates a deploy must pass before it runs. Each kind is one module registered here."""

from freight.checks.base import Check, CheckContext, CheckResult, Verdict
from freight.errors import InvalidCheck
from freight.plugins import Registry

registry: Registry[Check] = Registry("check", InvalidCheck)

from freight.checks import github  # noqa: E402  (registers itself)

__all__ = ["Check", "CheckContext", "CheckResult", "Verdict", "github", "registry"]
