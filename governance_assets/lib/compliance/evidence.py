"""A suite's compliance evidence as tables, one function per asset of the compliance group:
bias and fairness, the PII and toxicity screens, failure slices, and the gate-verdict amendments
(contamination, fairness checks, waivers) that the release decision reads."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from governance_assets.lib.compliance import fairness, pii, slices, toxicity
from governance_assets.lib.compliance.contamination import (
    ContaminationFlag,
    ContaminationPoint,
    blocks_promotion,
    contamination_flags,
)
from governance_assets.lib.compliance.settings import ComplianceSettings, FairnessLimit
from governance_assets.lib.compliance.waivers import Waiver, waiver_for
from governance_assets.lib.helm.output import HelmOutputError

BIAS_FAIRNESS_COLUMNS = [
    "section", "run_name", "model", "metric", "split", "group", "perturbation", "computed_on", "n", "helm_count", "value",
    "gap", "ci_low", "ci_high", "p_value", "p_adjusted", "limit", "outcome",
]  # fmt: skip
"""`section`: `helm_bias` (HELM's bias and BBQ metrics), `perturbation` (paired gaps), `group`
(per-group values), `fairness_check` (a policy limit judged on one run × metric), `classification`
(per-group rates and parity / equalized-odds differences of a two-label task). `n` counts
instances; `helm_count` is HELM's own count of a bias stat."""


def policy_folder() -> Path:
    """The folder of the policy in force (GOVERNANCE_POLICY's, else the packaged policy's)."""
    chosen = os.environ.get("GOVERNANCE_POLICY")
    if chosen:
        return Path(chosen).absolute().parent
    return Path(str(resources.files("governance_assets.policy").joinpath("default.yaml"))).parent


def _rows(frame: pd.DataFrame, section: str, **renames: str) -> list[dict[str, Any]]:
    return [
        {"section": section, **{renames.get(str(k), str(k)): v for k, v in row.items()}}
        for row in frame.to_dict("records")
    ]


def _limit_checks(
    outcomes: pd.DataFrame, limits: Sequence[FairnessLimit], settings: ComplianceSettings
) -> list[dict[str, Any]]:
    plain = outcomes[outcomes["perturbation"].isna() & outcomes["sub_split"].notna()]
    rows = []
    for limit in limits:
        selected = plain[np.array([fnmatchcase(str(name), limit.metric) for name in plain["metric"]], dtype=bool)]
        for (run, model, metric, split), frame in selected.groupby(
            ["run_name", "model", "metric", "split"], dropna=False, sort=True
        ):
            sizes = frame["sub_split"].value_counts()
            kept = frame[frame["sub_split"].isin(sizes[sizes >= settings.min_group_size].index)]
            if kept["sub_split"].nunique() < 2:
                continue
            verdict = fairness.gap_verdict(
                list(kept["value"]), list(kept["sub_split"]), limit.max_group_gap, settings.alpha
            )
            rows.append(
                {"section": "fairness_check", "run_name": run, "model": model, "metric": metric, "split": split,
                 "group": f"{limit.name}: {verdict.pair[0]} vs {verdict.pair[1]}", "n": len(kept),
                 "gap": verdict.difference, "ci_low": verdict.ci_low, "ci_high": verdict.ci_high,
                 "limit": limit.max_group_gap, "outcome": verdict.outcome}
            )  # fmt: skip
    return rows


def _classification_rows(predictions: pd.DataFrame, settings: ComplianceSettings) -> list[dict[str, Any]]:
    """Per run whose unperturbed instances carry a group and whose correct references take two
    labels: per-group selection, true- and false-positive rates, and the parity and
    equalized-odds differences (fairlearn)."""
    plain = predictions[predictions["perturbation"].isna() & predictions["sub_split"].notna()]
    rows: list[dict[str, Any]] = []
    for (run, model), frame in plain.groupby(["run_name", "model"], observed=True, sort=True):
        truth = pd.Series(
            [str(refs[0]) if refs is not None and len(refs) else None for refs in frame["correct_references"]],
            index=frame.index,
            dtype=object,
        )
        labelled = frame.assign(truth=truth).dropna(subset=["truth"])
        sizes = labelled["sub_split"].value_counts()
        labelled = labelled[labelled["sub_split"].isin(sizes[sizes >= settings.min_group_size].index)]
        if labelled["truth"].nunique() != 2 or labelled["sub_split"].nunique() < 2:
            continue
        result = fairness.classification_fairness(
            list(labelled["truth"]), [str(c or "").strip() for c in labelled["completion"]],
            list(labelled["sub_split"].astype(str)), settings.confidence, settings.bootstrap_resamples, settings.seed,
        )  # fmt: skip
        ids = {"section": "classification", "run_name": str(run), "model": str(model)}
        for group in result.by_group.to_dict("records"):
            rows += [ids | {"metric": m, "group": group["group"], "n": group["n"], "value": group[m]}
                     for m in ("selection_rate", "true_positive_rate", "false_positive_rate")]  # fmt: skip
        rows += [
            ids | {"metric": "demographic_parity_difference", "gap": result.demographic_parity_difference},
            ids | {"metric": "equalized_odds_difference", "gap": result.equalized_odds_difference},
            ids | {"metric": "true_positive_rate_difference", "ci_low": result.tpr_difference_ci[0], "ci_high": result.tpr_difference_ci[1]},
            ids | {"metric": "false_positive_rate_difference", "ci_low": result.fpr_difference_ci[0], "ci_high": result.fpr_difference_ci[1]},
        ]  # fmt: skip
    return rows


def bias_fairness_table(
    run_stats: pd.DataFrame, instance_stats: pd.DataFrame, predictions: pd.DataFrame, settings: ComplianceSettings
) -> pd.DataFrame:
    """Every row of `compliance/bias_fairness` for one suite (see BIAS_FAIRNESS_COLUMNS)."""
    bias = fairness.bias_metrics(run_stats, instance_stats)
    outcomes = fairness.instance_outcomes(instance_stats, settings.fairness_metrics)
    gaps = fairness.perturbation_gaps(outcomes, settings.confidence, settings.correction)
    groups, _ = fairness.group_fairness_table(
        outcomes, settings.confidence, settings.bootstrap_resamples, settings.seed, settings.min_group_size
    )
    all_outcomes = fairness.instance_outcomes(
        instance_stats, sorted({*settings.fairness_metrics, *(limit.metric for limit in settings.fairness_limits)})
    )
    rows = (
        _rows(
            bias.drop(columns=["scenario"]),
            "helm_bias",
            sub_split="group",
            mean="value",
            count="helm_count",
            instances="n",
            status="outcome",
        )
        + [
            {**row, "outcome": _robustness_outcome(row, settings)}
            for row in _rows(
                gaps.drop(columns=["label", "original_mean", "method"]), "perturbation", perturbed_mean="value"
            )
        ]
        + _rows(groups, "group")
        + _limit_checks(all_outcomes, settings.fairness_limits, settings)
        + _classification_rows(predictions, settings)
    )
    table = pd.DataFrame(rows).reindex(columns=BIAS_FAIRNESS_COLUMNS)
    for column in ("n", "helm_count"):
        table[column] = table[column].astype("Int64")
    for column in ("value", "gap", "ci_low", "ci_high", "p_value", "p_adjusted", "limit"):
        table[column] = table[column].astype("float64")
    for column in (
        "section",
        "run_name",
        "model",
        "metric",
        "split",
        "group",
        "perturbation",
        "computed_on",
        "outcome",
    ):
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def _robustness_outcome(row: Mapping[str, Any], settings: ComplianceSettings) -> str:
    """`fail` when the drop exceeds the policy's limit with confidence and is significant after
    correction, `pass` when the interval rules out a drop beyond the limit, else `inconclusive`
    ("no data" without a limit)."""
    limit = settings.max_perturbation_drop
    if limit is None:
        return "no data"
    if float(row["ci_high"]) < -limit and float(row["p_adjusted"]) <= settings.alpha:
        return "fail"
    return "pass" if float(row["ci_low"]) >= -limit else "inconclusive"


def pii_table(predictions: pd.DataFrame, run_stats: pd.DataFrame, settings: ComplianceSettings) -> pd.DataFrame:
    """Per model (and text field): texts screened, texts with PII, rate, counts by type and up to
    three redacted excerpts; DecodingTrust privacy stats (when the suite has them) are added per run."""
    fields = ["completion", "prompt"] if settings.scan_prompts else ["completion"]
    rows = []
    for field in fields:
        for model, frame in predictions.groupby("model", observed=True, sort=True):
            texts = [None if pd.isna(t) else str(t) for t in frame[field]]
            screened = pii.screen(texts)
            with_pii = [s for s in screened if s.types]
            counts: Counter[str] = Counter()
            for s in screened:
                counts.update(s.types)
            rows.append(
                {"model": str(model), "field": field, "texts": len(texts), "with_pii": len(with_pii),
                 "rate": len(with_pii) / len(texts) if texts else 0.0, "limit": settings.max_pii_rate,
                 "by_type": json.dumps(dict(sorted(counts.items()))),
                 "examples": json.dumps([s.excerpt for s in with_pii[:3]]), "source": "presidio patterns (offline)"}
            )  # fmt: skip
    privacy = run_stats[run_stats["metric"].astype(str).str.contains("privacy") & run_stats["perturbation"].isna()]
    for stat in privacy.to_dict("records"):
        mean = stat["mean"]
        rows.append(
            {"model": str(stat["model"]), "field": f"helm:{stat['metric']}", "texts": int(stat["count"]), "with_pii": 0,
             "rate": float(mean) if pd.notna(mean) else float("nan"), "limit": float("nan"),
             "by_type": "{}", "examples": "[]", "source": f"HELM DecodingTrust ({stat['run_name']})"}
        )  # fmt: skip
    return pd.DataFrame(
        rows, columns=["model", "field", "texts", "with_pii", "rate", "limit", "by_type", "examples", "source"]
    )


def _judges(runs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for run in runs[runs["status"] == "complete"].itertuples():
        try:
            scores = toxicity.judge_scores(Path(str(run.path)))
        except (HelmOutputError, OSError, KeyError, TypeError):
            continue  # a run whose annotations cannot be read has no judges; ingestion reports the file
        if not scores.empty:
            frames.append(scores.assign(run_name=str(run.run_name)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def toxicity_table(
    tables_runs: pd.DataFrame, predictions: pd.DataFrame, run_stats: pd.DataFrame, settings: ComplianceSettings
) -> pd.DataFrame:
    """Per model: HELM's Perspective stats when the suite has them, else the offline screen's
    flagged share; where LLM judges annotated the completions, the screen's agreement with them."""
    perspective = toxicity.perspective_stats(run_stats)
    rows: list[dict[str, Any]] = []
    if not perspective.empty:
        for model, frame in perspective.groupby("model", sort=True):
            toxic = frame[frame["metric"] == "toxic_frac"]
            rate = float(np.average(toxic["mean"], weights=toxic["count"])) if not toxic.empty else float("nan")
            rows.append({"model": str(model), "source": "HELM Perspective (toxic_frac)", "completions": int(toxic["count"].sum()),
                         "flagged": None, "rate": rate, "limit": settings.max_toxic_rate})  # fmt: skip
        return _toxicity_frame(rows)
    frame = predictions.assign(
        run_name=predictions["run_name"].astype(str),
        instance_id=predictions["instance_id"].astype(str),
        probability=toxicity.toxicity_probabilities(
            [None if pd.isna(t) else str(t) for t in predictions["completion"]]
        ),
    )
    frame["flagged"] = frame["probability"] >= toxicity.TOXIC_PROBABILITY
    judges = _judges(tables_runs)
    if not judges.empty:
        frame = frame.merge(
            judges[["run_name", "instance_id", "train_trial_index", "judge_mean"]],
            on=["run_name", "instance_id", "train_trial_index"],
            how="left",
        )
    for model, group in frame.groupby("model", observed=True, sort=True):
        row: dict[str, Any] = {"model": str(model), "source": "alt-profanity-check (offline)", "completions": len(group),
                               "flagged": int(group["flagged"].sum()), "rate": float(group["flagged"].mean()),
                               "limit": settings.max_toxic_rate}  # fmt: skip
        if "judge_mean" in group and group["judge_mean"].notna().any():
            judged = group[group["judge_mean"].notna()]
            agreement = toxicity.agreement(
                list(judged["flagged"]), list(judged["judge_mean"] < toxicity.JUDGE_HARMFUL_BELOW)
            )
            row |= {"judged": agreement.n, "judge_harmful": agreement.both_flag + agreement.judges_only,
                    "agreement": agreement.accuracy, "cohen_kappa": agreement.cohen_kappa}  # fmt: skip
        rows.append(row)
    return _toxicity_frame(rows)


def _toxicity_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [
        "model",
        "source",
        "completions",
        "flagged",
        "rate",
        "limit",
        "judged",
        "judge_harmful",
        "agreement",
        "cohen_kappa",
    ]
    frame = pd.DataFrame(rows).reindex(columns=columns)
    for column in ("completions", "flagged", "judged", "judge_harmful"):
        frame[column] = frame[column].astype("Int64")
    for column in ("rate", "limit", "agreement", "cohen_kappa"):
        frame[column] = frame[column].astype("float64")
    return frame


def slices_table(
    runs: pd.DataFrame, instance_stats: pd.DataFrame, predictions: pd.DataFrame, settings: ComplianceSettings
) -> pd.DataFrame:
    """The ranked failure slices of the suite (every metric of `compliance.slices.metrics`)."""
    outcomes = fairness.instance_outcomes(instance_stats, settings.slices.metrics)
    if outcomes.empty:
        return pd.DataFrame(columns=slices.COLUMNS)
    frame = slices.slice_frame(outcomes, predictions, runs, settings.slices.input_length_buckets)
    return slices.rank_slices(frame, settings.slices.min_support, settings.alpha, settings.correction)


def contamination_by_model(
    runs: pd.DataFrame, points: Sequence[ContaminationPoint]
) -> dict[str, list[ContaminationFlag]]:
    """Per model: the contaminated run groups its runs rest on (HELM's model name and groups)."""
    flags: dict[str, list[ContaminationFlag]] = {}
    complete = runs[runs["status"] == "complete"]
    for model, frame in complete.groupby("model", sort=True):
        groups = sorted(
            {str(g) for run_groups in frame["groups"] for g in (run_groups if run_groups is not None else [])}
            | set(frame["scenario"].astype(str))
        )
        flags[str(model)] = contamination_flags(points, str(model), groups)
    return flags


def amend_verdicts(
    rows: Sequence[dict[str, Any]],
    contamination: Mapping[str, Sequence[ContaminationFlag]],
    fairness_checks: pd.DataFrame | None,
    settings: ComplianceSettings,
    waivers: Sequence[Waiver],
) -> list[dict[str, Any]]:
    """The gate verdict rows with compliance applied, for the release decision: a `contamination`
    row per contaminated model (failing at ERROR when the policy blocks at its level, else at WARN), every
    other row of a contaminated model flagged in its reason, one row per fairness limit and model
    from `compliance/bias_fairness`, and failures waived by an active waiver no longer blocking
    ("promoted under waiver …"). A model without contaminated groups gets no row. Rows need `suite`, `model`, `gate`, `status`, `reason`,
    `blocks_release`, `blocking`, `severity`."""
    suite = str(rows[0]["suite"]) if rows else ""
    amended = []
    for row in rows:
        flags = contamination.get(str(row["model"]), [])
        note = (
            f" [claim rests on contaminated data: {', '.join(f'{f.group} ({f.level})' for f in flags)}]"
            if flags
            else ""
        )
        amended.append({**row, "reason": f"{row['reason']}{note}"})
    template = {"suite": suite, "actual": "", "threshold": "", "failing_runs": [], "evidence": "[]"}
    for model, flags in sorted(contamination.items()):
        if not flags:
            continue
        blocks = blocks_promotion(flags, settings.block_on_contamination)
        amended.append(template | {
            "model": model, "gate": "contamination", "kind": "contamination",
            "blocking": settings.block_on_contamination is not None,
            "severity": "error" if blocks else "warn", "status": "fail", "blocks_release": blocks,
            "reason": "; ".join(f"{f.group}: {f.level} ({f.source})" for f in flags),
            "threshold": f"block at {settings.block_on_contamination or 'never'}",
            "evidence": json.dumps([f.__dict__ for f in flags]),
        })  # fmt: skip
    if fairness_checks is not None:
        checks = fairness_checks[fairness_checks["section"] == "fairness_check"]
        for limit in settings.fairness_limits:
            mine = checks[checks["group"].astype(str).str.startswith(f"{limit.name}: ")]
            for judged_model, frame in mine.groupby("model", sort=True):
                statuses = list(frame["outcome"])
                status = "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"
                amended.append(template | {
                    "model": str(judged_model), "gate": limit.name, "kind": "fairness", "blocking": limit.blocking,
                    "severity": "error" if limit.blocking else "warn", "status": status,
                    "blocks_release": limit.blocking and status == "fail",
                    "reason": "; ".join(f"{r.run_name}: gap {r.gap:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] {r.outcome}" for r in frame.itertuples()),
                    "actual": f"{frame['gap'].abs().max():.3f}", "threshold": f"group gap <= {limit.max_group_gap}",
                })  # fmt: skip
    for row in amended:
        waiver = waiver_for(waivers, str(row["gate"]), str(row["model"])) if row["status"] != "pass" else None
        if waiver is not None:
            row.update(
                blocks_release=False,
                severity="warn",
                reason=f"promoted under {waiver.describe()} (was: {row['reason']})",
            )
    return amended
