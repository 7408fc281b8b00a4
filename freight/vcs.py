"""Git mirrors, ref resolution and per-deploy checkouts.

Plain paths and URLs in, shas out: nothing here knows about apps or deploys. Every clone of a
repository shares one bare mirror under ``<workspace_root>/mirrors``; each deploy gets its own
detached worktree of that mirror. Whatever writes to a mirror (fetch, worktree add/remove/prune)
runs under the mirror's lock, which is an flock on a sibling ``.lock`` file so it serialises
threads and processes alike. A URL is checked (check_url) before git is pointed at it, and git
itself is told which transports it may use, as the caller's Access allows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pathspec

from freight.errors import InvalidRef, InvalidRepository, VcsError

__all__ = [
    "Access",
    "Commit",
    "add_worktree",
    "any_matches",
    "changed_paths",
    "check_url",
    "collect_garbage",
    "commits_between",
    "last_used",
    "list_remote_branch",
    "mirror_busy",
    "mirror_lock",
    "mirror_path",
    "remove_mirror",
    "remove_worktree",
    "resolve_ref",
    "update_mirror",
]

_HEX_SHA = re.compile(r"[0-9a-fA-F]{4,64}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_URL_USERINFO = re.compile(r"(://)[^/@\s]+@")
_STDERR_LIMIT = 2000

# `<transport>::<address>` makes git run a remote helper: `ext::` runs any command, `fd::` talks
# over an inherited file descriptor (and waits on it for ever).
_REMOTE_HELPER = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# The network transports a deploy needs, as GIT_ALLOW_PROTOCOL names them, and their schemes.
_NETWORK = ("https", "ssh", "git")
_NETWORK_SCHEMES = frozenset({"https", "ssh", "git+ssh", "ssh+git", "git"})
_SHAPES = "an https://, ssh:// or git:// URL, or user@host:path"
_LOCAL_REFUSED = (
    "this server does not fetch from its own disk (see FREIGHT_ALLOW_LOCAL_REPOSITORIES); "
    f"give {_SHAPES}"
)

# Variables that would point git at some other repository or index than the one we name, e.g.
# when Freight itself runs from inside a git hook.
_REPO_ENV_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


@dataclass(frozen=True)
class Access:
    """What git may be pointed at, and how long one git command may take: a deploy's run can
    wait minutes for the fetch of a big repository, an API request only seconds."""

    # Repositories on this machine's disk (paths, file://): git reads them as Freight's own
    # user, which may read what the person who names them may not.
    allow_local: bool = False
    timeout: float = 600


@dataclass(frozen=True)
class Commit:
    sha: str
    author_name: str
    author_email: str
    date: datetime
    subject: str


def check_url(url: str, *, allow_local: bool) -> None:
    """Refuse a repository URL that asks git for more than a deploy needs: a remote helper
    (`fd::`, `ext::`), an option (`--upload-pack=...`), a scheme other than https, ssh and git,
    or, unless ``allow_local``, a repository on this machine. Raises InvalidRepository."""
    problem = _url_problem(url, allow_local=allow_local)
    if problem is not None:
        raise InvalidRepository(f"repository: {_redact(url)!r} is not allowed: {problem}")


def _url_problem(url: str, *, allow_local: bool) -> str | None:
    if not url.strip() or any(not ch.isprintable() for ch in url):
        return "it is empty or holds control characters"
    if url.startswith("-"):
        return "it starts with '-', which git reads as an option"
    helper = _REMOTE_HELPER.match(url)
    if helper:
        return f"'{helper.group(1)}::' makes git run a remote helper; give {_SHAPES}"
    scheme = _SCHEME.match(url)
    if scheme:
        name = scheme.group(1).lower()
        if name == "file":
            return None if allow_local else _LOCAL_REFUSED
        if name not in _NETWORK_SCHEMES:
            return f"Freight does not fetch over {name}://; give {_SHAPES}"
        return _host_problem(url[scheme.end() :].partition("/")[0].rpartition("@")[2])
    # git's own rule: a colon before any slash makes `[user@]host:path` an ssh remote.
    before, colon, _ = url.partition(":")
    if colon and "/" not in before:
        return _host_problem(before.rpartition("@")[2])
    return None if allow_local else _LOCAL_REFUSED


def _host_problem(host: str) -> str | None:
    if not host:
        return "it names no host"
    # ssh would read such a host as one of its own options (`-oProxyCommand=...`).
    if host.startswith("-"):
        return "its host starts with '-'"
    return None


def _git_env(*, allow_local: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV_VARS}
    # A deploy has nobody to answer a password prompt; fail instead of hanging. An empty
    # GIT_ASKPASS also stops git falling back to core.askPass or SSH_ASKPASS.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_ASKPASS"] = ""
    env["LC_ALL"] = "C"
    # A second wall behind check_url, which git itself keeps: also for what a URL leads to
    # (redirects, submodules, a mirror's stored remote) and whatever protocol.* config says.
    env["GIT_ALLOW_PROTOCOL"] = ":".join((*_NETWORK, "file") if allow_local else _NETWORK)
    return env


def _redact(text: str) -> str:
    # URLs may carry tokens and these messages end up in deploy logs.
    return _URL_USERINFO.sub(r"\1***@", text)


def _git(
    subcommand: str,
    *args: str,
    git_dir: Path | None = None,
    timeout: float | None = None,
    expected: tuple[int, ...] = (0,),
    allow_local: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one git command; an exit status outside ``expected`` raises VcsError."""
    # Auto-gc must run in the foreground: a detached gc would outlive the mirror lock and the
    # timeout, racing the next fetch or worktree add.
    argv = ["git", "-c", "gc.autoDetach=false"]
    if git_dir is not None:
        argv += ["--git-dir", str(git_dir)]
    argv += [subcommand, *args]
    try:
        # Own session: no controlling terminal for ssh to prompt on, and on timeout the whole
        # group (git-remote-https, ssh, ...) can be killed, not just git, so the pipes close.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_git_env(allow_local=allow_local),
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise VcsError(f"git {subcommand} could not be started: {exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise VcsError(f"git {subcommand} timed out after {timeout:g}s") from exc
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode not in expected:
        detail = _redact(stderr.strip())[-_STDERR_LIMIT:]
        error = subprocess.CalledProcessError(
            proc.returncode, [_redact(arg) for arg in argv], stdout, _redact(stderr)
        )
        raise VcsError(f"git {subcommand} failed (exit {proc.returncode}): {detail}") from error
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _slug(url: str) -> str:
    rest = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", url)
    authority, _, path = rest.partition("/")
    # Drop user:token@ so credentials never appear in a directory name.
    host = authority.rpartition("@")[2]
    name = re.sub(r"(\.git)?/*$", "", f"{host}/{path}")
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", name).lower()[-60:]
    return slug.strip("-.") or "repo"


def mirror_path(workspace_root: Path, url: str) -> Path:
    """Where the bare mirror of ``url`` lives; the hash keeps similar-looking URLs apart."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return workspace_root / "mirrors" / f"{_slug(url)}-{digest}.git"


@contextlib.contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    lock_path = mirror.with_name(mirror.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh open file description per call: flock then excludes other threads of this
    # process as well as other processes, which a shared descriptor would not.
    with open(lock_path, "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # Unlock explicitly rather than on close: a child forked meanwhile shares the
            # description and would otherwise keep the lock until it exits.
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def mirror_lock(workspace_root: Path, url: str) -> contextlib.AbstractContextManager[None]:
    """The lock every write to the mirror of ``url`` takes.

    It is not reentrant: do not call update_mirror, add_worktree or remove_worktree for the same
    mirror while holding it.
    """
    return _locked(mirror_path(workspace_root, url))


def update_mirror(workspace_root: Path, url: str, *, access: Access, max_age: float = 0) -> Path:
    """Clone ``url`` as a bare mirror, or fetch into the existing one; returns the mirror path.

    Callers that queue up behind one fetch share it: a fetch that began after this call asked
    for one has everything this call would have fetched, so a burst of deploys of one repository
    costs one or two fetches, not one each. With ``max_age``, a fetch begun that many seconds
    before the call is recent enough.
    """
    check_url(url, allow_local=access.allow_local)
    mirror = mirror_path(workspace_root, url)
    asked = time.time() - max_age
    with _locked(mirror):
        stamp = mirror / _FETCH_STAMP
        if mirror.exists() and stamp.exists() and stamp.stat().st_mtime >= asked:
            return mirror
        started = time.time()
        if mirror.exists():
            _git(
                "fetch",
                "--prune",
                "origin",
                git_dir=mirror,
                timeout=access.timeout,
                allow_local=access.allow_local,
            )
        else:
            _clone_mirror(url, mirror, access)
        stamp.touch()
        os.utime(stamp, (started, started))
        _mark_used(mirror)
    return mirror


def mirror_with(workspace_root: Path, url: str, sha: str, *, access: Access) -> Path:
    """The mirror, fetched only if it lacks ``sha`` (a deploy's sha came from the mirror when the
    deploy was created, so it is nearly always there: no fetch at the start of the run)."""
    _require_full_sha(sha)
    # Also when no fetch follows: a URL refused now deploys nothing from an older mirror.
    check_url(url, allow_local=access.allow_local)
    mirror = mirror_path(workspace_root, url)
    if mirror.exists():
        found = _git(
            "cat-file",
            "-e",
            f"{sha}^{{commit}}",
            git_dir=mirror,
            timeout=access.timeout,
            expected=(0, 1, 128),
        )
        if found.returncode == 0:
            _mark_used(mirror)
            return mirror
    return update_mirror(workspace_root, url, access=access)


# Its mtime is when the last successful fetch began.
_FETCH_STAMP = "freight-fetch-started"
# Its mtime is when a deploy or a request last used the mirror: the cache's cap removes the
# mirrors used longest ago first.
_USED_STAMP = "freight-used"
# Its mtime is when the mirror was last garbage-collected.
_GC_STAMP = "freight-gc"


def _mark_used(mirror: Path) -> None:
    with contextlib.suppress(OSError):  # a mirror removed meanwhile is cloned again when used
        (mirror / _USED_STAMP).touch()


def last_used(mirror: Path) -> float:
    """When the mirror was last used (its creation, for one never used since stamps began)."""
    for stamp in (_USED_STAMP, _FETCH_STAMP):
        with contextlib.suppress(OSError):
            return (mirror / stamp).stat().st_mtime
    return mirror.stat().st_mtime


def mirror_busy(mirror: Path) -> bool:
    """Whether a deploy's checkout is a worktree of the mirror: it must not go now."""
    worktrees = mirror / "worktrees"
    return worktrees.is_dir() and any(worktrees.iterdir())


def remove_mirror(mirror: Path) -> bool:
    """Delete the mirror, unless a deploy's checkout uses it (False then)."""
    with _locked(mirror):
        _git("worktree", "prune", git_dir=mirror)
        if mirror_busy(mirror):
            return False
        # Renamed first: a half-deleted mirror is never taken for a whole one.
        doomed = mirror.with_name(f".{mirror.name}.removing")
        mirror.rename(doomed)
        _rmtree(doomed)
    return True


def collect_garbage(mirror: Path, *, every: float, timeout: float | None = None) -> bool:
    """`git gc` the mirror if it was not collected in the last `every` seconds (True then)."""
    stamp = mirror / _GC_STAMP
    if stamp.exists() and time.time() - stamp.stat().st_mtime < every:
        return False
    with _locked(mirror):
        _git("worktree", "prune", git_dir=mirror)
        _git("gc", "--quiet", "--prune=now", git_dir=mirror, timeout=timeout)
        stamp.touch()
    return True


def _clone_mirror(url: str, mirror: Path, access: Access) -> None:
    # Holding the lock, any temporary clone of this mirror left behind was abandoned by a
    # process that died mid-clone.
    for stale in mirror.parent.glob(f".{mirror.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{mirror.name}.", suffix=".tmp", dir=mirror.parent))
    try:
        # Cloned beside the final path and renamed in one step, so a clone that fails or times
        # out never leaves a half-populated mirror where update_mirror would fetch into it.
        staged = tmp / mirror.name
        _git(
            "clone",
            "--mirror",
            "--end-of-options",
            url,
            str(staged),
            timeout=access.timeout,
            allow_local=access.allow_local,
        )
        staged.rename(mirror)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_ref(mirror: Path, ref: str, *, timeout: float | None = None) -> str:
    """The full commit sha of a branch, tag (peeled), full sha or unambiguous short sha."""
    if not _acceptable_ref(ref, timeout=timeout):
        raise InvalidRef(f"Unknown ref '{ref}'")
    result = _git(
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{ref}^{{commit}}",
        git_dir=mirror,
        timeout=timeout,
        # 1 is rev-parse's quiet "no such commit"; other failures mean a broken mirror.
        expected=(0, 1),
    )
    if result.returncode == 1:
        raise InvalidRef(f"Unknown ref '{ref}'")
    return result.stdout.strip()


