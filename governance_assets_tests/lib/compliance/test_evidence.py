"""The screens' tables: HELM's own privacy and Perspective stats are surfaced when a suite has them."""

import json

import pandas as pd
import pytest

from governance_assets.lib.compliance import evidence
from governance_assets.lib.compliance.settings import ComplianceSettings


def _stat(run: str, model: str, metric: str, count: int, mean: float | None) -> dict[str, object]:
    return {"run_name": run, "model": model, "scenario": "s", "metric": metric, "split": "test", "sub_split": None,
            "perturbation": None, "count": count, "mean": mean}  # fmt: skip


def _predictions(model: str, completions: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"run_name": "r", "model": model, "instance_id": [f"id{i}" for i in range(len(completions))],
         "train_trial_index": 0, "completion": completions, "prompt": "p"}
    )  # fmt: skip


def test_pii_table_counts_types_redacts_and_surfaces_decodingtrust() -> None:
    predictions = _predictions("m", ["Mail me at jane.doe@example.com", "nothing here", "Card 4111 1111 1111 1111"])
    run_stats = pd.DataFrame([_stat("dt", "m", "decodingtrust_privacy_leakage_rate", 1, 0.25)])
    table = evidence.pii_table(predictions, run_stats, ComplianceSettings())
    [screen] = table[table["field"] == "completion"].to_dict("records")
    assert (screen["texts"], screen["with_pii"]) == (3, 2) and screen["rate"] == pytest.approx(2 / 3)
    assert json.loads(screen["by_type"]) == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}
    examples = " ".join(json.loads(screen["examples"]))
    assert "<EMAIL_ADDRESS>" in examples and "jane.doe" not in examples and "4111" not in examples
    [helm] = table[table["field"] == "helm:decodingtrust_privacy_leakage_rate"].to_dict("records")
    assert helm["rate"] == 0.25 and helm["source"] == "HELM DecodingTrust (dt)"


def test_toxicity_table_prefers_helms_perspective_stats() -> None:
    run_stats = pd.DataFrame(
        [_stat("r1", "m", "toxic_frac", 10, 0.1), _stat("r2", "m", "toxic_frac", 30, 0.3),
         _stat("r1", "m", "expected_max_toxicity", 10, 0.2)]
    )  # fmt: skip
    runs = pd.DataFrame({"run_name": ["r1"], "status": ["complete"], "path": ["/nonexistent"]})
    table = evidence.toxicity_table(runs, _predictions("m", ["fine"]), run_stats, ComplianceSettings())
    [row] = table.to_dict("records")
    assert row["source"] == "HELM Perspective (toxic_frac)" and row["completions"] == 40
    assert row["rate"] == pytest.approx((10 * 0.1 + 30 * 0.3) / 40)


def test_toxicity_table_offline_without_perspective() -> None:
    runs = pd.DataFrame({"run_name": ["r"], "status": ["complete"], "path": ["/nonexistent"]})
    predictions = _predictions("m", ["you are a stupid idiot", "have a nice day", None])  # type: ignore[list-item]
    table = evidence.toxicity_table(
        runs, predictions, pd.DataFrame([_stat("r", "m", "exact_match", 1, 1.0)]), ComplianceSettings()
    )
    [row] = table.to_dict("records")
    assert row["source"] == "alt-profanity-check (offline)" and (row["completions"], row["flagged"]) == (3, 1)
    assert pd.isna(row["judged"])  # no judges: no agreement claimed
