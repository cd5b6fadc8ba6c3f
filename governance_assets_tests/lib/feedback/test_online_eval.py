"""Online evaluation: production scores by hand, HELM scores against HELM's own stats.json of a
real `helm-run` of simple/model1, and the divergence rule."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from governance_assets.lib.core.policy import OnlineComparison
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.feedback.online_eval import (
    compare,
    correction_f1,
    helm_scores,
    production_scores,
    sample_rows,
)
from governance_assets.lib.helm import tidy
from governance_assets.lib.helm.runner import HelmSettings, run_entries

SUITE = "online"


@pytest.fixture(scope="module")
def real_suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """simple1 and synthetic_reasoning run by HELM on simple/model1, ingested as helm/run_stats is."""
    home = tmp_path_factory.mktemp("helm")
    settings = HelmSettings(output_path=home / "benchmark_output", local_path=home / "prod_env", max_eval_instances=5)
    entries = ["simple1:model=simple/model1", "synthetic_reasoning:mode=pattern_match,model=simple/model1"]
    outcomes = run_entries(entries, SUITE, settings, lambda _: None)
    assert [o.status for o in outcomes] == ["complete", "complete"], outcomes
    suite_dir = home / "benchmark_output" / "runs" / SUITE
    warehouse = Warehouse(home / "warehouse")
    tidy.ingest_suite(SUITE, suite_dir, warehouse)
    table = warehouse.read(("helm", "run_stats"), SUITE)
    assert table is not None
    return suite_dir, table.to_pandas()


def test_correction_agreement_is_squad_token_f1() -> None:
    # "a cat sat down" vs "the cat sat": articles dropped -> {cat, sat, down} vs {cat, sat}: P 2/3, R 1, F1 0.8
    assert correction_f1(["a cat sat down", "Paris."], ["the cat sat", "paris"]) == pytest.approx([0.8, 1.0])


def test_helm_scores_equal_the_means_in_helms_stats_json(real_suite: tuple[Path, pd.DataFrame]) -> None:
    suite_dir, run_stats = real_suite
    expected = []
    for stats_file in sorted(suite_dir.glob("*/stats.json")):
        for stat in json.loads(stats_file.read_text()):
            name = stat["name"]
            if name["name"] == "num_output_tokens" and name.get("split") == "test" and "perturbation" not in name:
                expected.append(stat["sum"] / stat["count"])
    scores = helm_scores(run_stats, ["num_output_tokens"])
    assert len(expected) == 2
    assert scores.set_index(["model", "metric"]).loc[
        ("simple/model1", "num_output_tokens"), "helm_value"
    ] == pytest.approx(np.mean(expected))


def test_production_scores_and_divergence(real_suite: tuple[Path, pd.DataFrame]) -> None:
    _, run_stats = real_suite
    sample = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3", "r4"],
            "model": "simple/model1",
            "completion": ["write to jane.doe@example.com", "I cannot help", "the answer is 4", "fine"],
            "completion_tokens": [4, 3, 4, 1],
            "refusal": [0.0, 1.0, 0.0, 0.0],
        }
    )
    events = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3", "r3"],
            "model": "simple/model1",
            "kind": ["thumbs", "thumbs", "thumbs", "correction"],
            "value": [1.0, -1.0, 1.0, np.nan],
            "text": [None, None, None, "the answer is 5"],
            "completion": ["", "", "the answer is 4", "the answer is 4"],
        }
    )
    production = production_scores(sample, events).iloc[0]
    assert production["sampled"] == 4 and production["refusal_rate"] == 0.25
    assert production["completion_tokens"] == 3.0 and production["pii_rate"] == 0.25
    assert production["positive_feedback_rate"] == pytest.approx(2 / 3)
    assert production["correction_f1"] == pytest.approx(2 / 3)  # {answer, is, 4} vs {answer, is, 5}
    helm = helm_scores(run_stats, ["num_output_tokens", "f1_score", "no_such_stat"])
    comparisons = [
        OnlineComparison(
            name="length", production="completion_tokens", helm="num_output_tokens", max_gap=0.5, relative=True
        ),
        OnlineComparison(name="missing", production="correction_f1", helm="no_such_stat", max_gap=0.3),
    ]
    table = compare(pd.DataFrame([production]), helm, comparisons).set_index("comparison")
    helm_length = helm.set_index("metric").loc["num_output_tokens", "helm_value"]
    assert table.loc["length", "gap"] == pytest.approx((3.0 - helm_length) / abs(helm_length))
    assert table.loc["length", "diverged"] == (abs((3.0 - helm_length) / helm_length) > 0.5)
    assert table.loc["missing", "diverged"] is None  # no data, never a pass


def test_the_sample_is_per_model_and_deterministic() -> None:
    traffic = pd.DataFrame({"model": ["a"] * 50 + ["b"] * 5, "request_id": [str(i) for i in range(55)]})
    first, again = sample_rows(traffic, 10, seed=3), sample_rows(traffic, 10, seed=3)
    assert first["model"].value_counts().to_dict() == {"a": 10, "b": 5}
    assert first["request_id"].tolist() == again["request_id"].tolist()
