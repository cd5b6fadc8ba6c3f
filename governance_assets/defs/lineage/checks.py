"""A deterministic HELM run that does not reproduce is an error."""

import dagster as dg
import pyarrow.compute as pc

from governance_assets.defs.judgement import Judgement, judge_partitions
from governance_assets.defs.lineage.assets import REPRODUCIBILITY_KEY
from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import GovernanceState


@dg.asset_check(
    asset=dg.AssetKey(list(REPRODUCIBILITY_KEY)),
    partitions_def=helm_suites,
    description="Every greedy (temperature 0) run that could be re-created reproduced exactly.",
)
def deterministic_runs_reproduce(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    def judge(suite: str) -> Judgement:
        table = state.warehouse().read(REPRODUCIBILITY_KEY, suite)
        if table is None:
            return Judgement("no data", None, 0, "lineage/reproducibility was never built for this suite")
        deterministic = table.filter(pc.equal(table["deterministic"], True))
        checked = deterministic.filter(pc.not_equal(deterministic["status"], "cannot be checked"))
        differing = checked.filter(pc.equal(checked["status"], "differs")).select(["run_name", "details"]).to_pylist()
        if checked.num_rows == 0:
            return Judgement("no data", 0, 0, "no deterministic run could be re-created here")
        return Judgement(
            "fail" if differing else "pass", len(differing), 0, differing, metadata={"checked": checked.num_rows}
        )

    return judge_partitions(context, judge)
