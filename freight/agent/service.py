"""The agent of one machine: it checks in with Freight every `interval` seconds (the check-in
is held by Freight until there is news, at most that long), reports the version of each app it
is configured for, and runs the deploy command of a pull deploy when told to, streaming its
output back. It talks only outbound HTTP(S), and survives Freight being away: it retries with
back-off, keeps every output line until Freight has it, and carries on."""

from __future__ import annotations

import logging
import pwd
import subprocess
import threading
import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx

from freight.agent.config import AgentConfig, AppEntry
from freight.commands import DeployContext, inherited_env, render_command
from freight.errors import CommandFailed, DeployCancelled, DeployTimeout, FreightError
from freight.runner import Masker, run_process
from freight.system_users import RunAs

log = logging.getLogger("freight.agent")

# Back-off between failed calls to Freight: doubling from the first, up to two check-in
# intervals (a machine is stale after three) and never more than the last.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# How often a run sends the lines its command printed.
SEND_EVERY = 0.25
# Lines per request, so that a long backlog (after Freight was away) goes in pieces.
BATCH_LINES = 2000


class Unavailable(Exception):
    """Freight did not answer (or answered 5xx): try again later."""


class Refused(Exception):
    """Freight refused the request (4xx): trying again will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Freight:
    """Freight's API as the agent uses it."""

    def __init__(self, config: AgentConfig) -> None:
        self.client = httpx.Client(
            base_url=config.url.rstrip("/") + "/api/0",
            headers={"Authorization": f"Key {config.key.get_secret_value()}"},
            verify=str(config.ca_file) if config.ca_file else True,
            timeout=httpx.Timeout(30.0),
        )

    def post(self, path: str, body: dict[str, Any], *, wait: float = 0) -> dict[str, Any]:
        try:
            response = self.client.post(path, json=body, timeout=wait + 30.0)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise Unavailable(f"{response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text[:200]
            raise Refused(response.status_code, message)
        data = response.json()
        assert isinstance(data, dict)
        return data

    def close(self) -> None:
        self.client.close()


def command_env(user: RunAs | None) -> dict[str, str]:
    """What a command run by the agent inherits: the basics, as `user` when it has one (never
    the agent's own variables: its key is among them)."""
    env = inherited_env()
    if user is not None:
        env.update(HOME=pwd.getpwuid(user.uid).pw_dir, USER=user.name, LOGNAME=user.name)
    return env


def read_version(entry: AppEntry, user: RunAs | None = None) -> tuple[str | None, str | None]:
    """(version, None), or (None, why it could not be read)."""
    source = entry.version
    if source.file is not None:
        try:
            text = source.file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return None, f"cannot read {source.file}: {exc.strerror}"
    else:
        assert source.command is not None
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", source.command],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=source.timeout,
                env=command_env(user),
                start_new_session=True,
                **(user.popen() if user else {}),
            )
        except subprocess.TimeoutExpired:
            return None, f"version command took more than {source.timeout:g}s"
        except OSError as exc:
            return None, f"version command failed to start: {exc.strerror}"
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or [""]
            return None, f"version command exited {done.returncode}: {tail[0][:500]}"
        text = done.stdout
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not line:
        return None, "the version is empty"
    return line[:200], None