def _acceptable_ref(ref: str, *, timeout: float | None) -> bool:
    if not ref or ref.startswith("-"):
        return False
    if any(ch.isspace() or not ch.isprintable() for ch in ref):
        return False
    if _HEX_SHA.fullmatch(ref):
        return True
    checked = _git("check-ref-format", "--allow-onelevel", ref, timeout=timeout, expected=(0, 1))
    return checked.returncode == 0


def _require_full_sha(sha: str) -> None:
    if not _FULL_SHA.fullmatch(sha):
        raise InvalidRef(f"Unknown ref '{sha}': expected a full commit sha")


def add_worktree(mirror: Path, sha: str, dest: Path) -> Path:
    """Check ``sha`` out, detached, into ``dest``, which must not exist yet; returns ``dest``."""
    _require_full_sha(sha)
    dest = Path(os.path.abspath(dest))
    if dest.exists() or dest.is_symlink():
        raise VcsError(f"git worktree add refused: {dest} already exists")
    # The worktree's metadata is written into the mirror, so it must not race a fetch or another
    # worktree add/prune.
    with _locked(mirror):
        _git("worktree", "add", "--detach", str(dest), sha, git_dir=mirror)
    return dest


def remove_worktree(mirror: Path, dest: Path) -> None:
    """Delete the checkout at ``dest`` and forget it in the mirror; fine if it is already gone."""
    dest = Path(os.path.abspath(dest))
    with _locked(mirror):
        if dest.exists() or dest.is_symlink():
            try:
                _git("worktree", "remove", "--force", "--force", str(dest), git_dir=mirror)
            except VcsError:
                # e.g. its metadata was already pruned, or it holds submodules git won't delete.
                _rmtree(dest)
        if mirror.exists():
            _git("worktree", "prune", git_dir=mirror)


