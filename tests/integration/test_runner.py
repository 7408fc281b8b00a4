"""freight.runner against real processes, real signals and the real /proc."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import pytest

from freight import procs
from freight.errors import CommandFailed, DeployCancelled, DeployTimeout
from freight.runner import Masker, run_process

ENV = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}


def run(
    command: str | Sequence[str],
    lines: list[str],
    cwd: Path,
    *,
    output: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 10,
    read_timeout: float = 10,
    grace: float = 2,
    should_cancel: Callable[[], bool] | None = None,
) -> None:
    run_process(
        command,
        cwd=cwd,
        env=ENV if env is None else env,
        output=lines.append if output is None else output,
        timeout=timeout,
        read_timeout=read_timeout,
        grace=grace,
        should_cancel=should_cancel,
        poll_interval=0.05,
    )


def test_lines_in_order_with_stderr_merged_and_unterminated_last_line(tmp_path: Path) -> None:
    lines: list[str] = []
    run("echo one; echo two >&2; printf 'three\\r\\n'; echo four >&2; printf five", lines, tmp_path)
    assert lines == ["one", "two", "three", "four", "five"]


def test_stdin_is_empty(tmp_path: Path) -> None:
    lines: list[str] = []
    run("cat; echo after-cat", lines, tmp_path, timeout=5)
    assert lines == ["after-cat"]


def test_env_is_exactly_the_given_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FREIGHT_TEST_LEAK", "from-parent")
    lines: list[str] = []
    env = {**ENV, "FREIGHT_APP": "api server"}
    run('echo "$FREIGHT_APP"; echo "${FREIGHT_TEST_LEAK-unset}"', lines, tmp_path, env=env)
    assert lines == ["api server", "unset"]


def test_cwd_is_used(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("in the workspace\n")
    lines: list[str] = []
    run("cat marker.txt; pwd", lines, tmp_path)
    assert lines == ["in the workspace", str(tmp_path.resolve())]


def test_sequence_is_argv_without_a_shell(tmp_path: Path) -> None:
    lines: list[str] = []
    run(["printf", "%s\\n", "a  b", "$HOME; echo injected"], lines, tmp_path)
    assert lines == ["a  b", "$HOME; echo injected"]


def test_line_is_delivered_while_the_command_still_runs(tmp_path: Path) -> None:
    flag = tmp_path / "seen"
    events: list[str] = []

    def output(line: str) -> None:
        events.append(line)
        if line == "waiting":
            # The command only finishes once this file exists, so it cannot have ended yet.
            flag.touch()
            events.append("flag created")

    run(
        f"echo waiting; while [ ! -e {flag} ]; do sleep 0.01; done; echo done",
        [],
        tmp_path,
        output=output,
        timeout=10,
    )
    assert events == ["waiting", "flag created", "done"]


def test_ten_thousand_fast_lines_arrive_once_and_in_order(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(10000):\n"
        "    sys.stdout.write(f'line {i:05d} ' + 'x' * 60 + '\\n')"
    )
    lines: list[str] = []
    run([sys.executable, "-c", script], lines, tmp_path)
    assert lines == [f"line {i:05d} " + "x" * 60 for i in range(10000)]


def test_very_long_line_and_invalid_utf8(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.stdout.buffer.write(b'x' * 2_000_000 + b'\\n')\n"
        "sys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff\\n')"
    )
    lines: list[str] = []
    run([sys.executable, "-c", script], lines, tmp_path)
    assert lines == ["x" * 2_000_000, "caf\u00e9 \ufffd"]


def test_slow_printer(tmp_path: Path) -> None:
    lines: list[str] = []
    run("for i in 1 2 3 4; do echo tick $i; sleep 0.1; done", lines, tmp_path)
    assert lines == ["tick 1", "tick 2", "tick 3", "tick 4"]


def test_nonzero_exit_raises_command_failed(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(CommandFailed) as failed:
        run("echo working; exit 3", lines, tmp_path)
    assert failed.value.returncode == 3
    assert str(failed.value) == "Command exited with status 3"
    assert lines == ["working", ">> Command exited with status 3"]


def test_death_by_signal_is_named(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(CommandFailed) as failed:
        run("kill -KILL $$", lines, tmp_path)
    assert failed.value.returncode == -signal.SIGKILL
    assert str(failed.value) == "Command was killed by signal SIGKILL"
    assert lines == [">> Command was killed by signal SIGKILL"]


def test_start_failure_is_command_failed(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(CommandFailed) as failed:
        run("true", lines, tmp_path / "missing")
    assert failed.value.returncode is None
    assert lines == [f">> {failed.value}"]
    assert "missing" in lines[0]


def test_total_timeout_stops_the_whole_group(tmp_path: Path) -> None:
    lines: list[str] = []
    before: list[int] = []

    def output(line: str) -> None:
        lines.append(line)
        if line == "spawned":
            before.extend(procs.group_members(int(lines[0])))

    started = time.monotonic()
    with pytest.raises(DeployTimeout) as timed_out:
        run("echo $$; sleep 600 & echo spawned; sleep 600", [], tmp_path, output=output, timeout=1)
    elapsed = time.monotonic() - started
    pgid = int(lines[0])
    assert str(timed_out.value) == "Process exceeded time limit of 1s"
    assert lines == [
        str(pgid),
        "spawned",
        ">> Process exceeded time limit of 1s",
        f">> Sent SIGTERM to process group {pgid}",
    ]
    assert len(before) >= 2
    assert procs.group_members(pgid) == []
    assert 1 <= elapsed < 30  # nowhere near the 600 s the command would take


def test_no_output_timeout_resets_on_output_and_stops_the_group(tmp_path: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(DeployTimeout) as timed_out:
        run(
            "echo $$; for i in 1 2 3; do sleep 0.4; echo tick; done; sleep 600",
            lines,
            tmp_path,
            read_timeout=1,
        )
    elapsed = time.monotonic() - started
    pgid = int(lines[0])
    assert str(timed_out.value) == "Process produced no output for 1s"
    assert lines == [
        str(pgid),
        "tick",
        "tick",
        "tick",
        ">> Process produced no output for 1s",
        f">> Sent SIGTERM to process group {pgid}",
    ]
    # Silence only started after the last tick (>= 1.2 s in), so the limit must have been reset.
    assert elapsed >= 2.2
    assert procs.group_members(pgid) == []


def test_cancel_kills_a_grandchild_that_ignores_sigterm(tmp_path: Path) -> None:
    lines: list[str] = []
    before: list[int] = []

    def should_cancel() -> bool:
        if not any(line.startswith("child ") for line in lines):
            return False
        before.extend(procs.group_members(int(lines[0])))
        return True

    with pytest.raises(DeployCancelled) as cancelled:
        run(
            'trap "" TERM; echo $$; sleep 600 & echo "child $!"; wait',
            lines,
            tmp_path,
            grace=0.5,
            should_cancel=should_cancel,
        )
    pgid = int(lines[0])
    child = int(lines[1].removeprefix("child "))
    assert str(cancelled.value) == "Deploy cancelled"
    assert lines[2:] == [
        ">> Deploy cancelled",
        f">> Sent SIGTERM to process group {pgid}",
        f">> Sent SIGKILL to process group {pgid}",
    ]
    assert {pgid, child} <= set(before)
    assert procs.group_members(pgid) == []


def test_background_leftover_is_stopped_after_normal_exit(tmp_path: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    run('echo $$; sleep 600 & echo "child $!"; seq 3000', lines, tmp_path, timeout=10)
    elapsed = time.monotonic() - started
    pgid = int(lines[0])
    child = int(lines[1].removeprefix("child "))
    assert child != pgid
    # Everything the command printed comes before Freight says it stops the leftovers.
    assert lines[2:] == [str(i) for i in range(1, 3001)] + [
        f">> Sent SIGTERM to process group {pgid}"
    ]
    assert procs.group_members(pgid) == []
    # The sleep held the pipe open: waiting for EOF would have run into the 10 s limit.
    assert elapsed < 10


def test_background_leftover_is_stopped_after_failed_exit(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(CommandFailed) as failed:
        run("echo $$; sleep 600 & exit 4", lines, tmp_path)
    pgid = int(lines[0])
    assert failed.value.returncode == 4
    assert lines[1:] == [
        f">> Sent SIGTERM to process group {pgid}",
        ">> Command exited with status 4",
    ]
    assert procs.group_members(pgid) == []


class SinkBroken(Exception):
    pass


def test_exception_from_output_still_stops_the_group(tmp_path: Path) -> None:
    lines: list[str] = []

    def output(line: str) -> None:
        lines.append(line)
        if line == "started":
            raise SinkBroken("log store unavailable")

    with pytest.raises(SinkBroken):
        run("echo $$; sleep 600 & echo started; sleep 600", [], tmp_path, output=output)
    pgid = int(lines[0])
    assert procs.group_members(pgid) == []


class Interrupted(Exception):
    pass


@pytest.fixture
def sigusr1_raises() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.usefixtures("sigusr1_raises")
def test_exception_from_signal_handler_still_stops_the_group(tmp_path: Path) -> None:
    flag = tmp_path / "seen"
    lines: list[str] = []

    def output(line: str) -> None:
        lines.append(line)
        if line == "started":
            flag.touch()

    # Once its output has been seen, the command signals the test process itself, which by
    # then is waiting for more output inside run_process.
    with pytest.raises(Interrupted):
        run(
            f"echo $$; sleep 600 & echo started; while [ ! -e {flag} ]; do sleep 0.01; done; "
            "kill -USR1 $PPID; sleep 600",
            [],
            tmp_path,
            output=output,
        )
    pgid = int(lines[0])
    assert lines[1:] == ["started", f">> Sent SIGTERM to process group {pgid}"]
    assert procs.group_members(pgid) == []


def test_masker_replaces_secrets_longest_first() -> None:
    mask = Masker(["abc", "abcdef", "token-9"])
    assert mask("key=abcdef short=abc t=token-9") == "key=******** short=******** t=********"


def test_masker_ignores_blank_secrets() -> None:
    mask = Masker(["", "  ", "\t", "s3cret"])
    assert mask("a  b\tc s3cret") == "a  b\tc ********"
    assert Masker([])("nothing to hide") == "nothing to hide"
