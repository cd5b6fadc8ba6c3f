"""HELM suites as assets: the run folders, and the tidy tables read from them."""

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from governance_assets.defs.metadata import md_table, parquet_table_metadata
from governance_assets.defs.partitions import suite_asset
from governance_assets.defs.resources import GovernanceState, HelmRunner, MlflowTracking
from governance_assets.lib.compliance import pii
from governance_assets.lib.core.mlflow_record import evaluation_runs, experiment_url, run_url
from governance_assets.lib.core.storage import UnsafePathError, safe_component
from governance_assets.lib.helm import runner as helm_runner
from governance_assets.lib.helm import tidy

RUNS_KEY = dg.AssetKey(list(tidy.RUNS_KEY))
PLANNED_SUITE_TAGS = {"governance/suite": "planned"}
"""Run tags of the runs that create a suite (the schedule, the demo, a sweep): only such a suite,
or one the platform created before, runs the evaluation plan with helm-run."""


def _suite_name(suite: str) -> str:
    try:
        return safe_component(suite, "suite partition key")
    except UnsafePathError as error:
        raise dg.Failure(description=str(error)) from error


def _catalogue_suite(
    context: dg.AssetExecutionContext, suite: str, state: GovernanceState, helm: HelmRunner
) -> pa.Table:
    """Verify a historical suite, or run the evaluation plan into a planned one."""
    discovery = state.discover()
    previous = state.warehouse().read_cached(tidy.RUNS_KEY, suite)
    if suite in discovery.problems:
        raise dg.Failure(description=discovery.problems[suite])
    location = discovery.suites.get(suite)
    own_dir = state.own_suite_dir(suite)
    if location is not None and location.root != state.helm_output_path():
        context.log.info(f"suite {suite}: historical, verifying {location.path} (never written to)")
        catalogue = tidy.catalogue_runs(suite, location.path, previous)
    else:
        ingested_from = _historical_folder(previous, own_dir)
        if ingested_from is not None:
            raise dg.Failure(description=_not_found(suite, state, f"it was ingested from {ingested_from}"))
        if not helm_runner.is_planned(own_dir):
            if not PLANNED_SUITE_TAGS.items() <= context.run.tags.items():
                raise dg.Failure(description=_not_found(suite, state, "not created by this platform"))
            helm_runner.mark_planned(own_dir)
        plan = state.policy().evaluation_plan
        entries = plan.run_entries_with_models()
        context.log.info(f"suite {suite}: planned, {len(entries)} run entries")
        loading = threading.Thread(target=_load_later_steps_libraries, name="load-libraries", daemon=True)
        loading.start()
        outcomes = helm.run(entries, suite, state, plan.max_eval_instances, context.log.debug)
        loading.join()  # done before the steps that use them start (none loads them twice)
        failures = [(o.run_name, o.entry, o.error or "") for o in outcomes if o.status == "failed"]
        for *_, error in failures:
            context.log.error(error)
        catalogue = tidy.catalogue_runs(suite, state.own_suite_dir(suite), previous)
        catalogue = tidy.RunCatalogue(
            tidy.mark_failed_runs(catalogue.table, failures),
            catalogue.listed_but_missing,
            catalogue.suite_errors,
        )
    for problem in catalogue.suite_errors:
        context.log.error(problem)
    complete = pc.sum(pc.equal(catalogue.table["status"], "complete")).as_py() or 0
    if complete == 0:
        reasons = catalogue.suite_errors + [e for e in catalogue.table["error"].to_pylist() if e]
        raise dg.Failure(
            description=f"suite {suite}: no complete HELM run to ingest",
            metadata={"reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons) or "none")},
        )
    tidy.write_catalogue(state.warehouse(), suite, catalogue, previous)
    return catalogue.table


def _load_later_steps_libraries() -> None:
    """Load what later steps of the job use and the code location does not import (Great
    Expectations for the data-quality gate, Presidio for the PII screen: 3-6 s), while this process
    only waits for helm-run: on a free core the load then costs the job no time."""
    import great_expectations  # noqa: F401

    pii.scan("-")  # builds the screen's analyzer, once per process


def _historical_folder(previous: pa.Table | None, own_dir: Path) -> str | None:
    """The folder a suite's last catalogue read it from, if that is not the platform's own."""
    paths = previous["path"].drop_null().to_pylist() if previous is not None else []  # null: HELM made no folder
    folders = {str(Path(path).parent) for path in paths}
    return next((folder for folder in sorted(folders) if not Path(folder).is_relative_to(own_dir)), None)


def _not_found(suite: str, state: GovernanceState, why: str) -> str:
    """Why a suite in no output root is not run: `why` it is not one the platform evaluates."""
    roots = [state.helm_output_path(), *state.historical_roots()]
    missing = [str(root) for root in roots if not root.is_dir()]
    return (
        f"suite {suite}: found in no HELM output root, and {why} (only suites created by the schedule, "
        f"the demo or a sweep run helm-run), so helm-run is not started. Searched: {', '.join(map(str, roots))}"
        + (f". Missing (not mounted?): {', '.join(missing)}" if missing else "")
        + ". Set HELM_OUTPUT_ROOTS to the folder that holds runs/<suite>/."
    )


@dg.asset(**suite_asset(tidy.RUNS_KEY, kinds={"helm", "parquet"}))
def helm_runs(context: dg.AssetExecutionContext, state: GovernanceState, helm: HelmRunner) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The suite's HELM run folders: runs HELM for a planned suite, verifies a historical one."""
    rows: list[dict[str, Any]] = []
    versions = []
    for suite in context.partition_keys:
        table = _catalogue_suite(context, _suite_name(suite), state, helm)
        rows += table.select(["suite", "run_name", "status", "model", "error"]).to_pylist()
        versions.append(tidy.data_version(table))
    statuses = [row["status"] for row in rows]
    return dg.MaterializeResult(
        data_version=_combined(versions),
        metadata={
            "runs_complete": statuses.count("complete"),
            "runs_incomplete": statuses.count("incomplete"),
            "runs_failed": statuses.count("failed") + statuses.count("invalid"),
            "runs": dg.MetadataValue.md(md_table(rows, ["suite", "run_name", "status", "model", "error"])),
            **parquet_table_metadata(
                [state.warehouse().path(tidy.RUNS_KEY, suite) for suite in context.partition_keys]
            ),
        },
    )


def _combined(versions: list[str]) -> dg.DataVersion:
    """The data version of a run's suites (one suite in the usual single-partition run)."""
    return dg.DataVersion(versions[0] if len(versions) == 1 else tidy.content_hash(versions)[:32])


def _refresh(
    context: dg.AssetExecutionContext, state: GovernanceState, spec: tidy.TidyTable
) -> tuple[dict[str, Any], dg.DataVersion]:
    """Rebuild `spec`'s table for every suite of the run; return the metadata and data version."""
    warehouse = state.warehouse()
    versions = []
    totals = {"rows": 0, "runs_parsed": 0, "runs_reused": 0, "runs_unreadable": 0}
    errors: list[dict[str, str]] = []
    for suite in context.partition_keys:
        runs = warehouse.read(tidy.RUNS_KEY, _suite_name(suite))
        if runs is None:
            raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
        build = tidy.refresh_table(spec, suite, warehouse, runs)
        versions.append(tidy.data_version(runs, spec, build.digests, build.errors))
        totals["rows"] += build.rows
        totals["runs_parsed"] += len(build.parsed)
        totals["runs_reused"] += len(build.reused)
        totals["runs_unreadable"] += len(build.errors)
        for run_name, error in build.errors.items():
            context.log.error(error)
            errors.append({"suite": suite, "run_name": run_name, "error": error})
    metadata: dict[str, Any] = dict(totals)
    metadata["path"] = dg.MetadataValue.path(str(warehouse.path(spec.key, context.partition_keys[0])))
    metadata.update(parquet_table_metadata([warehouse.path(spec.key, suite) for suite in context.partition_keys]))
    if errors:
        metadata["unreadable_runs"] = dg.MetadataValue.md(md_table(errors, ["suite", "run_name", "error"]))
    return metadata, _combined(versions)


@dg.asset(
    **suite_asset(
        tidy.RUN_STATS.key,
        kinds={"helm", "parquet"},
        deps=[RUNS_KEY],
        description="Run-level HELM stats, one row per run × stat, recorded in MLflow.",
    )
)
def helm_run_stats(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    metadata, version = _refresh(context, state, tidy.RUN_STATS)
    metadata.update(_record_in_mlflow(context, state, mlflow))
    return dg.MaterializeResult(metadata=metadata, data_version=version)


@dg.asset(
    **suite_asset(
        tidy.INSTANCE_STATS.key,
        kinds={"helm", "parquet"},
        deps=[RUNS_KEY],
        description="Per-instance HELM stats, one row per run × instance × stat.",
    )
)
def helm_instance_stats(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    metadata, version = _refresh(context, state, tidy.INSTANCE_STATS)
    return dg.MaterializeResult(metadata=metadata, data_version=version)


@dg.asset(
    **suite_asset(
        tidy.PREDICTIONS.key,
        kinds={"helm", "parquet"},
        deps=[RUNS_KEY],
        description="Prompts, completions and references per instance (scenario_state).",
    )
)
def helm_predictions(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    metadata, version = _refresh(context, state, tidy.PREDICTIONS)
    return dg.MaterializeResult(metadata=metadata, data_version=version)


def _record_in_mlflow(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dict[str, Any]:
    recorder = mlflow.recorder(state, state.policy().mlflow.evaluation_experiment)
    warehouse = state.warehouse()
    links, created = [], 0
    for suite in context.partition_keys:
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": "helm/run_stats",
            "dagster.partition": suite,
        }
        run_stats, runs = (
            warehouse.read(tidy.RUN_STATS.key, suite),
            warehouse.read(tidy.RUNS_KEY, suite),
        )
        assert run_stats is not None and runs is not None
        recorded = recorder.record(evaluation_runs(run_stats, runs, tags))
        for run_name, record in recorded.items():
            created += record.created
            url = run_url(mlflow.ui_url, recorder.experiment_id, record.run_id)
            links.append(
                {
                    "suite": suite,
                    "run_name": run_name,
                    "mlflow_run": f"[{record.run_id}]({url})",
                    "new": "yes" if record.created else "unchanged",
                }
            )
    return {
        "mlflow_runs_created": created,
        "mlflow_experiment": dg.MetadataValue.url(experiment_url(mlflow.ui_url, recorder.experiment_id)),
        "mlflow_runs": dg.MetadataValue.md(md_table(links, ["suite", "run_name", "mlflow_run", "new"])),
    }
