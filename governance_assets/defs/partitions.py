"""Partitions shared across groups."""

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from governance_assets.defs.deployment.shared_state import suite_asset_hooks
from governance_assets.lib.core.code_version import source_digest

HELM_SUITES = "helm_suites"
helm_suites = dg.DynamicPartitionsDefinition(name=HELM_SUITES)
"""One partition per HELM suite (`v1`, `2026-11-27`, a historical release)."""

SUITE_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
"""Backfills run one run per suite: Dagster records a check's result for a partition only when
the run has a single partition key, and every gate must be recorded for the suite it judged.
A run over a partition range (`dagster asset materialize --partition-range`) still ingests many
suites in one process; its check results then summarise the whole range."""

TRAFFIC_DAYS_NAME = "traffic_days"
TRAFFIC_DAYS = dg.DynamicPartitionsDefinition(name=TRAFFIC_DAYS_NAME)
"""One partition per UTC day (`YYYY-MM-DD`) that has production traffic: the traffic sensor adds a
day when the first staged source touches it, so the partitions start at the first landed day and
have no empty days (traffic before the policy's `monitoring.start_date` is quarantined)."""

OWNERS = ["team:ml-governance"]


def defining_module() -> str:
    """The module that declares the asset being built: the first caller outside this module."""
    frame = sys._getframe(1)
    while frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    return str(frame.f_globals["__name__"])


def suite_asset(
    key: Sequence[str],
    *,
    kinds: set[str],
    deps: Iterable[dg.AssetKey | Sequence[str]] = (),
    description: str | None = None,
) -> dict[str, Any]:
    """The settings every suite-partitioned asset shares: key `[group, entity]` with the group
    named after its folder under defs/, the suite partitions, owners, kinds, and a code version
    that is a digest of the declaring module and every project module it reaches, so the UI
    shows an asset as stale when the code it runs changed; with a shared root, the hook that
    publishes what a step wrote (`defs.deployment.shared_state`)."""
    return {
        "key": dg.AssetKey(list(key)),
        "group_name": key[0],
        "partitions_def": helm_suites,
        "backfill_policy": SUITE_BACKFILL,
        "deps": [dep if isinstance(dep, dg.AssetKey) else dg.AssetKey(list(dep)) for dep in deps],
        "kinds": kinds,
        "owners": OWNERS,
        "code_version": source_digest(defining_module()),
        **({"description": description} if description else {}),
        **suite_asset_hooks(),
    }


def daily_asset(
    key: Sequence[str],
    *,
    kinds: set[str],
    deps: Iterable[dg.AssetKey | Sequence[str]] = (),
    description: str | None = None,
) -> dict[str, Any]:
    """Like `suite_asset`, for assets partitioned by UTC day of traffic (no suite state to publish)."""
    settings = suite_asset(key, kinds=kinds, deps=deps, description=description)
    return {name: value for name, value in settings.items() if name != "hooks"} | {
        "partitions_def": TRAFFIC_DAYS,
        "backfill_policy": dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    }
