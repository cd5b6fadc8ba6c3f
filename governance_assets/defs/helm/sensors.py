"""Finding historical HELM suites under the output roots."""

import json

import dagster as dg

from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.helm.output import discover_suites


@dg.sensor(
    job_name="evaluate_suite",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Adds a helm_suites partition for each new suite found under HELM_OUTPUT_ROOTS and requests its "
        "ingestion (evaluate_suite) once: run key ingest:<suite>, the suites seen in the cursor."
    ),
)
def helm_suite_discovery(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SensorResult:
    """Adds a partition for each new suite under HELM_OUTPUT_ROOTS and asks for its ingestion once."""
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    discovery = discover_suites(state.historical_roots())
    for suite, problem in sorted(discovery.problems.items()):
        context.log.warning(f"suite {suite} skipped: {problem}")
    new = sorted(set(discovery.suites) - seen)
    if not new:
        return dg.SensorResult(skip_reason="no new suites", cursor=json.dumps(sorted(seen)))
    return dg.SensorResult(
        dynamic_partitions_requests=[helm_suites.build_add_request(new)],
        run_requests=[dg.RunRequest(partition_key=suite, run_key=f"ingest:{suite}") for suite in new],
        cursor=json.dumps(sorted(seen | set(new))),
    )
