"""freight/tether.py: a module run tethered ends when the process that started it is killed,
even though it runs in a session of its own, as every process of Freight's stacks does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from freight import procs
from tests.helpers import wait_for

# Starts http.server tethered to itself, says the child's pid, and waits to be killed.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen(
        [sys.executable, "-m", "freight.tether", str(os.getpid()), "http.server", "0",
         "--bind", "127.0.0.1"],
        start_new_session=True, stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("when", ["serving", "at once"])
def test_a_tethered_module_runs_as_asked_and_ends_with_its_starter_killed(
    tmp_path: Path, when: str
) -> None:
    output = tmp_path / "output"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(output)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.stdout.close()
    try:
        if when == "serving":  # the module runs as __main__, with its arguments
            wait_for(lambda: "Serving HTTP on 127.0.0.1" in output.read_text(), 20, "http.server")
        # "at once": killed before the tether may have begun to look
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not procs.is_alive(child), 5, "the tethered module to end")
    finally:
        if procs.is_alive(child):
            os.kill(child, signal.SIGKILL)
