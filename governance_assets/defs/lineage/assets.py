"""Lineage records of every HELM run, and the reproducibility report of a suite."""

import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.metadata import md_table, parquet_table_metadata
from governance_assets.defs.partitions import suite_asset
from governance_assets.defs.resources import GovernanceState, HelmRunner, MlflowTracking
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.core.policy import policy_source
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.helm import runner as helm_runner
from governance_assets.lib.helm import tidy
from governance_assets.lib.lineage import reproducibility
from governance_assets.lib.lineage.records import canonical_hash, run_lineage

RECORDS_KEY = ("lineage", "records")
REPRODUCIBILITY_KEY = ("lineage", "reproducibility")
HELM_ASSETS = [RUNS_KEY, *(dg.AssetKey(list(spec.key)) for spec in tidy.TIDY_TABLES)]


def _versions(context: dg.AssetExecutionContext, suite: str) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Code versions of the HELM assets and their latest data versions for the suite."""
    graph = context.job_def.asset_layer.asset_graph
    code = {key.to_user_string(): graph.get(key).code_version for key in HELM_ASSETS}
    data = {}
    for key in HELM_ASSETS:
        record = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[suite]), limit=1
        ).records
        materialization = record[0].asset_materialization if record else None
        data[key.to_user_string()] = materialization.tags.get("dagster/data_version") if materialization else None
    return code, data


@dg.asset(**suite_asset(RECORDS_KEY, kinds={"parquet", "json", "mlflow"}, deps=HELM_ASSETS))
def lineage_records(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Per HELM run: software, data and settings that produced it, with the ids that find it again."""
    policy = state.policy()
    evaluations = mlflow.recorder(state, policy.mlflow.evaluation_experiment)
    reports = mlflow.recorder(state, policy.mlflow.governance_experiment)
    policy_hash = canonical_hash(policy_source()[0])
    shown: list[dict[str, Any]] = []
    for suite in context.partition_keys:
        runs = state.warehouse().read(tidy.RUNS_KEY, suite)
        if runs is None:
            raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
        code_versions, data_versions = _versions(context, suite)
        mlflow_runs = evaluations.latest_by_run_name(suite)
        records, lineage_tags = [], {}
        for run in runs.to_pylist():
            if run["status"] != "complete":
                continue
            mlflow_run = mlflow_runs.get(run["run_name"])
            record = run_lineage(
                Path(run["path"]),
                {
                    "suite": suite,
                    "dagster_run_id": context.run.run_id,
                    "policy_hash": policy_hash,
                    "code_versions": code_versions,
                    "data_versions": data_versions,
                    "mlflow_run_id": mlflow_run.info.run_id if mlflow_run else "unknown",
                },
            )
            records.append(record)
            if mlflow_run is not None:
                lineage_tags[mlflow_run.info.run_id] = {
                    f"lineage.{k}": str(record[k])
                    for k in ("run_spec_hash", "instances_hash", "helm_version", "git_commit")
                }
        evaluations.set_tags(lineage_tags)
        document = json.dumps({"suite": suite, "runs": records}, indent=2, default=str)
        write_text_atomic(state.home_path() / "lineage" / f"{suite}.json", document)
        log_report(
            reports,
            f"{suite}/lineage",
            {
                "governance.suite": suite,
                "dagster.run_id": context.run.run_id,
                "dagster.asset_key": "lineage/records",
                "dagster.partition": suite,
            },
            {"runs_recorded": len(records), "runs_with_unknowns": sum(bool(r["unknown_fields"]) for r in records)},
            {f"lineage-{suite}.json": document},
        )
        table = pd.DataFrame(
            [
                {k: json.dumps(v, default=str) if isinstance(v, dict | list) else v for k, v in r.items()}
                for r in records
            ]
        )
        state.warehouse().write(RECORDS_KEY, suite, pa.Table.from_pandas(table.astype(str), preserve_index=False))
        shown += [
            {"suite": suite, "run_name": r["run_name"], "helm": r["helm_version"], "git": str(r["git_commit"])[:10],
             "unknown": ", ".join(r["unknown_fields"]) or "-"}
            for r in records
        ]  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "runs": len(shown),
            "runs_with_unknowns": sum(row["unknown"] != "-" for row in shown),
            "records": dg.MetadataValue.md(md_table(shown, ["suite", "run_name", "helm", "git", "unknown"])),
            "document": dg.MetadataValue.path(
                str(state.home_path() / "lineage" / f"{context.partition_keys[-1]}.json")
            ),
            **parquet_table_metadata([state.warehouse().path(RECORDS_KEY, suite) for suite in context.partition_keys]),
        }
    )


@dg.asset(**suite_asset(REPRODUCIBILITY_KEY, kinds={"helm", "html", "mlflow"}, deps=[RECORDS_KEY]))
def lineage_reproducibility(
    context: dg.AssetExecutionContext, state: GovernanceState, helm: HelmRunner, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Re-creates the suite's prompts (HELM dry run) and re-runs a sample with caching off."""
    policy = state.policy()
    recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
    counts = {"reproduced": 0, "differs": 0, "cannot be checked": 0}
    for suite in context.partition_keys:
        runs = state.warehouse().read(tidy.RUNS_KEY, suite)
        if runs is None:
            raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
        folders = {r["run_name"]: Path(r["path"]) for r in runs.to_pylist() if r["status"] == "complete"}
        with tempfile.TemporaryDirectory(dir=state.home_path()) as scratch_root:

            def scratch(label: str, dry_run: bool, max_eval_instances: int) -> helm_runner.HelmSettings:
                return helm_runner.HelmSettings(
                    output_path=Path(scratch_root) / label / "benchmark_output",
                    local_path=state.helm_local_path(),
                    max_eval_instances=max_eval_instances,
                    num_threads=helm.num_threads,
                    plugins=tuple(helm.plugins),
                    dry_run=dry_run,
                    disable_cache=not dry_run,
                )

            sample = sorted(folders)[: policy.reproducibility.sample_runs]
            results = reproducibility.reproduce_suite(
                folders,
                sample,
                scratch,
                helm.local_deployments(state),
                policy.reproducibility.tolerance,
                context.log.debug,
            )
        markdown = reproducibility.render_markdown(suite, results)
        report_dir = state.home_path() / "reports"
        write_text_atomic(report_dir / f"reproducibility-{suite}.md", markdown)
        write_text_atomic(report_dir / f"reproducibility-{suite}.html", reproducibility.render_html(suite, results))
        rows = [r.__dict__ | {"details": r.details} for r in results]
        state.warehouse().write(
            REPRODUCIBILITY_KEY, suite, pa.Table.from_pylist([r | {"details": list(r["details"])} for r in rows])
        )
        for r in results:
            counts[r.status] += 1
        run_id = log_report(
            recorder,
            f"{suite}/reproducibility",
            {"governance.suite": suite, "dagster.run_id": context.run.run_id,
             "dagster.asset_key": "lineage/reproducibility", "dagster.partition": suite},
            {"runs_reproduced": counts["reproduced"], "runs_differing": counts["differs"],
             "runs_not_checkable": counts["cannot be checked"]},
            {f"reproducibility-{suite}.md": markdown},
        )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "runs_reproduced": counts["reproduced"],
            "runs_differing": counts["differs"],
            "runs_not_checkable": counts["cannot be checked"],
            "report": dg.MetadataValue.md(markdown),
            "report_html": dg.MetadataValue.path(str(report_dir / f"reproducibility-{suite}.html")),
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id)),
            **parquet_table_metadata([state.warehouse().path(REPRODUCIBILITY_KEY, s) for s in context.partition_keys]),
        }
    )
