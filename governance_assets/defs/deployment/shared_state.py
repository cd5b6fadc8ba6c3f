"""The hooks that publish, after each step of a suite asset that succeeded, what the step wrote
into its suite's state to the shared root (GOVERNANCE_SHARED_ROOT), and never what a failed step
wrote: `GovernanceState` pulled the suite's state before the run's steps, these hooks are the
other half."""

from typing import Any

import dagster as dg

from governance_assets.lib.deployment.shared_root import shared_root_configured


@dg.success_hook(required_resource_keys={"state"})
def publish_suite_state(context: dg.HookContext) -> None:
    """After a step succeeded: the files it wrote into its suite's state, to the shared root."""
    published = context.resources.state.publish_written()
    if published:
        context.log.info(f"{len(published)} file(s) published to the shared root")


@dg.failure_hook(required_resource_keys={"state"})
def keep_failed_writes_local(context: dg.HookContext) -> None:
    """After a step failed: what it wrote stays local (the next step publishes only its own)."""
    context.resources.state.pass_over_written()


def suite_asset_hooks() -> dict[str, Any]:
    """The hooks of a suite asset (`defs.partitions.suite_asset`) when the code location loads with
    a shared root; none otherwise (the embedded default runs no hook at all)."""
    return {"hooks": {publish_suite_state, keep_failed_writes_local}} if shared_root_configured() else {}