class Run:
    """One run of a deploy command on this machine, for a pull deploy (or a catch-up to the
    desired version). Its lines are numbered, kept until Freight has them, and sent with the
    final status; Freight's answer may tell it to stop."""

    def __init__(self, agent: Agent, entry: AppEntry, order: dict[str, Any]) -> None:
        assert entry.deploy is not None
        self.agent = agent
        self.entry = entry
        self.deploy = entry.deploy
        self.order = order
        self.deploy_id = int(order["deploy"])
        self.cancelled = threading.Event()
        # The command ended; and then Freight had its end (or gave up on the run).
        self.done = threading.Event()
        self.settled = threading.Event()
        self._lines: list[str] = []
        self._sent = 0
        # Freight knows the run started (a silent command sends nothing more until it ends).
        self._announced = False
        self._lock = threading.Lock()
        # (status, message) once the command ended
        self.outcome: tuple[str, str | None] | None = None
        self.thread = threading.Thread(target=self._main, name=f"run-{self.deploy_id}")

    @property
    def place(self) -> tuple[str, str]:
        return self.entry.app, self.entry.env

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, line: str) -> None:
        line = self.agent.mask(line)
        with self._lock:
            self._lines.append(line)

    def _main(self) -> None:
        sender = threading.Thread(target=self._send_loop, name=f"send-{self.deploy_id}")
        sender.start()
        try:
            self.outcome = self._execute()
        finally:
            self.done.set()
            sender.join()
            self.settled.set()
            self.agent.ran(self)

    def _execute(self) -> tuple[str, str | None]:
        order = self.order
        cwd = self.deploy.cwd or Path.cwd()
        context = DeployContext(
            deploy_id=self.deploy_id,
            app=order["app"],
            environment=order["env"],
            number=int(order["number"]),
            ref=order["ref"],
            sha=order["sha"],
            prev_sha=order.get("prevSha"),
            user=order.get("user") or "",
            workspace=cwd,
            params={str(k): str(v) for k, v in (order.get("params") or {}).items()},
        )
        try:
            command, shown = render_command(self.deploy.command, context)
            what = "Catching up: running" if order.get("catchUp") else "Running"
            self.emit(f">> {what} {shown}")
            run_process(
                command,
                cwd=cwd,
                env={**command_env(self.agent.user), **self.deploy.env, **context.env_vars()},
                identity=self.agent.user.popen() if self.agent.user else None,
                output=self.emit,
                timeout=self.deploy.timeout,
                read_timeout=self.deploy.read_timeout,
                grace=self.deploy.grace,
                should_cancel=self.cancelled.is_set,
            )
        except DeployCancelled:
            return "cancelled", "stopped as Freight asked"
        except (CommandFailed, DeployTimeout) as exc:
            return "failed", exc.message
        except FreightError as exc:
            self.emit(f">> {exc.message}")
            return "failed", exc.message
        except OSError as exc:
            self.emit(f">> The command could not start: {exc}")
            return "failed", f"could not start: {exc.strerror}"
        self.emit(">> Deployed")
        return "succeeded", None

    def _send_loop(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            finished = self.done.is_set()
            try:
                self._send(final=self.outcome if finished else None)
                delay = BACKOFF_FIRST
            except Unavailable as exc:
                log.warning(
                    "deploy %s: Freight is away (%s); keeping the lines", self.deploy_id, exc
                )
                if self.agent.stopping.wait(delay):
                    return
                delay = min(delay * 2, self.agent.backoff_max)
                continue
            except Refused as exc:
                log.error("deploy %s: Freight refused the run's report (%s)", self.deploy_id, exc)
                self.cancelled.set()  # the deploy is gone, or not ours: nobody waits on it
                if finished:
                    return
            if finished and self._sent >= len(self._lines):
                return
            time.sleep(SEND_EVERY)

    def _send(self, *, final: tuple[str, str | None] | None) -> None:
        with self._lock:
            batch = self._lines[self._sent : self._sent + BATCH_LINES]
            last = self._sent + len(batch) >= len(self._lines)
        body: dict[str, Any] = {"from": self._sent, "lines": batch}
        if final is not None and last:
            body["status"], body["message"] = final
        elif not batch:
            if self._announced:
                return  # nothing new: a cancel comes with the next check-in's answer
            body["status"] = "running"
        answer = self.agent.freight.post(
            f"/machines/{self.agent.config.name}/runs/{self.deploy_id}/", body
        )
        self._announced = True
        self._sent = max(self._sent, int(answer.get("lines", self._sent)))
        if answer.get("cancel"):
            self.cancelled.set()


class Agent:
    def __init__(
        self, config: AgentConfig, *, user: RunAs | None = None, freight: Freight | None = None
    ) -> None:
        self.config = config
        # Whom commands run as (None: the agent's own user).
        self.user = user
        self.freight = freight or Freight(config)
        self.stopping = threading.Event()
        self.runs: dict[int, Run] = {}
        # Set when a run ends, so that the next check-in reports its version at once.
        self._news = threading.Event()
        self._lock = threading.Lock()
        self.agent_version = package_version("freight")
        self.mask = Masker(config.secrets)
        self.last_error: str | None = None

    @property
    def backoff_max(self) -> float:
        return min(BACKOFF_MAX, 2 * self.config.interval)

    def report(self) -> dict[str, Any]:
        # Every run whose end Freight has not had: a run missing here is one Freight takes for
        # lost with an agent that restarted.
        running = {run.place: run.deploy_id for run in self._live_runs()}
        apps = []
        for entry in self.config.apps:
            version, error = read_version(entry, self.user)
            item: dict[str, Any] = {
                "app": entry.app,
                "env": entry.env,
                "version": version,
                "error": error,
                "deploy": entry.deploy is not None,
            }
            if (entry.app, entry.env) in running:
                item["running"] = running[(entry.app, entry.env)]
            apps.append(item)
        return {
            "name": self.config.name,
            "labels": dict(self.config.labels),
            "agentVersion": self.agent_version,
            "interval": self.config.interval,
            "apps": apps,
        }

    def check_in(self, *, wait: float) -> dict[str, Any]:
        body = {**self.report(), "wait": wait}
        answer = self.freight.post("/machines/checkin/", body, wait=wait)
        for refused in answer.get("refused", []):
            log.error("Freight refused %s: %s", refused.get("field"), refused.get("error"))
        self.act(answer)
        return answer

    def act(self, answer: dict[str, Any]) -> None:
        for deploy_id in answer.get("cancel", []):
            run = self.runs.get(int(deploy_id))
            if run is not None and not run.done.is_set():
                log.info("deploy %s: stopping, as Freight asked", deploy_id)
                run.cancel()
        for order in answer.get("orders", []):
            entry = self.config.entry(order["app"], order["env"])
            if entry is None or entry.deploy is None or int(order["deploy"]) in self.runs:
                continue
            if any(run.place == (entry.app, entry.env) for run in self._live_runs()):
                continue  # one command per app/environment at a time: the next look decides
            run = Run(self, entry, order)
            with self._lock:
                self.runs[run.deploy_id] = run
            doing = "catching up to" if order.get("catchUp") else "deploying"
            log.info("deploy %s: %s %s/%s at %s", run.deploy_id, doing, *run.place, order["sha"])
            run.start()

    def ran(self, run: Run) -> None:
        log.info("deploy %s: %s", run.deploy_id, run.outcome)
        self._news.set()

    def _live_runs(self) -> list[Run]:
        # A run is live until its end is reported, so that the next run of its app/environment
        # waits for that and a check-in names at most one run per app/environment.
        with self._lock:
            return [run for run in self.runs.values() if not run.settled.is_set()]

    def serve(self) -> None:
        """Check in until stopped; on the way out, stop the commands that run."""
        delay = BACKOFF_FIRST
        try:
            while not self.stopping.is_set():
                self._news.clear()
                started = time.monotonic()
                try:
                    self.check_in(wait=self.config.interval)
                    delay = BACKOFF_FIRST
                    self.last_error = None
                except Unavailable as exc:
                    self._failed(f"Freight is away: {exc}")
                    self.stopping.wait(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                except Refused as exc:
                    self._failed(f"Freight refused the check-in: {exc}")
                # Freight answers early when there is news; a check-in per interval otherwise.
                rest = self.config.interval - (time.monotonic() - started)
                if rest > 0 and not self._news.is_set():
                    self._wait_for_news(rest)
        finally:
            for run in self._live_runs():
                run.cancel()
            for run in list(self.runs.values()):
                run.thread.join()
            self.freight.close()

    def _wait_for_news(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and not self._news.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._news.wait(min(left, 0.5))

    def once(self) -> int:
        """One check-in (for cron): run what it orders to the end, then report again. The exit
        status: 0, or 1 when Freight could not be reached or a run failed."""
        try:
            self.check_in(wait=0)
            runs = list(self.runs.values())
            for run in runs:
                run.thread.join()
            if runs:
                self.check_in(wait=0)
        except (Unavailable, Refused) as exc:
            self._failed(str(exc))
            return 1
        finally:
            self.freight.close()
        return 0 if all(run.outcome and run.outcome[0] == "succeeded" for run in runs) else 1

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.warning("%s (retrying)", message)
        self.last_error = message
