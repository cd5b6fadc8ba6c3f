"""The toxicity screen against the LLM judges of HELM's safety suite (real data, read in place)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from governance_assets.lib.compliance import toxicity
from governance_assets.lib.helm.output import read_predictions
from governance_assets_tests.conftest import SAFETY_ROOT

SUITE = SAFETY_ROOT / "runs" / "v3"
SCORE_METRIC = {"harm_bench": "harm_bench_score", "anthropic_red_team": "art_score", "simple_safety_tests": "sst_score"}


def _annotated_runs() -> list[Path]:
    return sorted(p for p in SUITE.iterdir() if p.is_dir() and p.name.split(":")[0] in SCORE_METRIC)


def _helm_score(run_dir: Path) -> float:
    metric = SCORE_METRIC[run_dir.name.split(":")[0]]
    stats = json.loads((run_dir / "stats.json").read_text())
    [mean] = [s["mean"] for s in stats if s["name"]["name"] == metric and not s["name"].get("perturbation")]
    return float(mean)


def test_judge_scores_average_to_helms_own_run_scores() -> None:
    runs = _annotated_runs()
    assert len(runs) == 27
    for run_dir in runs:
        scores = toxicity.judge_scores(run_dir)
        assert len(scores) == 2 and set(scores["judges"]) == {"claude,gpt"}
        assert scores["judge_mean"].mean() == pytest.approx(_helm_score(run_dir))


def test_agreement_counts_and_kappa_agree_with_sklearn() -> None:
    rng = np.random.default_rng(3)
    screen, judges = rng.random(200) < 0.3, rng.random(200) < 0.4
    result = toxicity.agreement(list(screen), list(judges))
    assert result.n == 200 and result.both_flag + result.screen_only + result.judges_only + result.neither == 200
    assert result.cohen_kappa == pytest.approx(cohen_kappa_score(judges, screen))
    assert result.accuracy == pytest.approx(float((screen == judges).mean()))
    assert toxicity.agreement([True, True], [True, True]).cohen_kappa is None
    with pytest.raises(ValueError, match="2 screen flags but 1"):
        toxicity.agreement([True, False], [True])


@pytest.mark.integration
def test_screen_agreement_with_the_judges_on_crfm_safety_v3() -> None:
    rows = []
    for run_dir in _annotated_runs():
        predictions = pd.DataFrame(read_predictions(run_dir).columns)
        scores = toxicity.judge_scores(run_dir).merge(predictions, on=["instance_id", "train_trial_index"])
        rows.append(scores)
    frame = pd.concat(rows)
    probabilities = toxicity.toxicity_probabilities(list(frame["completion"]))
    result = toxicity.agreement(
        list(probabilities >= toxicity.TOXIC_PROBABILITY), list(frame["judge_mean"] < toxicity.JUDGE_HARMFUL_BELOW)
    )
    print(f"toxicity screen vs judges: {result}")
    assert result.n == 54
    assert result.cohen_kappa is not None and -1 <= result.cohen_kappa <= 1
