"""freight.vcs against real git repositories built in tmp_path."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from freight import vcs
from freight.errors import InvalidRef, InvalidRepository, VcsError
from tests.helpers import HOSTILE_REPOSITORIES

REPO_ROOT = Path(__file__).resolve().parents[2]
# The origins of these tests are repositories in tmp_path.
LOCAL = vcs.Access(allow_local=True)


@pytest.fixture(autouse=True)
def _isolated_git_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    # The developer's ~/.gitconfig (signing, hooks, default branch, identity) must not matter.
    empty = tmp_path_factory.mktemp("gitconfig") / "config"
    empty.touch()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(*args: str, cwd: Path | None = None, date: int | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada Lovelace",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada Lovelace",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    if date is not None:
        # Distinct timestamps keep `git log` order deterministic.
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{date} +0000"
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@dataclass
class Origin:
    path: Path
    url: str
    commits: list[str]  # main's commits, oldest first
    feature: str
    lightweight_tag: str
    annotated_tag: str
    clock: int = 1_700_000_000

    def commit(self, filename: str, content: str, subject: str, *, author: str = "") -> str:
        (self.path / filename).write_text(content)
        git("add", filename, cwd=self.path)
        self.clock += 60
        extra = ["--author", author] if author else []
        git("commit", "-q", "-m", subject, *extra, cwd=self.path, date=self.clock)
        return git("rev-parse", "HEAD", cwd=self.path)


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    path = tmp_path / "origin"
    git("init", "-q", "-b", "main", str(path))
    repo = Origin(path, str(path), [], "", "", "")
    repo.commits.append(repo.commit("README", "one\n", "First commit"))
    repo.commits.append(repo.commit("app.py", "print(1)\n", "Add app"))
    git("tag", "v1-light", cwd=path)
    repo.lightweight_tag = repo.commits[-1]
    git("checkout", "-q", "-b", "feature", cwd=path)
    repo.feature = repo.commit("feature.txt", "wip\n", "Feature work")
    git("checkout", "-q", "main", cwd=path)
    repo.commits.append(
        repo.commit("app.py", "print(2)\n", "Fix app", author="Grace Hopper <grace@example.com>")
    )
    git("tag", "-a", "v2", "-m", "Release 2", cwd=path, date=repo.clock)
    repo.annotated_tag = repo.commits[-1]
    return repo


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
def mirror(workspace: Path, origin: Origin) -> Path:
    return vcs.update_mirror(workspace, origin.url, access=LOCAL)


def worktree_paths(mirror: Path) -> list[Path]:
    out = git("--git-dir", str(mirror), "worktree", "list", "--porcelain")
    return [
        Path(line[len("worktree ") :]) for line in out.splitlines() if line.startswith("worktree ")
    ]


# --- mirror_path / update_mirror -------------------------------------------------------------


def test_mirror_path_is_stable_readable_and_hides_credentials(tmp_path: Path) -> None:
    url = "https://deploy:s3cret@github.com/getsentry/freight.git"
    path = vcs.mirror_path(tmp_path, url)
    assert path == vcs.mirror_path(tmp_path, url)
    assert path.parent == tmp_path / "mirrors"
    assert path.name.startswith("github.com-getsentry-freight-")
    assert path.name.endswith(".git")
    assert "s3cret" not in str(path)
    assert vcs.mirror_path(tmp_path, "git@github.com:getsentry/freight.git") != path


def test_update_mirror_clones_once_then_fetches(workspace: Path, origin: Origin) -> None:
    mirror = vcs.update_mirror(workspace, origin.url, access=LOCAL)
    assert mirror == vcs.mirror_path(workspace, origin.url)
    assert vcs.resolve_ref(mirror, "main") == origin.commits[-1]
    inode = mirror.stat().st_ino
    marker = mirror / "freight-test-marker"
    marker.touch()

    new = origin.commit("new.txt", "new\n", "Pushed later")
    git("branch", "-q", "-D", "feature", cwd=origin.path)
    assert vcs.update_mirror(workspace, origin.url, access=LOCAL) == mirror

    assert marker.exists()
    assert mirror.stat().st_ino == inode
    assert vcs.resolve_ref(mirror, "main") == new
    with pytest.raises(InvalidRef):  # pruned along with origin's branch
        vcs.resolve_ref(mirror, "feature")
    # no temporary clone directories left beside the mirror
    assert sorted(p.name for p in mirror.parent.iterdir()) == [mirror.name, mirror.name + ".lock"]


def test_a_recent_enough_fetch_is_not_repeated(workspace: Path, origin: Origin) -> None:
    mirror = vcs.update_mirror(workspace, origin.url, access=LOCAL)
    fetched = vcs.resolve_ref(mirror, "main")
    pushed = origin.commit("late.txt", "late\n", "Pushed after the fetch")
    assert vcs.update_mirror(workspace, origin.url, access=LOCAL, max_age=60) == mirror
    assert vcs.resolve_ref(mirror, "main") == fetched  # the fetch was recent enough
    vcs.update_mirror(workspace, origin.url, access=LOCAL)
    assert vcs.resolve_ref(mirror, "main") == pushed


def test_update_mirror_bad_url_is_vcs_error(workspace: Path, tmp_path: Path) -> None:
    url = str(tmp_path / "does-not-exist")
    with pytest.raises(VcsError, match="clone") as excinfo:
        vcs.update_mirror(workspace, url, access=LOCAL)
    assert "does-not-exist" in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, subprocess.CalledProcessError)
    assert not vcs.mirror_path(workspace, url).exists()
    assert [p.name for p in (workspace / "mirrors").iterdir() if not p.name.endswith(".lock")] == []


def test_update_mirror_redacts_credentials_in_errors(workspace: Path) -> None:
    with pytest.raises(VcsError, match="clone") as excinfo:
        vcs.update_mirror(
            workspace, "https://deploy:s3cret@127.0.0.1:1/x.git", access=vcs.Access(timeout=10)
        )
    cause = excinfo.value.__cause__
    assert isinstance(cause, subprocess.CalledProcessError)
    assert "s3cret" not in str(excinfo.value)
    assert "s3cret" not in str(cause) + str(cause.stderr)


def test_update_mirror_times_out_on_a_silent_server(workspace: Path) -> None:
    # The kernel completes the TCP handshake from the backlog; nobody ever answers.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"git://127.0.0.1:{server.getsockname()[1]}/repo.git"
        started = time.monotonic()
        with pytest.raises(VcsError, match="clone timed out"):
            vcs.update_mirror(workspace, url, access=vcs.Access(timeout=0.5))
    assert time.monotonic() - started < 5
    assert not vcs.mirror_path(workspace, url).exists()


# --- which repositories git may be pointed at ------------------------------------------------


@pytest.mark.parametrize(
    "template",
    HOSTILE_REPOSITORIES,
)
def test_urls_beyond_what_a_deploy_needs_are_refused_before_git_runs(
    workspace: Path, origin: Origin, tmp_path: Path, template: str
) -> None:
    marker = tmp_path / "pwned"
    url = template.format(marker=marker, origin=origin.path)
    # Local repositories are off; the timeout bounds a git that would wait on the URL.
    access = vcs.Access(timeout=5)
    with pytest.raises(InvalidRepository, match=r"^repository: '.*' is not allowed: "):
        vcs.update_mirror(workspace, url, access=access)
    with pytest.raises(InvalidRepository):
        vcs.mirror_with(workspace, url, origin.commits[-1], access=access)
    with pytest.raises(InvalidRepository):
        vcs.list_remote_branch(url, "main", access=access)
    assert not marker.exists()
    assert not (workspace / "mirrors").exists()


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/web.git",
        "ssh://git@github.com/acme/web.git",
        "git+ssh://git@github.com/acme/web.git",
        "git://git.example.com/web.git",
        "git@github.com:acme/web.git",
        "github.com:acme/web.git",
    ],
)
def test_the_transports_a_deploy_needs_are_allowed(url: str) -> None:
    vcs.check_url(url, allow_local=False)


def test_local_repositories_work_when_allowed(workspace: Path, origin: Origin) -> None:
    for url in (origin.url, f"file://{origin.path}"):
        mirror = vcs.update_mirror(workspace, url, access=LOCAL)
        assert vcs.resolve_ref(mirror, "main") == origin.commits[-1]
        assert vcs.list_remote_branch(url, "main", access=LOCAL) == origin.commits[-1]


def test_git_itself_refuses_a_transport_the_access_does_not_allow(
    workspace: Path, origin: Origin
) -> None:
    # check_url sees only the URL it is given; git also guards where that leads, here a mirror
    # whose stored remote is a local path, with config that would allow it.
    url = "https://git.example.invalid/acme/web.git"
    mirror = vcs.mirror_path(workspace, url)
    git("clone", "-q", "--mirror", origin.url, str(mirror))
    git("--git-dir", str(mirror), "config", "protocol.file.allow", "always")
    with pytest.raises(VcsError, match="transport 'file' not allowed"):
        vcs.update_mirror(workspace, url, access=vcs.Access(timeout=10))


# --- resolve_ref -----------------------------------------------------------------------------


def test_resolve_ref_kinds(mirror: Path, origin: Origin) -> None:
    head = origin.commits[-1]
    assert vcs.resolve_ref(mirror, "main") == head
    assert vcs.resolve_ref(mirror, "refs/heads/main") == head
    assert vcs.resolve_ref(mirror, "feature") == origin.feature
    assert vcs.resolve_ref(mirror, "v1-light") == origin.lightweight_tag
    # annotated tag peels to the commit, not the tag object
    tag_object = git("--git-dir", str(mirror), "rev-parse", "v2")
    assert tag_object != origin.annotated_tag
    assert vcs.resolve_ref(mirror, "v2") == origin.annotated_tag
    assert vcs.resolve_ref(mirror, origin.commits[0]) == origin.commits[0]
    assert vcs.resolve_ref(mirror, origin.commits[0][:10]) == origin.commits[0]
    assert vcs.resolve_ref(mirror, origin.commits[0].upper()) == origin.commits[0]


def test_resolve_ref_unknown(mirror: Path) -> None:
    with pytest.raises(InvalidRef, match=r"^Unknown ref 'no-such-branch'$"):
        vcs.resolve_ref(mirror, "no-such-branch")
    with pytest.raises(InvalidRef, match="Unknown ref 'deadbeef"):
        vcs.resolve_ref(mirror, "deadbeef" * 5)


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "-x",
        "--upload-pack=x",
        "--upload-pack=touch {marker}",
        "main; touch {marker}",
        "$(touch {marker})",
        "`touch {marker}`",
        "main\n",
        "main\x00",
        "main\x7f",
        "HEAD~1",
        "main^",
        "a..b",
        "main.lock",
        "-deadbeef",
    ],
)
def test_resolve_ref_rejects_hostile_refs(mirror: Path, tmp_path: Path, ref: str) -> None:
    marker = tmp_path / "pwned"
    ref = ref.replace("{marker}", str(marker))
    with pytest.raises(InvalidRef) as excinfo:
        vcs.resolve_ref(mirror, ref)
    assert excinfo.value.message == f"Unknown ref '{ref}'"
    assert not marker.exists()


def test_resolve_ref_broken_mirror_is_vcs_error(tmp_path: Path) -> None:
    with pytest.raises(VcsError, match="rev-parse"):
        vcs.resolve_ref(tmp_path / "not-a-mirror.git", "main")


# --- worktrees -------------------------------------------------------------------------------


def test_add_and_remove_worktree(mirror: Path, origin: Origin, tmp_path: Path) -> None:
    old = origin.commits[0]
    dest = tmp_path / "deploys" / "1" / "checkout"
    assert vcs.add_worktree(mirror, old, dest) == dest
    assert git("rev-parse", "HEAD", cwd=dest) == old
    assert (dest / "README").read_text() == "one\n"
    assert not (dest / "app.py").exists()
    assert dest.resolve() in worktree_paths(mirror)

    (dest / "build-output").mkdir()  # untracked files must not block removal
    vcs.remove_worktree(mirror, dest)
    assert not dest.exists()
    assert dest.resolve() not in worktree_paths(mirror)
    vcs.remove_worktree(mirror, dest)  # twice is fine


def test_add_worktree_refuses_existing_dest_and_non_sha(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "exists"
    dest.mkdir()
    with pytest.raises(VcsError, match="worktree"):
        vcs.add_worktree(mirror, vcs.resolve_ref(mirror, "main"), dest)
    with pytest.raises(InvalidRef):
        vcs.add_worktree(mirror, "main", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_remove_worktree_whose_metadata_git_lost(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "forgotten"
    vcs.add_worktree(mirror, vcs.resolve_ref(mirror, "main"), dest)
    for meta in (mirror / "worktrees").iterdir():
        (meta / "gitdir").unlink()  # `git worktree remove` now says it is not a working tree
    vcs.remove_worktree(mirror, dest)
    assert not dest.exists()
    assert worktree_paths(mirror) == [mirror.resolve()]


def test_remove_worktree_when_dest_was_deleted_by_hand(mirror: Path, tmp_path: Path) -> None:
    dest = tmp_path / "checkout"
    vcs.add_worktree(mirror, vcs.resolve_ref(mirror, "main"), dest)
    shutil.rmtree(dest)
    vcs.remove_worktree(mirror, dest)
    assert dest.resolve() not in worktree_paths(mirror)
    vcs.remove_worktree(tmp_path / "no-mirror.git", dest)


# --- concurrency -----------------------------------------------------------------------------


def assert_mirror_healthy(mirror: Path) -> None:
    fsck = subprocess.run(
        ["git", "--git-dir", str(mirror), "fsck", "--full", "--strict"],
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0, fsck.stderr
    assert "error" not in fsck.stderr.lower()
    assert "missing" not in fsck.stdout.lower()


def test_mirror_lock_excludes_threads_of_one_process(workspace: Path, origin: Origin) -> None:
    held = threading.Event()
    release = threading.Event()
    acquired_by_second = threading.Event()

    def first() -> None:
        with vcs.mirror_lock(workspace, origin.url):
            held.set()
            release.wait(10)

    def second() -> None:
        held.wait(10)
        with vcs.mirror_lock(workspace, origin.url):
            acquired_by_second.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert held.wait(10)
    assert not acquired_by_second.wait(0.3)  # blocked while the first thread holds it
    release.set()
    assert acquired_by_second.wait(10)
    for t in threads:
        t.join(10)


def test_mirror_lock_serialises_many_threads(workspace: Path, origin: Origin) -> None:
    inside = 0
    most = 0
    counter = threading.Lock()

    def worker() -> None:
        nonlocal inside, most
        for _ in range(5):
            with vcs.mirror_lock(workspace, origin.url):
                with counter:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.002)
                with counter:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most == 1


def test_concurrent_threads_share_one_mirror(workspace: Path, origin: Origin, tmp_path: Path):
    head = origin.commits[-1]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    dests = [tmp_path / "deploys" / str(i) for i in range(8)]

    def deploy(dest: Path) -> None:
        try:
            barrier.wait(10)
            mirror = vcs.update_mirror(workspace, origin.url, access=LOCAL)
            vcs.add_worktree(mirror, vcs.resolve_ref(mirror, "main"), dest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(d,)) for d in dests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []

    mirror = vcs.mirror_path(workspace, origin.url)
    assert_mirror_healthy(mirror)
    for dest in dests:
        assert git("rev-parse", "HEAD", cwd=dest) == head
    assert sorted(worktree_paths(mirror)[1:]) == sorted(d.resolve() for d in dests)


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from freight import vcs

    workspace, url, dest_root = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    for i in range(4):
        mirror = vcs.update_mirror(workspace, url, access=vcs.Access(allow_local=True))
        dest = vcs.add_worktree(mirror, vcs.resolve_ref(mirror, "main"), dest_root / str(i))
        if i % 2:
            vcs.remove_worktree(mirror, dest)
    """
)


