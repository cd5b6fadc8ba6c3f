"""The series the `monitoring/trends` asset charts, and the policy's detector run on each of them."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from governance_assets.lib.core.policy import TrendSettings
from governance_assets.lib.monitoring.trends import ChangeDetection, detect, standardised


def headline_means(run_stats: pd.DataFrame, metrics: list[str]) -> dict[tuple[str, str], float]:
    """Per (metric, model): the mean over the model's runs of each run's test-split, unperturbed mean
    (stats with count 0 have no mean and are left out)."""
    picked = run_stats[
        run_stats["metric"].isin(metrics)
        & (run_stats["split"] == "test")
        & run_stats["perturbation"].isna()
        & (run_stats["count"] > 0)
    ]
    means = picked.groupby(["metric", "model"], sort=True)["mean"].mean().reset_index()
    return {
        (str(metric), str(model)): float(value)
        for metric, model, value in zip(means["metric"], means["model"], means["mean"], strict=True)
    }


def run_detection(values: list[float], settings: TrendSettings) -> ChangeDetection:
    """The policy's change detector on one series. Page–Hinkley runs on the series standardised
    by its first `warmup` points, so that one `ph_delta`/`ph_threshold` (in σ) fits every series."""
    data = np.asarray(values, dtype=float)
    if settings.method == "self_starting_cusum":
        return detect("self_starting_cusum", data, k=settings.cusum_k, arl0=settings.arl0)
    if settings.method == "cusum":
        return detect("cusum", data, k=settings.cusum_k, h=settings.cusum_h, warmup=settings.warmup)
    if settings.method == "ewma":
        return detect("ewma", data, lam=settings.ewma_lambda, L=settings.ewma_l, warmup=settings.warmup)
    detection = detect(
        "page_hinkley",
        standardised(data, settings.warmup),
        delta=settings.ph_delta,
        threshold=settings.ph_threshold,
        min_instances=settings.warmup,
    )
    return replace(detection, values=data)


def series_rows(name: str, labels: list[str], detection: ChangeDetection) -> list[dict[str, Any]]:
    """One row per point: its value, the detector's statistics and limits, alarm and change point."""
    starts = set(detection.change_points)
    return [
        {
            "series": name,
            "label": label,
            "value": float(detection.values[i]),
            "statistic": float(detection.statistic[i]),
            "lower_statistic": float(detection.lower_statistic[i]),
            "lower_limit": float(detection.lower_limit[i]),
            "upper_limit": float(detection.upper_limit[i]),
            "flagged": bool(detection.flagged[i]),
            "change_point": i in starts,
        }
        for i, label in enumerate(labels)
    ]


def latest_values(series: dict[str, tuple[list[str], list[float]]]) -> dict[str, float]:
    """The last finite value of each series (a series with none is left out)."""
    latest = {}
    for name, (_, values) in series.items():
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            latest[name] = finite[-1]
    return latest
