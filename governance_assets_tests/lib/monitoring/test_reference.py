"""The reference profile's arithmetic, moved out of the asset: a suite shaped as traffic (hand-worked
rows), the traffic window, sampling, and the profile's quantiles against `statistics`."""

import statistics
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from governance_assets.lib.core.policy import ReferenceSettings
from governance_assets.lib.monitoring.reference import profile, reference_days, sample_rows, suite_as_traffic
from governance_assets.lib.monitoring.traffic import TRAFFIC_SCHEMA


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_name": ["r", "r", "r", "r"],
            "model": ["m1", "m1", "m1", "m1"],
            "instance_id": ["i1", "i2", "i3", "i1"],
            "train_trial_index": [0, 0, 0, 0],
            "perturbation": [None, None, None, "typo"],
            "prompt": ["What is 2+2?", "Name a colour", None, "Waht is 2+2?"],
            "completion": ["4", None, "x", "4"],
        }
    )


def _stats() -> pd.DataFrame:
    rows = [
        ("i1", None, "num_prompt_tokens", 7.0),
        ("i1", None, "num_output_tokens", 1.0),
        ("i1", None, "inference_runtime", 0.25),
        ("i1", None, "exact_match", 1.0),
        ("i1", "typo", "num_prompt_tokens", 8.0),
        ("i2", None, "num_prompt_tokens", 4.0),
        ("i2", None, "num_output_tokens", 0.0),
        ("i2", None, "inference_runtime", 1.5),
        ("i3", None, "num_prompt_tokens", 5.0),  # no runtime, no output tokens: not a traffic row
    ]
    return pd.DataFrame(
        {
            "run_name": "r",
            "instance_id": [r[0] for r in rows],
            "train_trial_index": 0,
            "perturbation": [r[1] for r in rows],
            "metric": [r[2] for r in rows],
            "value": [r[3] for r in rows],
        }
    )


def test_a_suite_as_traffic_takes_unperturbed_instances_with_their_stats() -> None:
    table = suite_as_traffic(_predictions(), _stats())
    assert table.schema == TRAFFIC_SCHEMA
    rows = table.to_pylist()
    assert [r["request_id"] for r in rows] == ["r/i1", "r/i2"]  # i3 lacks stats, the typo row is perturbed
    first, second = rows
    assert (first["prompt"], first["completion"], first["model"]) == ("What is 2+2?", "4", "m1")
    assert (first["prompt_tokens"], first["completion_tokens"], first["latency_ms"]) == (7, 1, 250.0)
    assert (second["completion"], second["completion_tokens"], second["latency_ms"]) == ("", 0, 1500.0)
    with pytest.raises(ValueError, match="no unperturbed prediction"):
        suite_as_traffic(_predictions().iloc[3:], _stats())


def test_the_reference_window_is_the_first_days_or_the_given_range_that_has_traffic() -> None:
    available = ["2026-03-01", "2026-03-02", "2026-03-04", "2026-03-05"]
    assert reference_days(ReferenceSettings(days=3), available) == available[:3]
    window = ReferenceSettings(start=date(2026, 3, 2), end=date(2026, 3, 4))
    assert reference_days(window, available) == ["2026-03-02", "2026-03-04"]


def test_sampling_keeps_order_and_size_and_is_seeded() -> None:
    table = pa.table({"x": list(range(1000))})
    sampled = sample_rows(table, 100)
    values = sampled.column("x").to_pylist()
    assert len(values) == 100 == len(set(values)) and values == sorted(values)
    assert sample_rows(table, 100).equals(sampled) and sample_rows(table, 5000) is table


def test_profile_summarises_each_feature() -> None:
    latency = np.random.default_rng(1).lognormal(5, 0.5, 501)
    features = pd.DataFrame({"latency_ms": latency, "refusal": [True] * 100 + [False] * 401})
    features.loc[0, "latency_ms"] = np.nan
    numeric, flags = profile(features)
    present = [float(v) for v in latency[1:]]
    p95 = statistics.quantiles(present, n=20, method="inclusive")[-1]
    expected = f"mean {statistics.fmean(present):.4g}, p50 {statistics.median(present):.4g}, p95 {p95:.4g}"
    assert numeric == {"feature": "latency_ms", "non_null": 500, "summary": expected}
    assert flags == {"feature": "refusal", "non_null": 501, "summary": "False 80.0%, True 20.0%"}
    assert profile(pd.DataFrame({"x": [np.nan]}))[0]["summary"] == "no values"
