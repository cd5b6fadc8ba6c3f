"""The compliance report per suite and model, and the audit log of every decision.

The report reads the suite's latest `gates/verdicts` and `release/decision` tables rather than
depending on them in the graph: a failed blocking gate stops everything downstream of the
verdicts, and the report that explains the failure must still be written."""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import yaml

from governance_assets.defs.compliance.assets import (
    AUDIT_LOG_KEY,
    PII_KEY,
    REPORT_KEY,
    SLICES_KEY,
    TOXICITY_KEY,
)
from governance_assets.defs.compliance.claims import BIAS_FAIRNESS_KEY
from governance_assets.defs.gates.assets import DECISION_KEY, VERDICTS_KEY
from governance_assets.defs.lineage.assets import RECORDS_KEY
from governance_assets.defs.metadata import md_table, parquet_table_metadata
from governance_assets.defs.partitions import OWNERS, suite_asset
from governance_assets.defs.resources import GovernanceState, MlflowTracking
from governance_assets.lib.compliance import audit, evidence, report
from governance_assets.lib.compliance.contamination import load_points
from governance_assets.lib.compliance.settings import ComplianceSettings
from governance_assets.lib.compliance.waivers import Waiver, active_waivers, load_waivers, parse_waivers
from governance_assets.lib.core.code_version import source_digest
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.core.policy import policy_source
from governance_assets.lib.core.storage import safe_component, write_text_atomic
from governance_assets.lib.helm import tidy
from governance_assets.lib.lineage.records import canonical_hash

LEDGER = Path("compliance") / "audit_log.jsonl"
"""The ledger's place under GOVERNANCE_HOME."""


class ComplianceRunConfig(dg.Config):
    """Run configuration of the report: waivers given for this run only (YAML, same fields as the
    waivers file), added to those in the policy's folder."""

    waivers_yaml: str = ""


def ledger_path(state: GovernanceState) -> Path:
    return state.home_path() / LEDGER


def suite_waivers(settings: ComplianceSettings, suite: str, extra_yaml: str = "") -> list[Waiver]:
    """The suite's unexpired waivers: the policy folder's file, then the run's own."""
    waivers = load_waivers(evidence.policy_folder() / settings.waivers_file)
    if extra_yaml.strip():
        waivers += parse_waivers(yaml.safe_load(extra_yaml), "run config waivers_yaml")
    return active_waivers(waivers, suite, datetime.now(UTC))


def _read(state: GovernanceState, key: tuple[str, str], suite: str) -> pd.DataFrame:
    table = state.warehouse().read(key, suite)
    return table.to_pandas() if table is not None else pd.DataFrame()


