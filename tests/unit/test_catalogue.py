import json
from pathlib import Path
from typing import Literal

import pytest
import yaml

from freight import providers
from freight.catalogue import AppSpec, EnvironmentConfig, load_dir, load_file
from freight.errors import (
    CatalogueError,
    InvalidCheck,
    InvalidEnvironment,
    InvalidNotifier,
    InvalidProvider,
)
from freight.notifiers.webhook import WebhookConfig
from freight.plugins import PluginConfig
from freight.providers.shell import ShellConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]

WEB = """\
name: web
repository: https://github.com/acme/web.git
provider: {type: shell, command: "bin/deploy {environment} {sha}", timeout: 1800,
           read_timeout: 300, env: {API_TOKEN: "${API_TOKEN}"}}
checks: []
notifiers: [{type: webhook, url: "http://127.0.0.1:9/hook"}]
environments:
  staging: {default_ref: main, auto_deploy: {branch: main}}
  production:
    default_ref: stable
    provider: {command: "bin/deploy-prod {sha}"}
    notifiers: []
"""

MINIMAL = """\
name: web
repository: https://github.com/acme/web.git
provider: {type: shell, command: deploy}
environments: {staging: {}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_valid_file_loads(tmp_path: Path) -> None:
    app = load_file(write(tmp_path, "web.yaml", WEB), allow_local=False)

    assert app.name == "web"
    assert app.repository == "https://github.com/acme/web.git"
    assert app.provider == ShellConfig(
        command="bin/deploy {environment} {sha}",
        timeout=1800,
        read_timeout=300,
        env={"API_TOKEN": "${API_TOKEN}"},  # secret references stay unresolved
    )
    assert app.checks == []
    assert [type(n) for n in app.notifiers] == [WebhookConfig]
    assert list(app.environments) == ["staging", "production"]
    assert app.environments["staging"].auto_deploy is not None
    assert app.environments["staging"].auto_deploy.branch == "main"
    assert app.environments["staging"].auto_deploy.enabled is True


def test_environment_defaults(tmp_path: Path) -> None:
    env = load_file(write(tmp_path, "web.yaml", MINIMAL), allow_local=False).environment("staging")

    assert env.default_ref == "main"
    assert env.auto_deploy is None
    assert env.checks == []
    assert env.notifiers == []


def test_environment_merges_provider_override_and_replaces_lists(tmp_path: Path) -> None:
    app = load_file(write(tmp_path, "web.yaml", WEB), allow_local=False)

    production = app.environment("production")
    assert production.name == "production"
    assert production.default_ref == "stable"
    assert production.provider == ShellConfig(
        command="bin/deploy-prod {sha}",  # from the override
        timeout=1800,  # the rest from the app
        read_timeout=300,
        env={"API_TOKEN": "${API_TOKEN}"},
    )
    assert production.notifiers == []

    staging = app.environment("staging")
    assert staging.provider == app.provider
    assert staging.notifiers == app.notifiers


class EchoConfig(PluginConfig):
    type: Literal["echo"] = "echo"
    text: str


@pytest.fixture
def echo_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered for one test only: the registry is global and has no unregister.
    monkeypatch.setitem(providers.registry._kinds, "echo", (EchoConfig, object()))


@pytest.mark.usefixtures("echo_provider")
def test_override_may_change_type_with_a_complete_config(tmp_path: Path) -> None:
    text = replace(MINIMAL, "{staging: {}}", "{staging: {provider: {type: echo, text: hi}}}")

    app = load_file(write(tmp_path, "web.yaml", text), allow_local=False)

    assert app.environment("staging").provider == EchoConfig(text="hi")


@pytest.mark.usefixtures("echo_provider")
def test_override_changing_type_does_not_inherit_the_app_config(tmp_path: Path) -> None:
    text = replace(MINIMAL, "{staging: {}}", "{staging: {provider: {type: echo}}}")

    with pytest.raises(CatalogueError) as caught:
        load_file(write(tmp_path, "web.yaml", text), allow_local=False)

    assert caught.value.field == "environments.staging.provider.text"
    assert caught.value.error_name == "invalid_resource"


def test_unknown_environment(tmp_path: Path) -> None:
    app = load_file(write(tmp_path, "web.yaml", WEB), allow_local=False)

    with pytest.raises(InvalidEnvironment, match="Unknown environment 'qa' for app web"):
        app.environment("qa")


def test_round_trip_through_json(tmp_path: Path) -> None:
    app = load_file(write(tmp_path, "web.yaml", WEB), allow_local=False)

    dumped = json.loads(json.dumps(app.model_dump(mode="json")))
    assert dumped["provider"]["command"] == "bin/deploy {environment} {sha}"
    assert dumped["notifiers"] == [
        {"type": "webhook", "url": "http://127.0.0.1:9/hook", "headers": {}, "secret": None}
    ]
    assert AppSpec.model_validate(dumped) == app

    for name in app.environments:
        env = app.environment(name)
        snapshot = json.loads(json.dumps(env.model_dump(mode="json")))
        assert snapshot["provider"]["type"] == "shell"
        assert EnvironmentConfig.model_validate(snapshot) == env


def replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("text", "error_name", "field", "problem"),
    [
        pytest.param(
            replace(MINIMAL, "type: shell", "type: capistrano"),
            "invalid_provider",
            "provider",
            "Unknown provider type 'capistrano'",
            id="unknown-provider-type",
        ),
        pytest.param(
            replace(MINIMAL, "{type: shell, command: deploy}", "{command: deploy}"),
            "invalid_provider",
            "provider",
            "needs a 'type'",
            id="provider-without-type",
        ),
        pytest.param(
            replace(MINIMAL, "{type: shell, command: deploy}", "{type: shell}"),
            "invalid_resource",
            "provider.command",
            "Field required",
            id="missing-command",
        ),
        pytest.param(
            replace(MINIMAL, "command: deploy}", "command: deploy, timeout: abc}"),
            "invalid_resource",
            "provider.timeout",
            "valid number",
            id="wrong-type",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{staging: {defualt_ref: main}}"),
            "invalid_resource",
            "environments.staging.defualt_ref",
            "unknown key",
            id="unknown-environment-key",
        ),
        pytest.param(
            MINIMAL + "owner: ops\n",
            "invalid_resource",
            "owner",
            "unknown key",
            id="unknown-top-level-key",
        ),
        pytest.param(
            replace(MINIMAL, "name: web", "name: ../x"),
            "invalid_resource",
            "name",
            "'../x' is not a valid name",
            id="bad-app-name",
        ),
        pytest.param(
            replace(MINIMAL, "name: web", "name: a..b"),
            "invalid_resource",
            "name",
            "'a..b' is not a valid name",
            id="dot-dot-in-app-name",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{staging/x: {}}"),
            "invalid_resource",
            "environments['staging/x']",
            "'staging/x' is not a valid name",
            id="bad-environment-name",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{}"),
            "invalid_resource",
            "environments",
            "at least one environment is required",
            id="no-environments",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{staging: {work_queue: '../prod'}}"),
            "invalid_resource",
            "environments.staging.work_queue",
            "'../prod' is not a valid name",
            id="bad-environment-work-queue",
        ),
        pytest.param(
            MINIMAL + 'work_queue: "prod\\u0000net"\n',
            "invalid_resource",
            "work_queue",
            "is not a valid name",
            id="nul-in-app-work-queue",
        ),
        pytest.param(
            replace(MINIMAL, "repository: https://github.com/acme/web.git", "repository: ''"),
            "invalid_resource",
            "repository",
            "at least 1 character",
            id="empty-repository",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{staging: {provider: {timeout: abc}}}"),
            "invalid_resource",
            "environments.staging.provider.timeout",
            "valid number",
            id="bad-provider-override",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{staging: {provider: {type: ansible}}}"),
            "invalid_provider",
            "environments.staging.provider",
            "Unknown provider type 'ansible'",
            id="override-with-unknown-provider-type",
        ),
        pytest.param(
            MINIMAL + "checks: [{type: nagios}]\n",
            "invalid_check",
            "checks[0]",
            "Unknown check type 'nagios'",
            id="unknown-check-type",
        ),
        pytest.param(
            MINIMAL + "notifiers: [{type: webhook, url: 'http://h/'}, {type: pager}]\n",
            "invalid_notifier",
            "notifiers[1]",
            "Unknown notifier type 'pager'",
            id="unknown-notifier-type",
        ),
        pytest.param(
            replace(MINIMAL, "{staging: {}}", "{staging: {notifiers: [{type: pager}]}}"),
            "invalid_notifier",
            "environments.staging.notifiers[0]",
            "Unknown notifier type 'pager'",
            id="unknown-notifier-type-in-environment",
        ),
    ],
)
def test_invalid_file_names_file_field_and_problem(
    tmp_path: Path, text: str, error_name: str, field: str, problem: str
) -> None:
    path = write(tmp_path, "web.yaml", text)

    with pytest.raises(CatalogueError) as caught:
        load_file(path, allow_local=False)

    error = caught.value
    assert error.error_name == error_name
    assert error.path == str(path)
    assert error.field == field
    assert error.message.startswith(f"{path}: {field}: ")
    assert problem in error.message


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (replace(MINIMAL, "type: shell", "type: capistrano"), InvalidProvider),
        (MINIMAL + "checks: [{type: nagios}]\n", InvalidCheck),
        (MINIMAL + "notifiers: [{type: pager}]\n", InvalidNotifier),
    ],
)
def test_unknown_kinds_are_also_the_family_error(
    tmp_path: Path, text: str, kind: type[Exception]
) -> None:
    with pytest.raises(kind):
        load_file(write(tmp_path, "web.yaml", text), allow_local=False)


def test_several_problems_are_counted(tmp_path: Path) -> None:
    text = replace(MINIMAL, "{type: shell, command: deploy}", "{type: shell}") + "owner: ops\n"

    with pytest.raises(CatalogueError, match=r"provider\.command: Field required \(and 1 more"):
        load_file(write(tmp_path, "web.yaml", text), allow_local=False)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "- web\n- api\n", "expected a mapping of app settings, found a YAML list", id="list"
        ),
        pytest.param(
            "just words\n", "expected a mapping of app settings, found a YAML str", id="scalar"
        ),
        pytest.param("", "expected a mapping of app settings, found an empty file", id="empty"),
        pytest.param("name: [web\nrepository: x\n", "not valid YAML: ", id="invalid-yaml"),
    ],
)
def test_whole_file_problems(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "web.yaml", text)

    with pytest.raises(CatalogueError) as caught:
        load_file(path, allow_local=False)

    assert caught.value.error_name == "invalid_resource"
    assert caught.value.field == ""
    assert caught.value.message.startswith(f"{path}: {problem}")


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"line 2, column \d+"):
        load_file(write(tmp_path, "web.yaml", "name: [web\nrepository: x\n"), allow_local=False)


def test_relative_repository_is_resolved_against_the_project_root(tmp_path: Path) -> None:
    text = replace(MINIMAL, "https://github.com/acme/web.git", ".freight/web-repo")

    app = load_file(write(tmp_path / "deployments", "web.yaml", text), allow_local=True)

    assert app.repository == str(tmp_path.resolve() / ".freight" / "web-repo")


@pytest.mark.parametrize(
    "repository",
    ["https://github.com/acme/web.git", "git@github.com:acme/web.git", "/srv/git/web.git"],
)
def test_urls_and_absolute_paths_are_kept(tmp_path: Path, repository: str) -> None:
    text = replace(MINIMAL, "https://github.com/acme/web.git", repository)

    assert load_file(write(tmp_path, "web.yaml", text), allow_local=True).repository == repository


@pytest.mark.parametrize(
    ("repository", "allow_local"),
    [
        ("fd::17", True),
        ("ext::sh -c touch% /tmp/pwned", True),
        ("--upload-pack=touch /tmp/pwned", True),
        ("http://git.example.com/web.git", True),
        ("file:///srv/git/web.git", False),
        ("/srv/git/web.git", False),
        (".freight/web-repo", False),
    ],
)
def test_a_repository_git_must_not_be_pointed_at_names_file_and_field(
    tmp_path: Path, repository: str, allow_local: bool
) -> None:
    path = write(
        tmp_path, "web.yaml", replace(MINIMAL, "https://github.com/acme/web.git", repository)
    )

    with pytest.raises(CatalogueError) as caught:
        load_file(path, allow_local=allow_local)

    assert caught.value.error_name == "invalid_repository"
    assert caught.value.field == "repository"
    assert caught.value.message.startswith(f"{path}: repository: {repository!r} is not allowed")


def test_local_repositories_load_when_allowed(tmp_path: Path) -> None:
    text = replace(MINIMAL, "https://github.com/acme/web.git", "file:///srv/git/web.git")

    app = load_file(write(tmp_path, "web.yaml", text), allow_local=True)

    assert app.repository == "file:///srv/git/web.git"


def test_load_dir_reads_yaml_and_yml_sorted_by_file_name(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", replace(MINIMAL, "name: web", "name: alpha"))
    write(tmp_path, "a.yaml", replace(MINIMAL, "name: web", "name: zulu"))
    write(tmp_path, "README.md", "not an app")
    write(tmp_path, ".#a.yaml", "editor lock file")

    assert [(app.name, path.name) for app, path in load_dir(tmp_path, allow_local=False)] == [
        ("zulu", "a.yaml"),
        ("alpha", "b.yml"),
    ]


def test_load_dir_of_empty_directory(tmp_path: Path) -> None:
    assert load_dir(tmp_path, allow_local=False) == []


def test_load_dir_is_all_or_nothing(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MINIMAL)
    bad = write(tmp_path, "b.yaml", replace(MINIMAL, "type: shell", "type: capistrano"))
    write(tmp_path, "c.yaml", replace(MINIMAL, "name: web", "name: api"))

    with pytest.raises(CatalogueError) as caught:
        load_dir(tmp_path, allow_local=False)

    assert caught.value.path == str(bad)
    assert caught.value.error_name == "invalid_provider"


def test_duplicate_app_names_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "web.yaml", MINIMAL)
    second = write(tmp_path, "web2.yaml", MINIMAL)

    with pytest.raises(CatalogueError) as caught:
        load_dir(tmp_path, allow_local=False)

    assert caught.value.path == str(second)
    assert caught.value.field == "name"
    assert str(first) in caught.value.message
    assert caught.value.message.startswith(f"{second}: name: app 'web' is already defined")


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"

    with pytest.raises(CatalogueError, match="catalogue directory not found") as caught:
        load_dir(missing, allow_local=False)

    assert caught.value.path == str(missing)


def test_demo_app_loads() -> None:
    app = load_file(PROJECT_ROOT / "deployments" / "demo.yaml", allow_local=True)

    assert app.name == "demo"
    assert app.repository == str(PROJECT_ROOT / ".freight" / "demo-repo")
    assert app.provider == ShellConfig(command="./deploy.sh {environment} {sha}")
    assert sorted(app.environments) == ["production", "staging"]
    assert app.environment("production").default_ref == "main"
    # Production-like: the dashboard asks for its name before deploying there.
    assert app.environment("production").protected
    assert not app.environment("staging").protected


PROD = "environments.production"


@pytest.mark.parametrize(
    ("production", "field", "problem"),
    [
        ({"verify": {"http": "ftp://x/health"}}, f"{PROD}.verify", "is not an http(s) URL"),
        ({"verify": {"expect": 200}}, f"{PROD}.verify", "either `http` (a URL) or `command`"),
        ({"verify": {"command": "smoke {nope}"}}, f"{PROD}.verify", "verify.command: "),
        ({"verify": {"http": "https://x/", "times": 0}}, f"{PROD}.verify.times", "or equal to 1"),
        (
            {"verify": {"http": "https://x/", "on_failure": "pray"}},
            f"{PROD}.verify.on_failure",
            "'fail' or 'rollback'",
        ),
        ({"requires": {"staging": "an hour"}}, f"{PROD}.requires.staging", "Invalid duration"),
        ({"requires": {"qa": "30m"}}, "", "'qa' is not another environment of the app"),
        ({"promote": "auto"}, "", "promote: auto needs exactly one environment"),
        (
            {"auto_deploy": {"branch": "main", "paths": [""]}},
            f"{PROD}.auto_deploy.paths[0]",
            "at least 1 character",
        ),
    ],
)
def test_bad_release_rules_are_refused_naming_the_field(
    tmp_path: Path, production: dict[str, object], field: str, problem: str
) -> None:
    path = tmp_path / "deployments" / "web.yaml"
    path.parent.mkdir()
    path.write_text(
        yaml.safe_dump(
            {
                "name": "web",
                "repository": "https://example.com/web.git",
                "provider": {"type": "shell", "command": "true"},
                "environments": {"staging": {}, "production": production},
            }
        )
    )
    with pytest.raises(CatalogueError) as caught:
        load_file(path, allow_local=False)
    assert (caught.value.field or "") == field, caught.value.message
    assert problem in caught.value.message
