"""What gates read: a suite's tidy tables and the instance stats of earlier suites."""

import dagster as dg
import pandas as pd

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib import tidy
from governance_assets.lib.gates import SuiteTables


def suite_tables(state: GovernanceState, suite: str) -> SuiteTables | None:
    """The suite's tables, or None when `helm/runs` was never built for it."""
    warehouse = state.warehouse()
    runs = warehouse.read(tidy.RUNS_KEY, suite)
    if runs is None:
        return None

    def read(spec: tidy.TidyTable) -> pd.DataFrame:
        table = warehouse.read(spec.key, suite)
        frame: pd.DataFrame = (table if table is not None else spec.schema.empty_table()).to_pandas()
        return frame

    return SuiteTables(runs.to_pandas(), read(tidy.RUN_STATS), read(tidy.INSTANCE_STATS), read(tidy.PREDICTIONS))


def earlier_instance_stats(
    instance: dg.DagsterInstance, state: GovernanceState, suite: str
) -> list[tuple[str, pd.DataFrame]]:
    """Instance stats of the suites added before `suite` (most recent first), for baselines."""
    suites = instance.get_dynamic_partitions(HELM_SUITES)
    earlier = suites[: suites.index(suite)] if suite in suites else suites
    warehouse = state.warehouse()
    found = []
    for name in reversed(earlier):
        table = warehouse.read(tidy.INSTANCE_STATS.key, name)
        if table is not None:
            found.append((name, table.to_pandas()))
    return found
