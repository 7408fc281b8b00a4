"""The demo repository that `make up` deploys: a tiny git repo whose deploy script takes a while."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DEPLOY_SCRIPT = """#!/usr/bin/env bash
# Demo deploy: prints a few lines over a few seconds, like a real deploy would.
set -euo pipefail
echo "Deploying $(git log -1 --format='%h %s') to $1"
for step in "Building assets" "Uploading release" "Migrating database" "Restarting workers"; do
  echo "$step..."
  sleep 1
done
echo "Deployed $2 to $1"
"""


def ensure_demo_repo(path: Path) -> bool:
    """Create the demo repository at path unless it exists; True when it was created."""
    if (path / ".git").exists():
        return False
    path.mkdir(parents=True, exist_ok=True)
    (path / "deploy.sh").write_text(DEPLOY_SCRIPT)
    (path / "deploy.sh").chmod(0o755)
    (path / "README.md").write_text("Demo app deployed by Freight's `make up`.\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Freight Demo",
        "GIT_AUTHOR_EMAIL": "demo@freight.invalid",
        "GIT_COMMITTER_NAME": "Freight Demo",
        "GIT_COMMITTER_EMAIL": "demo@freight.invalid",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Demo app"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)
    return True