def test_concurrent_processes_share_one_mirror(workspace: Path, origin: Origin, tmp_path: Path):
    head = origin.commits[-1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    roots = [tmp_path / "proc-a", tmp_path / "proc-b"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(workspace), origin.url, str(root)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for root in roots
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    mirror = vcs.mirror_path(workspace, origin.url)
    assert_mirror_healthy(mirror)
    kept = [root / str(i) for root in roots for i in (0, 2)]
    for dest in kept:
        assert git("rev-parse", "HEAD", cwd=dest) == head
    assert sorted(worktree_paths(mirror)[1:]) == sorted(d.resolve() for d in kept)


# --- history and remotes ---------------------------------------------------------------------


def test_commits_between(mirror: Path, origin: Origin) -> None:
    first, second, third = origin.commits
    commits = vcs.commits_between(mirror, first, third)
    assert [c.sha for c in commits] == [third, second]
    assert [c.subject for c in commits] == ["Fix app", "Add app"]
    assert (commits[0].author_name, commits[0].author_email) == (
        "Grace Hopper",
        "grace@example.com",
    )
    assert (commits[1].author_name, commits[1].author_email) == ("Ada Lovelace", "ada@example.com")
    assert commits[0].date > commits[1].date
    assert commits[0].date.tzinfo is not None

    assert vcs.commits_between(mirror, third, third) == []
    assert [c.sha for c in vcs.commits_between(mirror, None, third)] == [third, second, first]
    assert [c.sha for c in vcs.commits_between(mirror, None, third, limit=2)] == [third, second]
    # a branch that diverged: only what the new side has
    assert [c.subject for c in vcs.commits_between(mirror, third, origin.feature)] == [
        "Feature work"
    ]


def test_commits_between_unknown_sha_is_vcs_error(mirror: Path, origin: Origin) -> None:
    with pytest.raises(VcsError, match="log"):
        vcs.commits_between(mirror, "deadbeef" * 5, origin.commits[-1])


def test_list_remote_branch(origin: Origin, tmp_path: Path) -> None:
    assert vcs.list_remote_branch(origin.url, "main", access=LOCAL) == origin.commits[-1]
    assert vcs.list_remote_branch(origin.url, "feature", access=LOCAL) == origin.feature
    assert vcs.list_remote_branch(origin.url, "nope", access=LOCAL) is None
    assert vcs.list_remote_branch(origin.url, "*", access=LOCAL) is None
    with pytest.raises(VcsError, match="ls-remote"):
        vcs.list_remote_branch(str(tmp_path / "missing"), "main", access=LOCAL)


def test_concurrent_updates_share_fetches_and_all_see_prior_pushes(
    mirror: Path, workspace: Path, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches: list[float] = []
    real_git = vcs._git

    def counting_git(*args: str, **kwargs: object) -> str:
        if args[0] == "fetch":
            fetches.append(time.monotonic())
        return real_git(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vcs, "_git", counting_git)
    pushed = origin.commit("burst.txt", "burst\n", "Pushed before the burst")
    barrier = threading.Barrier(12)
    seen: list[str] = []

    def update() -> None:
        barrier.wait()
        seen.append(vcs.resolve_ref(vcs.update_mirror(workspace, origin.url, access=LOCAL), "main"))

    threads = [threading.Thread(target=update) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [pushed] * 12
    assert 1 <= len(fetches) <= 3  # the first, plus at most the ones asked for during it


def test_changed_paths_list_every_odd_name_once_and_patterns_match_them(
    workspace: Path, origin: Origin
) -> None:
    before = origin.commits[-1]
    (origin.path / "services" / "web").mkdir(parents=True)
    odd = "services/web/a b\nc.txt"  # a space and a newline: -z keeps names whole
    after = origin.commit(odd, "x\n", "An odd name")
    git("mv", "README", "README.md", cwd=origin.path)
    git("commit", "-q", "-m", "Rename", cwd=origin.path, date=origin.clock + 60)
    renamed = git("rev-parse", "HEAD", cwd=origin.path)
    mirror = vcs.update_mirror(workspace, origin.url, access=LOCAL)
    assert vcs.changed_paths(mirror, before, after) == [odd]
    assert vcs.changed_paths(mirror, after, renamed) == ["README", "README.md"]
    assert vcs.changed_paths(mirror, before, before) == []
    assert vcs.any_matches(["services/web/**"], [odd])
    assert not vcs.any_matches(["services/api/**", "lib/**"], [odd, "README.md"])
    assert vcs.any_matches(["*.md"], ["docs/guide.md"])  # gitignore rules: any depth
    with pytest.raises(InvalidRef):
        vcs.changed_paths(mirror, "--output=/tmp/x", after)
