"""Prefect API calls per deploy on the `make up` stack, counted by a proxy in front of the
Prefect server through which every process of the stack talks to it.

Run by hand, from the project root:  .venv/bin/python -m bench.api_calls [--deploys 10]
Prints, per endpoint, the calls a deploy costs (what the stack makes while idle, per second,
subtracted), as markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from freight.catalogue import AppSpec
from freight.db import AppSource, Deploy, DeployStatus, get_engine, session_scope
from freight.service import apps
from freight.settings import Settings
from freight.stack import running_stack

KEY = "bench-admin-key"
REQUEST = re.compile(rb"(?:^|\r\n)(GET|POST|PATCH|PUT|DELETE) (/\S*) HTTP/1\.1\r\n")
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CountingProxy:
    """A TCP proxy that counts the HTTP requests going through it, by method and path."""

    def __init__(self, listen: int, upstream: int) -> None:
        self.listen, self.upstream = listen, upstream
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait()

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.calls)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.listen)
        )
        self._ready.set()
        self._loop.run_until_complete(server.serve_forever())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, count=True), self._pipe(up_reader, writer, count=False)
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if count:
                    found = [
                        f"{m[1].decode()} {ID.sub('{id}', m[2].decode().split('?')[0])}"
                        for m in REQUEST.finditer(data)
                    ]
                    with self._lock:
                        self.calls.update(found)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle baseline")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="freight-bench-", dir="/tmp"))
    base.chmod(0o711)
    front, back, api_port = free_port(), free_port(), free_port()
    proxy = CountingProxy(front, back)
    settings = Settings(
        home=base / "home",
        db_port=free_port(),
        prefect_api_url=f"http://127.0.0.1:{front}/api",
        api_port=api_port,
        public_url=f"http://127.0.0.1:{api_port}",
        api_key=KEY,
        allow_local_repositories=True,
    )
    # The server listens behind the proxy; every client goes through it.
    with running_stack(settings, extra_env={"PREFECT_SERVER_API_PORT": str(back)}) as stack:
        engine = get_engine(settings.database_url)
        repo = base / "repo"
        repo.mkdir()
        (repo / "README").write_text("hi\n")
        for git in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
            subprocess.run(
                ["git", "-c", "user.name=b", "-c", "user.email=b@x", *git], cwd=repo, check=True
            )
        name = f"b{uuid.uuid4().hex[:6]}"
        with session_scope(engine) as session:
            apps.save_app(
                session,
                AppSpec.model_validate(
                    {
                        "name": name,
                        "repository": str(repo),
                        "provider": {"type": "shell", "command": "echo {number}; sleep 0.3"},
                        "environments": {"staging": {"default_ref": "main"}},
                    }
                ),
                source=AppSource.API,
            )
        time.sleep(10)  # the stack settles
        before, t0 = proxy.snapshot(), time.monotonic()
        time.sleep(args.idle)
        idle, idle_for = proxy.snapshot() - before, time.monotonic() - t0
        before, t0 = proxy.snapshot(), time.monotonic()
        for _ in range(args.deploys):
            response = httpx.post(
                f"{stack.api_url}/api/0/deploys/",
                json={"app": name, "env": "staging", "user": "bench"},
                headers={"Authorization": f"Key {KEY}"},
                timeout=60,
            )
            deploy_id = int(response.json()["id"])
            while True:
                with session_scope(engine) as session:
                    if DeployStatus(session.get_one(Deploy, deploy_id).status).is_final:
                        break
                time.sleep(0.05)
            time.sleep(3)  # the flow run's engine ends, after Freight
        busy, busy_for = proxy.snapshot() - before, time.monotonic() - t0
    per_deploy = {
        call: (busy[call] - idle[call] / idle_for * busy_for) / args.deploys for call in busy
    }
    print(
        f"{args.deploys} deploys, one at a time; idle baseline {sum(idle.values()) / idle_for:.1f}"
        " calls/s subtracted\n"
    )
    print("| call | per deploy |\n|---|---|")
    for call, count in sorted(per_deploy.items(), key=lambda item: -item[1]):
        if count >= 0.05:
            print(f"| `{call}` | {count:.1f} |")
    print(f"| **all** | {sum(max(0.0, c) for c in per_deploy.values()):.1f} |")
    print("\nIdle, per minute:\n\n| call | per minute |\n|---|---|")
    for call, count in idle.most_common():
        print(f"| `{call}` | {count / idle_for * 60:.1f} |")


if __name__ == "__main__":
    main()
