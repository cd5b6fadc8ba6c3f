"""Partitions shared across groups."""

import dagster as dg

HELM_SUITES = "helm_suites"
helm_suites = dg.DynamicPartitionsDefinition(name=HELM_SUITES)
"""One partition per HELM suite (`v1`, `2026-11-27`, a historical release)."""

SUITE_BACKFILL = dg.BackfillPolicy.single_run()
"""Suite assets ingest many suites in one run when backfilled."""

OWNERS = ["team:ml-governance"]
