"""What gates read: a suite's tidy tables and the instance stats of earlier suites."""

import dagster as dg
import pandas as pd

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.evaluation import load_suite_tables, read_frame
from governance_assets.lib.helm import tidy


def suite_tables(state: GovernanceState, suite: str) -> SuiteTables | None:
    """The suite's tables, or None when `helm/runs` was never built for it."""
    return load_suite_tables(state.warehouse(), suite)


def earlier_suites(instance: dg.DagsterInstance, state: GovernanceState, suite: str) -> list[str]:
    """The suites added before `suite` that have instance stats, most recent first."""
    suites = instance.get_dynamic_partitions(HELM_SUITES)
    earlier = suites[: suites.index(suite)] if suite in suites else suites
    warehouse = state.warehouse()
    return [name for name in reversed(earlier) if warehouse.path(tidy.INSTANCE_STATS.key, name).exists()]


def earlier_instance_stats(
    instance: dg.DagsterInstance, state: GovernanceState, suite: str
) -> list[tuple[str, pd.DataFrame]]:
    """Instance stats of the suites added before `suite` (most recent first), for baselines."""
    warehouse = state.warehouse()
    return [(name, read_frame(warehouse, tidy.INSTANCE_STATS, name)) for name in earlier_suites(instance, state, suite)]
