"""The plain-Prefect alternative bench/engine.py measures Freight against: the same command in
a three-task flow (check out, run, clean up), run by a process worker polling every second."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from prefect import flow, get_run_logger, task


@task(name="checkout")
def checkout(repository: str, sha: str) -> str:
    workspace = tempfile.mkdtemp(prefix="plain-")
    subprocess.run(["git", "clone", "-q", repository, workspace], check=True)
    subprocess.run(["git", "-C", workspace, "checkout", "-q", sha], check=True)
    return workspace


@task(name="run")
def run(command: str, workspace: str) -> None:
    logger = get_run_logger()
    process = subprocess.Popen(
        ["/bin/bash", "-c", command],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        logger.info(line.rstrip("\n"))
    if process.wait() != 0:
        raise RuntimeError(f"command exited with {process.returncode}")


@task(name="cleanup")
def cleanup(workspace: str) -> None:
    shutil.rmtree(workspace)


@flow(name="plain-deploy")
def plain(repository: str, sha: str, command: str) -> None:
    workspace = checkout(repository, sha)
    try:
        run(command, workspace)
    finally:
        cleanup(workspace)