def _rmtree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def prune_worktrees(mirror: Path) -> None:
    """Forget checkouts that were deleted without git knowing (after a crash)."""
    with _locked(mirror):
        _git("worktree", "prune", git_dir=mirror)


def commits_between(
    mirror: Path,
    old_sha: str | None,
    new_sha: str,
    *,
    limit: int = 100,
    timeout: float | None = None,
) -> list[Commit]:
    """Commits reachable from ``new_sha`` but not ``old_sha``, newest first, at most ``limit``."""
    revs = [new_sha] if old_sha is None else [new_sha, f"^{old_sha}"]
    # Unit separators between fields, the subject last: none of these fields holds a newline,
    # and splitting at most four times keeps any separator inside a subject intact.
    result = _git(
        "log",
        f"--max-count={limit}",
        "--no-show-signature",
        "--format=%H%x1f%an%x1f%ae%x1f%aI%x1f%s",
        "--end-of-options",
        *revs,
        git_dir=mirror,
        timeout=timeout,
    )
    commits = []
    for line in result.stdout.splitlines():
        sha, name, email, date, subject = line.split("\x1f", 4)
        commits.append(Commit(sha, name, email, datetime.fromisoformat(date), subject))
    return commits


def changed_paths(
    mirror: Path, old_sha: str, new_sha: str, *, timeout: float | None = None
) -> list[str]:
    """The paths whose content differs between the two commits' trees (renames as a delete
    and an add, so both names count)."""
    _require_full_sha(old_sha)
    _require_full_sha(new_sha)
    result = _git(
        "diff",
        "--name-only",
        "--no-renames",
        "-z",
        "--end-of-options",
        old_sha,
        new_sha,
        git_dir=mirror,
        timeout=timeout,
    )
    return [path for path in result.stdout.split("\0") if path]


def any_matches(patterns: Sequence[str], paths: Iterable[str]) -> bool:
    """Whether a path matches one of the gitignore-style patterns (`services/web/**`)."""
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    return any(spec.match_file(path) for path in paths)


def list_remote_branch(url: str, branch: str, *, access: Access) -> str | None:
    """The sha ``branch`` points at on the remote, or None if the remote has no such branch."""
    check_url(url, allow_local=access.allow_local)
    refname = f"refs/heads/{branch}"
    result = _git(
        "ls-remote",
        "--heads",
        "--end-of-options",
        url,
        refname,
        timeout=access.timeout,
        allow_local=access.allow_local,
    )
    # ls-remote matches patterns against the tail of ref names (and as globs), so keep only the
    # exact ref.
    for line in result.stdout.splitlines():
        sha, _, name = line.partition("\t")
        if name == refname:
            return sha
    return None
