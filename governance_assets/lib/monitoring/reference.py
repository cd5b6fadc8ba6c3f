"""The reference profile traffic is compared with: a window of traffic days or a HELM suite's
instances shaped as traffic, sampled, and summarised per feature."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from governance_assets.lib.core.policy import ReferenceSettings
from governance_assets.lib.monitoring.traffic import TRAFFIC_SCHEMA

SUITE_REFERENCE_STATS = {
    "num_prompt_tokens": "prompt_tokens",
    "num_output_tokens": "completion_tokens",
    "inference_runtime": "latency_ms",
}
"""HELM per-instance stats that stand for traffic fields (`inference_runtime` is in seconds)."""
INSTANCE_KEYS = ["run_name", "instance_id", "train_trial_index"]


def reference_days(settings: ReferenceSettings, available: list[str]) -> list[str]:
    """The policy's window among the days that have traffic: [start, end] if given, else the first `days`."""
    if settings.start is not None and settings.end is not None:
        start, end = settings.start, settings.end
        wanted = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        have = set(available)
        return [day for day in wanted if day in have]
    return available[: settings.days]


def suite_as_traffic(predictions: pd.DataFrame, instance_stats: pd.DataFrame) -> pa.Table:
    """A suite's unperturbed predictions as traffic rows (`TRAFFIC_SCHEMA`): prompt and completion
    from the predictions, token counts and latency (ms) from the instance's stats. An instance that
    lacks one of those stats is left out (a traffic row needs all three). ValueError when none is left."""
    plain = predictions[predictions["perturbation"].isna()]
    stats = instance_stats[
        instance_stats["perturbation"].isna() & instance_stats["metric"].isin(list(SUITE_REFERENCE_STATS))
    ]
    wide = stats.pivot_table(index=INSTANCE_KEYS, columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(SUITE_REFERENCE_STATS)).dropna().reset_index()
    rows = plain.merge(wide, on=INSTANCE_KEYS, how="inner")
    if rows.empty:
        raise ValueError(f"no unperturbed prediction has all of {', '.join(SUITE_REFERENCE_STATS)}")
    frame = pd.DataFrame(
        {
            "timestamp": pd.Timestamp(0, tz="UTC"),
            "model": rows["model"].astype(str),
            "request_id": rows["run_name"].astype(str) + "/" + rows["instance_id"].astype(str),
            "prompt": rows["prompt"].fillna("").astype(str),
            "completion": rows["completion"].fillna("").astype(str),
            "latency_ms": rows["inference_runtime"].astype(float) * 1000.0,
            "prompt_tokens": rows["num_prompt_tokens"].astype("int64"),
            "completion_tokens": rows["num_output_tokens"].astype("int64"),
            "feedback": np.nan,
            "metadata": None,
        }
    )
    return pa.Table.from_pandas(frame, schema=TRAFFIC_SCHEMA, preserve_index=False)


def sample_rows(table: pa.Table, rows: int, seed: int = 0) -> pa.Table:
    """At most `rows` rows of `table`, drawn without replacement (seeded), in their order."""
    if table.num_rows <= rows:
        return table
    picked = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=rows, replace=False))
    return table.take(pa.array(picked))


def profile(features: pd.DataFrame) -> list[dict[str, Any]]:
    """Per feature: non-missing count and a summary (mean, median and 95th percentile, linear
    interpolation; or the four most common values' shares)."""
    rows = []
    for name in features.columns:
        column = features[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.dropna().to_numpy(float)
            summary = (
                f"mean {values.mean():.4g}, p50 {np.quantile(values, 0.5):.4g}, p95 {np.quantile(values, 0.95):.4g}"
                if values.size
                else "no values"
            )
        else:
            shares = column.astype(str).value_counts(normalize=True).head(4)
            summary = ", ".join(f"{key} {share:.1%}" for key, share in shares.items())
        rows.append({"feature": name, "non_null": int(column.notna().sum()), "summary": summary})
    return rows
