"""Partitions shared across groups."""

import dagster as dg

HELM_SUITES = "helm_suites"
helm_suites = dg.DynamicPartitionsDefinition(name=HELM_SUITES)
"""One partition per HELM suite (`v1`, `2026-11-27`, a historical release)."""

SUITE_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
"""Backfills run one run per suite: Dagster records a check's result for a partition only when
the run has a single partition key, and every gate must be recorded for the suite it judged.
A run over a partition range (`dagster asset materialize --partition-range`) still ingests many
suites in one process; its check results then summarise the whole range."""

OWNERS = ["team:ml-governance"]
