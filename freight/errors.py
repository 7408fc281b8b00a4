"""The whole Freight exception tree.

FreightError            .error_name is the wire vocabulary; the message names the thing
├── NotFound            invalid_resource
├── InvalidRequest      bad input
│   ├── MissingArgument       missing_argument
│   ├── InvalidRef            invalid_ref
│   ├── InvalidEnvironment    invalid_environment
│   ├── DeployFinished        invalid_resource (cancel of a deploy that already ended)
│   ├── TooLarge              too_large (a request body over the limit)
│   └── InvalidConfig         invalid_resource
│       ├── InvalidProvider   invalid_provider
│       ├── InvalidCheck      invalid_check
│       ├── InvalidNotifier   invalid_notifier
│       ├── InvalidRepository invalid_repository (a URL git must not be pointed at)
│       └── CatalogueError    invalid_resource (names the file and the field)
├── Barred              a rule of the environment refuses the deploy now (force + reason)
│   ├── AppLocked             locked
│   ├── Frozen                frozen
│   ├── OutsideWindow         outside_window (names the next opening)
│   └── NotPromoted           not_promoted (what bake time is missing, and when it is met)
├── CheckFailed         check_failed
├── Conflict            conflict
│   └── AlreadyDelivered      a webhook delivery that another request is acting on
├── Unauthorized        unauthorized (no key, or one Freight does not know)
├── Forbidden           forbidden (a known key without the scope or app it needs)
└── ExternalError       something outside Freight failed; ends a deploy as failed with a reason
    ├── VcsError              git failed
    ├── CommandFailed         the provider's command exited non-zero
    ├── DeployTimeout         total or no-output time limit exceeded
    ├── VerifyFailed          the environment's verification after the provider failed
    ├── DeployCancelled       the deploy was cancelled while running
    ├── ClaimLost             the runner's claim was taken (reaped): it must stop, write nothing
    └── IntegrationError      a check or notifier could not talk to its service

HTTP status codes live in the API's single exception handler, not here.
"""

from __future__ import annotations


class FreightError(Exception):
    error_name = "freight_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(FreightError):
    error_name = "invalid_resource"


class InvalidRequest(FreightError):
    error_name = "invalid_request"


class MissingArgument(InvalidRequest):
    error_name = "missing_argument"


class InvalidRef(InvalidRequest):
    error_name = "invalid_ref"


class InvalidEnvironment(InvalidRequest):
    error_name = "invalid_environment"


class DeployFinished(InvalidRequest):
    error_name = "invalid_resource"


class InvalidConfig(InvalidRequest):
    error_name = "invalid_resource"


class InvalidProvider(InvalidConfig):
    error_name = "invalid_provider"


class InvalidCheck(InvalidConfig):
    error_name = "invalid_check"


class InvalidNotifier(InvalidConfig):
    error_name = "invalid_notifier"


class InvalidRepository(InvalidConfig):
    error_name = "invalid_repository"


class CatalogueError(InvalidConfig):
    """A catalogue file is invalid; the message names the file, the field and the problem."""

    def __init__(self, message: str, *, path: str, field: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.field = field


class Barred(FreightError):
    """A rule of the environment refuses the deploy now; forcing it needs a reason. A deploy
    refused when its run starts is cancelled by `refused_by`, not failed."""

    error_name = "barred"
    refused_by = "a rule"


class AppLocked(Barred):
    error_name = "locked"
    refused_by = "a lock"


class Frozen(Barred):
    error_name = "frozen"
    refused_by = "a freeze"


class OutsideWindow(Barred):
    error_name = "outside_window"
    refused_by = "a deploy window"


class NotPromoted(Barred):
    error_name = "not_promoted"
    refused_by = "a promotion rule"


class CheckFailed(FreightError):
    error_name = "check_failed"


class Conflict(FreightError):
    error_name = "conflict"


class AlreadyDelivered(Conflict):
    pass


class Unauthorized(FreightError):
    error_name = "unauthorized"


class Forbidden(FreightError):
    error_name = "forbidden"


class TooLarge(InvalidRequest):
    error_name = "too_large"


class ExternalError(FreightError):
    error_name = "external_error"


class VcsError(ExternalError):
    error_name = "vcs_error"


class CommandFailed(ExternalError):
    error_name = "command_failed"

    def __init__(self, message: str, *, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class DeployTimeout(ExternalError):
    error_name = "timeout"


class VerifyFailed(ExternalError):
    error_name = "verify_failed"


class DeployCancelled(ExternalError):
    error_name = "cancelled"


class ClaimLost(ExternalError):
    error_name = "claim_lost"


class IntegrationError(ExternalError):
    error_name = "integration_error"
