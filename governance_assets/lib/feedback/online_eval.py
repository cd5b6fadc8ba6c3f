"""Online evaluation: a sample of live responses scored with the platform's offline metrics, per
model and day, next to the HELM scores of the same model.

Production metrics of a model's sampled requests (`sample_size` a day, seeded by the day):
`refusal_rate` (the monitoring group's refusal feature of each request), `completion_tokens`
(mean), `pii_rate` (the compliance group's PII screen of the completions), `toxic_rate` (its offline
toxicity classifier, flagged at `TOXIC_PROBABILITY`), `positive_feedback_rate` (thumbs up among the
sampled requests with a thumbs), and `correction_f1`: HELM's own `f1_score` (SQuAD token F1)
between each corrected completion of the day and the user's correction, averaged — the production
counterpart of HELM's `f1_score` against references.

The HELM side is the mean over the model's plain (unperturbed) runs of the newest suite (or the
policy's suite) of each HELM metric named by a comparison. A comparison diverges when the gap
(production − HELM, relative to |HELM| when `relative`) exceeds its bound.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np
import pandas as pd

from governance_assets.lib.compliance.pii import screen
from governance_assets.lib.compliance.toxicity import TOXIC_PROBABILITY, toxicity_probabilities
from governance_assets.lib.core.policy import OnlineComparison
from governance_assets.lib.feedback.metrics import OnlineMetricName
from governance_assets.lib.helm.runner import helm_environment

PRODUCTION_METRICS: tuple[str, ...] = get_args(OnlineMetricName)


def correction_f1(completions: Sequence[str], corrections: Sequence[str]) -> list[float]:
    """HELM's token F1 (normalised as HELM normalises) of each completion against its correction."""
    for name, value in helm_environment().items():  # HELM's import reads NLTK data: keep it offline
        os.environ.setdefault(name, value)
    from helm.benchmark.metrics.evaluate_reference_metrics import f1_score

    return [float(f1_score(gold, pred)) for pred, gold in zip(completions, corrections, strict=True)]


def sample_rows(traffic: pd.DataFrame, sample_size: int, seed: int) -> pd.DataFrame:
    """Up to `sample_size` requests per model, drawn without replacement (deterministic in `seed`)."""
    parts = [
        rows.sample(n=min(sample_size, len(rows)), random_state=seed) for _, rows in traffic.groupby("model", sort=True)
    ]
    return pd.concat(parts) if parts else traffic.iloc[:0]


def production_scores(sample: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per model: requests sampled and each of `PRODUCTION_METRICS` (NaN without data).

    `sample` has `request_id`, `model`, `completion`, `completion_tokens`, `refusal`; `events` has
    `request_id`, `kind`, `value`, `text`, `completion` (the day's joined feedback)."""
    rows: list[dict[str, Any]] = []
    for model, part in sample.groupby("model", sort=True):
        completions = part["completion"].fillna("").tolist()
        pii = [bool(result.types) for result in screen(completions)]
        toxic = toxicity_probabilities(completions) >= TOXIC_PROBABILITY
        thumbs = events[(events["kind"] == "thumbs") & events["request_id"].isin(set(part["request_id"]))]
        corrections = events[(events["kind"] == "correction") & (events["model"] == model)]
        f1 = correction_f1(corrections["completion"].fillna("").tolist(), corrections["text"].fillna("").tolist())
        rows.append(
            {
                "model": model,
                "sampled": len(part),
                "refusal_rate": float(part["refusal"].mean()),
                "completion_tokens": float(part["completion_tokens"].mean()),
                "pii_rate": float(np.mean(pii)),
                "toxic_rate": float(np.mean(toxic)),
                "positive_feedback_rate": float((thumbs["value"] > 0).mean()) if len(thumbs) else float("nan"),
                "correction_f1": float(np.mean(f1)) if f1 else float("nan"),
                "corrections": len(f1),
            }
        )
    return pd.DataFrame(rows)


def helm_scores(run_stats: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per model and metric: the mean over the model's plain runs (no perturbation) of HELM's stat."""
    plain = run_stats[
        run_stats["metric"].isin(list(metrics)) & run_stats["perturbation"].isna() & (run_stats["count"] > 0)
    ]
    if "split" in plain:
        plain = plain[plain["split"].isin(["test", "valid"])]
    per_run = plain.groupby(["model", "metric", "run_name"])["mean"].mean()
    return per_run.groupby(["model", "metric"]).mean().rename("helm_value").reset_index()


def compare(production: pd.DataFrame, helm: pd.DataFrame, comparisons: Sequence[OnlineComparison]) -> pd.DataFrame:
    """One row per model × comparison: both values, the gap, the bound and whether it diverged
    (`diverged` is None when either side has no value: "no data", never a pass)."""
    rows: list[dict[str, Any]] = []
    for record in production.to_dict("records"):
        for comparison in comparisons:
            value = float(record[comparison.production])
            match = helm[(helm["model"] == record["model"]) & (helm["metric"] == comparison.helm)]
            helm_value = float(match["helm_value"].iloc[0]) if len(match) else float("nan")
            gap = value - helm_value
            if comparison.relative:
                gap = gap / abs(helm_value) if helm_value else float("inf") if gap else 0.0
            known = np.isfinite(value) and np.isfinite(helm_value)
            rows.append(
                {
                    "model": record["model"],
                    "comparison": comparison.name,
                    "production_metric": comparison.production,
                    "production_value": value,
                    "helm_metric": comparison.helm,
                    "helm_value": helm_value,
                    "gap": float(gap) if known else float("nan"),
                    "relative": comparison.relative,
                    "max_gap": comparison.max_gap,
                    "diverged": bool(abs(gap) > comparison.max_gap) if known else None,
                }
            )
    return pd.DataFrame(rows)