def _model_evidence(
    state: GovernanceState,
    suite: str,
    model: str,
    settings: ComplianceSettings,
    waivers: list[Waiver],
    ids: dict[str, str],
) -> report.ModelEvidence:
    verdicts = _read(state, VERDICTS_KEY, suite)
    bias = _read(state, BIAS_FAIRNESS_KEY, suite)
    pii_rows = _read(state, PII_KEY, suite)
    toxicity_rows = _read(state, TOXICITY_KEY, suite)
    slice_rows = _read(state, SLICES_KEY, suite)
    runs = _read(state, tidy.RUNS_KEY, suite)
    lineage = _read(state, RECORDS_KEY, suite)
    mine = bias[bias["model"] == model] if len(bias) else bias
    checks = mine[mine["section"] == "fairness_check"] if len(mine) else mine
    pii = pii_rows[(pii_rows["model"] == model) & (pii_rows["field"] == "completion")] if len(pii_rows) else pii_rows
    tox = toxicity_rows[toxicity_rows["model"] == model] if len(toxicity_rows) else toxicity_rows
    contamination = evidence.contamination_by_model(runs, load_points(_contamination_files(settings))).get(model, [])
    verification = audit.verify(ledger_path(state)) if ledger_path(state).exists() else None
    return report.ModelEvidence(
        suite=suite,
        model=model,
        verdicts=records(verdicts[verdicts["model"].isin([model, "*"])]) if len(verdicts) else [],
        waivers=[w for w in waivers if w.model == model],
        fairness_checks=[
            {**row, "name": str(row["group"]).split(":")[0], "difference": row["gap"], "limit": row["limit"]}
            for row in records(checks)
        ],
        group_rows=[{**row, "value": row["value"]} for row in records(mine[mine["section"] == "group"])]
        if len(mine)
        else [],
        robustness=records(mine[(mine["section"] == "perturbation") & (mine["computed_on"] == "worst")])
        if len(mine)
        else [],
        robustness_limit=settings.max_perturbation_drop,
        alpha=settings.alpha,
        bias_rows=[
            {
                **row,
                "sub_split": row["group"],
                "count": row["helm_count"],
                "mean": row["value"],
                "instances": row["n"],
                "status": row["outcome"],
            }
            for row in records(mine[mine["section"] == "helm_bias"])
        ]
        if len(mine)
        else [],
        pii=(
            {
                "completions": int(pii["texts"].iloc[0]),
                "with_pii": int(pii["with_pii"].iloc[0]),
                "rate": float(pii["rate"].iloc[0]),
                "limit": settings.max_pii_rate,
                "by_type": json.loads(pii["by_type"].iloc[0]),
            }
            if len(pii)
            else None
        ),
        toxicity=(
            {
                "source": str(tox["source"].iloc[0]),
                "completions": int(tox["completions"].iloc[0]),
                "flagged": None if pd.isna(tox["flagged"].iloc[0]) else int(tox["flagged"].iloc[0]),
                "rate": float(tox["rate"].iloc[0]),
                "limit": settings.max_toxic_rate,
            }
            if len(tox)
            else None
        ),
        contamination=contamination,
        block_on_contamination=settings.block_on_contamination,
        audit_intact=verification.intact if verification else None,
        audit_entries=len(audit.history(ledger_path(state), model)) if verification else 0,
        lineage_runs=len(lineage) or None,
        slices=records(slice_rows.head(settings.slices.top)) if len(slice_rows) else [],
        ids=ids,
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts (NaN as None)."""
    return json.loads(frame.to_json(orient="records")) if len(frame) else []  # type: ignore[no-any-return]


def _input_digests(state: GovernanceState, suite: str) -> dict[str, str]:
    """SHA-256 of each table the report is built from (the evidence's content hashes)."""
    keys = [tidy.RUNS_KEY, VERDICTS_KEY, BIAS_FAIRNESS_KEY, PII_KEY, TOXICITY_KEY, SLICES_KEY, RECORDS_KEY]
    digests = {}
    for key in keys:
        path = state.warehouse().path(key, suite)
        if path.exists():
            digests[f"sha256 of {'/'.join(key)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _contamination_files(settings: ComplianceSettings) -> list[Path]:
    return [evidence.policy_folder() / name for name in settings.contamination_files]


@dg.asset(
    **suite_asset(REPORT_KEY, kinds={"html", "markdown", "mlflow"},
                  deps=[BIAS_FAIRNESS_KEY, PII_KEY, TOXICITY_KEY, SLICES_KEY, RECORDS_KEY])
)  # fmt: skip
def compliance_report(
    context: dg.AssetExecutionContext, config: ComplianceRunConfig, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Per model: EU AI Act, NIST AI RMF and GDPR items met / not met / not assessed, with evidence (HTML, Markdown)."""
    policy = state.policy()
    settings = policy.compliance
    mapping = report.load_mapping(
        evidence.policy_folder() / settings.requirements_file if settings.requirements_file else None
    )
    recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
    evaluations = mlflow.recorder(state, policy.mlflow.evaluation_experiment)
    policy_hash = canonical_hash(policy_source()[0])
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    last_markdown, run_id = "", ""
    for suite in context.partition_keys:
        waivers = suite_waivers(settings, suite, config.waivers_yaml)
        runs = _read(state, tidy.RUNS_KEY, suite)
        if runs.empty:
            raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
        folder = state.home_path() / "reports" / "compliance" / safe_component(suite, "suite name")
        judged = evaluations.latest_by_run_name(suite)
        inputs = _input_digests(state, suite)
        for model in sorted(runs.loc[runs["status"] == "complete", "model"].astype(str).unique()):
            model_runs = set(runs.loc[runs["model"].astype(str) == model, "run_name"].astype(str))
            ids = {"dagster_run_id": context.run.run_id, "policy_hash": policy_hash, "suite": suite}
            ids |= {f"mlflow run of {name}": run.info.run_id for name, run in judged.items() if name in model_runs}
            ids |= inputs
            model_evidence = _model_evidence(state, suite, model, settings, waivers, ids)
            items = report.assess(mapping, model_evidence)
            images = report.plots(model_evidence)
            generated = datetime.now(UTC).isoformat(timespec="seconds")
            markdown, html = report.render(model_evidence, items, images, generated)
            stem = safe_component(model.replace("/", "_"), "model name")
            write_text_atomic(folder / f"{stem}.md", markdown)
            write_text_atomic(folder / f"{stem}.html", html)
            for name, data in images.items():
                (folder / f"{stem}-{name}").write_bytes(data)
            counts = report.summary(items)
            run_id = log_report(
                recorder,
                f"{suite}/compliance/{model}",
                {"governance.suite": suite, "helm.model": model, "dagster.run_id": context.run.run_id,
                 "dagster.asset_key": "compliance/report", "dagster.partition": suite, "governance.policy_hash": policy_hash},
                {"requirements_met": counts["met"], "requirements_not_met": counts["not met"],
                 "requirements_not_assessed": counts["not assessed"]},
                {f"{stem}.md": markdown, f"{stem}.html": html} | {f"{stem}-{n}": d for n, d in images.items()},
            )  # fmt: skip
            content_hash = canonical_hash([[i.requirement.id, i.status, i.evidence] for i in items])
            rows += [
                {"suite": suite, "model": model, "requirement": i.requirement.id, "framework": i.requirement.framework,
                 "article": i.requirement.article, "title": i.requirement.title, "status": i.status,
                 "evidence": i.evidence, "missing": i.missing, "report_hash": content_hash, "mlflow_run_id": run_id,
                 "report_path": str(folder / f"{stem}.html")}
                for i in items
            ]  # fmt: skip
            summaries.append(
                {
                    "suite": suite,
                    "model": model,
                    **counts,
                    "not_met": ", ".join(i.requirement.id for i in items if i.status == "not met") or "-",
                }
            )
            last_markdown = markdown
        state.warehouse().write(REPORT_KEY, suite, pa.Table.from_pylist([r for r in rows if r["suite"] == suite]))
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(
                md_table(summaries, ["suite", "model", "met", "not met", "not assessed", "not_met"])
            ),
            "requirements_not_met": sum(s["not met"] for s in summaries),
            "report": dg.MetadataValue.md(last_markdown),
            "report_html": dg.MetadataValue.path(rows[-1]["report_path"] if rows else ""),
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id))
            if run_id
            else "",
            **parquet_table_metadata([state.warehouse().path(REPORT_KEY, suite) for suite in context.partition_keys]),
        }
    )


def _suites(state: GovernanceState, key: tuple[str, str]) -> list[str]:
    folder = state.warehouse().path(key, "x").parent
    return sorted(path.stem for path in folder.glob("*.parquet")) if folder.is_dir() else []


def ledger_events(
    state: GovernanceState, run_id: str, code_version: str, policy_hash: str, policy_label: str
) -> list[audit.LedgerEvent]:
    """Events for every verdict, decision, report and waiver in the warehouse whose content the
    ledger does not hold yet, and a policy change when the policy's hash differs from the last one."""
    path = ledger_path(state)
    known = {
        (e["kind"], e.get("suite"), e.get("model"), e["subject"], e["details"].get("content_hash"))
        for e in audit.entries(path)
    }
    now = datetime.now(UTC)
    events = []

    def add(kind: audit.EntryKind, suite: str | None, model: str | None, subject: str, details: dict[str, Any]) -> None:
        digest = canonical_hash(details)
        if (kind, suite, model, subject, digest) not in known:
            known.add((kind, suite, model, subject, digest))
            events.append(audit.LedgerEvent(kind, subject, now, run_id, code_version, policy_hash, suite, model,
                                             details | {"content_hash": digest}))  # fmt: skip

    if audit.last_policy_hash(path) != policy_hash:
        add("policy_change", None, None, policy_label, {"policy_hash": policy_hash})
    for suite in _suites(state, VERDICTS_KEY):
        for row in _read(state, VERDICTS_KEY, suite).to_dict("records"):
            add("gate_verdict", suite, str(row["model"]), str(row["gate"]),
                {"status": row["status"], "blocks_release": bool(row["blocks_release"]), "reason": str(row["reason"]),
                 "actual": str(row["actual"]), "threshold": str(row["threshold"])})  # fmt: skip
    for suite in _suites(state, DECISION_KEY):
        for row in _read(state, DECISION_KEY, suite).to_dict("records"):
            add("release_decision", suite, str(row["model"]), "release/decision",
                {"decision": row["decision"], "reasons": list(row["reasons"]), "warnings": list(row["warnings"])})  # fmt: skip
    settings = state.policy().compliance
    for suite in _suites(state, REPORT_KEY):
        frame = _read(state, REPORT_KEY, suite)
        for (model, report_hash), group in frame.groupby(["model", "report_hash"], sort=True):
            add("report", suite, str(model), "compliance/report",
                {"report_hash": str(report_hash), "mlflow_run_id": str(group["mlflow_run_id"].iloc[0]),
                 "met": int((group["status"] == "met").sum()), "not_met": int((group["status"] == "not met").sum())})  # fmt: skip
        for waiver in suite_waivers(settings, suite):
            add("waiver", suite, waiver.model, waiver.gate, json.loads(waiver.model_dump_json()))
    return events


@dg.asset(
    key=dg.AssetKey(list(AUDIT_LOG_KEY)),
    group_name="compliance",
    kinds={"jsonl"},
    owners=OWNERS,
    code_version=source_digest(__name__),
    deps=[dg.AssetKey(list(key)) for key in (VERDICTS_KEY, DECISION_KEY, REPORT_KEY)],
    check_specs=[
        dg.AssetCheckSpec(
            "ledger_intact",
            asset=dg.AssetKey(list(AUDIT_LOG_KEY)),
            blocking=True,
            description="The hash chain verifies and ends at the head this asset recorded last time.",
        )
    ],
)
def compliance_audit_log(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Append-only, hash-chained ledger of every gate verdict, release decision, report, waiver and policy change."""
    path = ledger_path(state)
    previous = context.instance.get_latest_materialization_event(dg.AssetKey(list(AUDIT_LOG_KEY)))
    recorded = (
        previous.asset_materialization.metadata.get("head") if previous and previous.asset_materialization else None
    )
    expected = str(recorded.value) if recorded is not None else None
    before = audit.verify(path, expected_head=expected)
    if not before.intact:
        return dg.MaterializeResult(
            metadata={"intact": False, "reason": before.reason, "head": expected or audit.GENESIS},
            check_results=[
                dg.AssetCheckResult(check_name="ledger_intact", passed=False, metadata={"reason": before.reason})
            ],
        )
    source, label = policy_source()
    events = ledger_events(state, context.run.run_id, str(context.assets_def.code_versions_by_key.get(context.asset_key)),
                           canonical_hash(source), label)  # fmt: skip
    head = audit.append(path, events) if events else before.head
    after = audit.verify(path, expected_head=head)
    kinds = pd.Series([e.kind for e in events], dtype=object).value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "intact": after.intact,
            "entries": after.entries,
            "appended": len(events),
            "appended_by_kind": dg.MetadataValue.json({str(k): int(v) for k, v in kinds.items()}),
            "head": head,
            "ledger": dg.MetadataValue.path(str(path)),
            "dagster/row_count": after.entries,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="ledger_intact",
                passed=after.intact,
                metadata={"entries": after.entries, "head": head, "reason": after.reason or "intact"},
            )
        ],
    )
