"""The app catalogue: one YAML file per app under `deployments/`, validated by pydantic.

Plugin configs (provider, checks, notifiers) are validated through their family's registry at
validation time, so plugins registered after this module is imported are still accepted.
`${NAME}` secret references are plain strings here; they are resolved when a deploy runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from freight import checks, notifiers, providers, vcs
from freight.commands import check_template
from freight.errors import (
    CatalogueError,
    InvalidCheck,
    InvalidConfig,
    InvalidEnvironment,
    InvalidNotifier,
    InvalidProvider,
    InvalidRepository,
)
from freight.names import DEFAULT_WORK_QUEUE, NAME_PATTERN, Name
from freight.plugins import PluginConfig, Registry
from freight.windows import Duration, Window

# Both base classes keep working for callers: `except CatalogueError` gets `.path`/`.field`,
# `except InvalidProvider` and the API's error_name see the kind that was wrong.


class CatalogueProviderError(CatalogueError, InvalidProvider):
    """A catalogue file names a provider type that is not registered (or none at all)."""


class CatalogueCheckError(CatalogueError, InvalidCheck):
    """A catalogue file names a check type that is not registered (or none at all)."""


class CatalogueNotifierError(CatalogueError, InvalidNotifier):
    """A catalogue file names a notifier type that is not registered (or none at all)."""


class CatalogueRepositoryError(CatalogueError, InvalidRepository):
    """A catalogue file names a repository that git must not be pointed at."""


# Keyed by the pydantic error type that `_parser` raises, which is the registry's error_name.
_KIND_ERRORS: dict[str, type[CatalogueError]] = {
    cls.error_name: cls
    for cls in (CatalogueProviderError, CatalogueCheckError, CatalogueNotifierError)
}

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _parser(registry: Registry[Any]) -> Callable[[object], PluginConfig]:
    def parse(value: object) -> PluginConfig:
        # Re-parsing an existing config keeps a check's config out of a provider field.
        data = value.model_dump(mode="json") if isinstance(value, PluginConfig) else value
        try:
            return registry.parse(data)
        except InvalidConfig as exc:
            raise PydanticCustomError(exc.error_name, exc.message) from None

    return parse


# SerializeAsAny: dump the fields of the actual kind (ShellConfig...), not only PluginConfig's.
_AnyConfig = SerializeAsAny[PluginConfig]
ProviderConfig = Annotated[_AnyConfig, PlainValidator(_parser(providers.registry))]
CheckConfig = Annotated[_AnyConfig, PlainValidator(_parser(checks.registry))]
NotifierConfig = Annotated[_AnyConfig, PlainValidator(_parser(notifiers.registry))]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoDeploySpec(_Frozen):
    branch: NonEmpty
    enabled: bool = True
    # Deploy only commits that change a path matching one of these (gitignore-style patterns,
    # `services/web/**`): several apps can live in one repository.
    paths: list[NonEmpty] = Field(default_factory=list)


class VerifySpec(_Frozen):
    """How a deploy is verified after its provider ran: `http` answers `expect` `times` times,
    `interval` apart (each within `timeout`), or `command` (run as the provider's commands are)
    exits 0. `on_failure: rollback` queues the previous sha at the front and locks."""

    http: NonEmpty | None = None
    expect: int = Field(default=200, ge=100, le=599)
    times: int = Field(default=1, ge=1, le=100)
    interval: Duration = "10s"
    timeout: Duration = "5s"
    command: NonEmpty | None = None
    on_failure: Literal["fail", "rollback"] = "fail"

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.http is None) == (self.command is None):
            raise PydanticCustomError(
                "invalid_verify", "verify has either `http` (a URL) or `command`"
            )
        if self.http is not None and not self.http.startswith(("http://", "https://")):
            raise PydanticCustomError(
                "invalid_verify", "verify.http: '{url}' is not an http(s) URL", {"url": self.http}
            )
        if self.command is not None:
            try:
                check_template(self.command)
            except ValueError as exc:
                raise PydanticCustomError(
                    "invalid_verify", "verify.command: {problem}", {"problem": str(exc)}
                ) from None
        return self


class EnvironmentSpec(_Frozen):
    """One environment as written in the file; `None` means "inherit from the app"."""

    default_ref: NonEmpty = "main"
    auto_deploy: AutoDeploySpec | None = None
    # Partial: merged key by key over the app's provider config, see AppSpec.environment().
    provider: dict[str, Any] | None = None
    checks: list[CheckConfig] | None = None
    notifiers: list[NotifierConfig] | None = None
    # The work queue of the workers that may run its deploys (those inside its network, say).
    work_queue: Name | None = None
    # When it may be deployed (freight/windows.py); [] lifts the app's windows for it.
    windows: list[Window] | None = None
    # What it takes only after it was live elsewhere that long: {staging: 30m}.
    requires: dict[Name, Duration] = Field(default_factory=dict)
    # `auto`: deploy what is live on the required environment by itself once it has baked.
    promote: Literal["auto"] | None = None
    verify: VerifySpec | None = None
    # Production-like: the dashboard asks whoever deploys, rolls back or promotes here to type
    # the environment's name first.
    protected: bool = False


class EnvironmentConfig(_Frozen):
    """The effective settings of one environment, as snapshotted into a deploy."""

    name: Name
    default_ref: NonEmpty
    auto_deploy: AutoDeploySpec | None
    provider: ProviderConfig
    checks: list[CheckConfig]
    notifiers: list[NotifierConfig]
    # Snapshots taken before work queues existed have none: theirs was the default.
    work_queue: Name = DEFAULT_WORK_QUEUE
    windows: list[Window] = Field(default_factory=list)
    requires: dict[Name, Duration] = Field(default_factory=dict)
    promote: Literal["auto"] | None = None
    verify: VerifySpec | None = None
    protected: bool = False


class AppSpec(_Frozen):
    name: Name
    repository: NonEmpty
    provider: ProviderConfig
    checks: list[CheckConfig] = Field(default_factory=list)
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    work_queue: Name = DEFAULT_WORK_QUEUE
    windows: list[Window] = Field(default_factory=list)
    verify: VerifySpec | None = None
    environments: dict[Name, EnvironmentSpec]

    @field_validator("environments")
    @classmethod
    def _at_least_one(cls, value: dict[str, EnvironmentSpec]) -> dict[str, EnvironmentSpec]:
        if not value:
            raise PydanticCustomError("no_environments", "at least one environment is required")
        return value

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Self:
        # Validating through a model whose field is `environments` makes the error locations
        # read `environments.production.provider.command`, like the rest of the file's errors.
        _EffectiveEnvironments.model_validate(
            {"environments": {name: self._effective(name) for name in self.environments}}
        )
        for name, env in self.environments.items():
            for source in env.requires:
                if source == name or source not in self.environments:
                    raise PydanticCustomError(
                        "invalid_environment",
                        "environments.{env}.requires: '{source}' is not another environment "
                        "of the app",
                        {"env": name, "source": source},
                    )
            if env.promote == "auto" and len(env.requires) != 1:
                raise PydanticCustomError(
                    "invalid_environment",
                    "environments.{env}.promote: auto needs exactly one environment in "
                    "`requires` to promote from",
                    {"env": name},
                )
        return self

    def environment(self, name: str) -> EnvironmentConfig:
        if name not in self.environments:
            raise InvalidEnvironment(f"Unknown environment '{name}' for app {self.name}")
        return EnvironmentConfig.model_validate(self._effective(name))

    def _effective(self, name: str) -> dict[str, Any]:
        env = self.environments[name]
        provider = self.provider.model_dump(mode="json")
        override = env.provider or {}
        # Keys of one kind mean nothing to another, so a new type needs a complete config.
        if override.get("type", provider["type"]) == provider["type"]:
            provider |= override
        else:
            provider = override
        return {
            "name": name,
            "default_ref": env.default_ref,
            "auto_deploy": env.auto_deploy,
            "provider": provider,
            "checks": self.checks if env.checks is None else env.checks,
            "notifiers": self.notifiers if env.notifiers is None else env.notifiers,
            "work_queue": self.work_queue if env.work_queue is None else env.work_queue,
            "windows": self.windows if env.windows is None else env.windows,
            "requires": env.requires,
            "promote": env.promote,
            "verify": self.verify if env.verify is None else env.verify,
            "protected": env.protected,
        }


class _EffectiveEnvironments(_Frozen):
    environments: dict[str, EnvironmentConfig]


def load_file(path: Path, *, allow_local: bool) -> AppSpec:
    """Load one catalogue file; any problem raises CatalogueError naming the file and field.
    Repositories on this machine's disk are accepted only with ``allow_local``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: cannot be read: {exc}", path=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogueError(
            f"{path}: not valid YAML: {_yaml_problem(exc)}", path=str(path)
        ) from exc
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a YAML {type(data).__name__}"
        raise CatalogueError(
            f"{path}: expected a mapping of app settings, found {found}", path=str(path)
        )
    try:
        app = AppSpec.model_validate(data)
    except ValidationError as exc:
        raise _catalogue_error(path, exc) from exc
    try:
        vcs.check_url(app.repository, allow_local=allow_local)
    except InvalidRepository as exc:
        raise CatalogueRepositoryError(
            f"{path}: {exc.message}", path=str(path), field="repository"
        ) from None
    # The value was validated as a non-empty string already; only its meaning changes here.
    return app.model_copy(update={"repository": _resolve_repository(path, app.repository)})


