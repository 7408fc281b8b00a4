"""The seven steps of a deploy, each a plain function of its run context. The deploy flow
(flows/deploy.py) runs them in order as Prefect tasks; tests call them directly."""

from __future__ import annotations

import shutil
from contextlib import suppress

from freight import providers, secrets, vcs
from freight.checks import CheckContext
from freight.errors import ClaimLost, CommandFailed, DeployTimeout, VerifyFailed
from freight.execution import gating, verification
from freight.execution.context import RunContext
from freight.providers import DeployContext, ProviderRuntime
from freight.providers.shell import ShellConfig


def check_lock(ctx: RunContext) -> None:
    """Refuse the deploy if someone else's lock, a freeze or a closed deploy window stands in
    its way now (unless forced with a reason)."""
    ctx.raise_if_cancelled()
    overridden = ctx.record.check_lock()
    if overridden:
        ctx.output(f">> Forced past: {overridden}. Reason: {ctx.force_reason}")


def check_github_status(ctx: RunContext) -> None:
    """Wait for the app's checks to pass on the sha (`force` skips them)."""
    ctx.raise_if_cancelled()
    if not ctx.config.checks:
        return
    if ctx.force:
        ctx.output(">> Checks skipped: deploy forced")
        return
    configs, found = secrets.resolve_all(ctx.config.checks, ctx.secrets)
    ctx.output.mask(found)
    gating.wait_for_checks(
        configs,
        CheckContext(
            app=ctx.app,
            environment=ctx.environment,
            sha=ctx.sha,
            output=ctx.output,
            client=ctx.http,
            urls=ctx.urls,
            repository=ctx.repository,
        ),
        timeout=ctx.limits.check_timeout,
        wait=ctx.cancel.wait,
    )


def prepare_workspace(ctx: RunContext) -> None:
    """A fresh checkout of the sha, from the repository's mirror."""
    ctx.raise_if_cancelled()
    ctx.record.set_workspace(ctx.workspace)
    mirror = vcs.mirror_with(ctx.workspace_root, ctx.repository, ctx.sha, access=ctx.git)
    vcs.add_worktree(mirror, ctx.sha, ctx.workspace)
    shutil.rmtree(ctx.temp_dir, ignore_errors=True)  # a crashed run's, of a reused id
    ctx.temp_dir.mkdir(parents=True, mode=0o700)
    ctx.output(f">> Checked out {ctx.sha} into {ctx.workspace}")
    if ctx.run_as is not None:
        ctx.run_as.give(ctx.workspace)
        ctx.run_as.give(ctx.temp_dir)
        ctx.output(f">> The command runs as {ctx.run_as.name}")
    else:
        ctx.output(f">> WARNING: {ctx.exposed}")


def run_provider(ctx: RunContext) -> None:
    """Deploy: the provider's command, SSH session or build, its output streamed to the log."""
    ctx.raise_if_cancelled()
    config, found = secrets.resolve_config(ctx.config.provider, ctx.secrets)
    ctx.output.mask(found)
    providers.registry.get(config.type).run(config, _deploy_context(ctx), _runtime(ctx))


def verify(ctx: RunContext) -> None:
    """Check that the deploy took: the environment's `verify` (an HTTP endpoint, or a command
    run as the provider's are). When it fails with `on_failure: rollback`, what was live goes
    back at the front of the queue and the environment is locked until someone looks."""
    spec = ctx.config.verify
    if spec is None:
        return
    ctx.raise_if_cancelled()
    try:
        if spec.http is not None:
            verification.check_http(spec, ctx.http, ctx.output, ctx.cancel.wait)
        else:
            assert spec.command is not None
            ctx.output(">> Verify:")
            shell = providers.registry.get("shell")
            shell.run(ShellConfig(command=spec.command), _deploy_context(ctx), _runtime(ctx))
    except (VerifyFailed, CommandFailed, DeployTimeout) as exc:
        failure = f"Verify failed: {exc.message}"
        if spec.on_failure == "rollback":
            reason = f"rolled back automatically from {ctx.sha[:7]}: {failure}"
            back = ctx.record.roll_back(reason, ctx.output)
            ctx.output(
                f">> Rolling back: {back} is next, and {ctx.app}/{ctx.environment} is locked"
                if back
                else ">> No automatic rollback: nothing was live before, or this was one"
            )
        raise VerifyFailed(failure) from None
    ctx.output(">> Verified")


def _deploy_context(ctx: RunContext) -> DeployContext:
    return DeployContext(
        deploy_id=ctx.deploy_id,
        app=ctx.app,
        environment=ctx.environment,
        number=ctx.number,
        ref=ctx.ref,
        sha=ctx.sha,
        prev_sha=ctx.prev_sha,
        user=ctx.user,
        workspace=ctx.workspace,
        params=ctx.params,
    )


def _runtime(ctx: RunContext) -> ProviderRuntime:
    return ProviderRuntime(
        output=ctx.output,
        should_cancel=ctx.cancel.is_set,
        timeout=ctx.limits.deploy_timeout,
        read_timeout=ctx.limits.read_timeout,
        grace=ctx.limits.cancel_grace,
        base_env=ctx.base_env,
        run_as=ctx.run_as,
        temp_dir=ctx.temp_dir,
        on_start=ctx.record.set_process_group,
        client=ctx.http,
        urls=ctx.urls,
        fleet=ctx.record.fleet(),
    )


def cleanup_workspace(ctx: RunContext) -> None:
    """Remove the checkout and the command's temporary files: always, also after a failure, a
    cancel or a lost claim."""
    shutil.rmtree(ctx.temp_dir, ignore_errors=True)
    if not ctx.workspace.exists():
        return
    vcs.remove_worktree(vcs.mirror_path(ctx.workspace_root, ctx.repository), ctx.workspace)
    with suppress(ClaimLost):  # reaped meanwhile: the checkout is gone all the same
        ctx.record.set_workspace(None)
    ctx.output(">> Workspace removed")


def notify(ctx: RunContext) -> list[str]:
    """Tell the notifiers what happened since they were last told (each event once)."""
    return ctx.record.send_notices(ctx.output)