def load_dir(directory: Path, *, allow_local: bool) -> list[tuple[AppSpec, Path]]:
    """Load every `*.yaml`/`*.yml` file, sorted by file name, with the file each came from.

    All or nothing: the first bad file raises, so a caller never applies half a catalogue.
    """
    if not directory.is_dir():
        raise CatalogueError(f"{directory}: catalogue directory not found", path=str(directory))
    files = sorted(
        (
            path
            for path in directory.iterdir()
            # Dot files are editor and OS droppings (`.#web.yaml`, `._web.yaml`), not apps.
            if path.suffix in (".yaml", ".yml") and not path.name.startswith(".") and path.is_file()
        ),
        key=lambda path: path.name,
    )
    apps: list[tuple[AppSpec, Path]] = []
    owners: dict[str, Path] = {}
    for path in files:
        app = load_file(path, allow_local=allow_local)
        if app.name in owners:
            raise CatalogueError(
                f"{path}: name: app '{app.name}' is already defined in {owners[app.name]}",
                path=str(path),
                field="name",
            )
        owners[app.name] = path
        apps.append((app, path))
    return apps


def _resolve_repository(path: Path, repository: str) -> str:
    # git reads `host:path` (no slash before the first colon) as an scp-style remote, not a path.
    scp_like = ":" in repository and "/" not in repository.split(":", 1)[0]
    if "://" in repository or scp_like:
        return repository
    # Relative to the project root (the directory holding the catalogue directory), not to the
    # working directory, so `freight apps sync` and the API agree wherever they are started.
    local = Path(repository).expanduser()
    return str(local if local.is_absolute() else (path.resolve().parent.parent / local).resolve())


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem and exc.problem_mark:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc)


def _catalogue_error(path: Path, exc: ValidationError) -> CatalogueError:
    first = exc.errors()[0]
    field = _field_path(first)
    problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = exc.error_count() - 1
    if more:
        problem += f" (and {more} more problem{'s' if more > 1 else ''})"
    message = f"{path}: {field}: {problem}" if field else f"{path}: {problem}"
    error_class = _KIND_ERRORS.get(first["type"], CatalogueError)
    return error_class(message, path=str(path), field=field)


def _field_path(error: ErrorDetails) -> str:
    """`('environments', 'prod', 'checks', 0, 'repo')` -> `environments.prod.checks[0].repo`."""
    field = ""
    for part in error["loc"]:
        if isinstance(part, int):
            field += f"[{part}]"
        elif part == "[key]":
            # pydantic's marker for "the key itself is invalid"; the message already says so.
            continue
        elif NAME_PATTERN.fullmatch(part):
            field += f".{part}" if field else part
        else:
            field += f"[{part!r}]"
    return field
