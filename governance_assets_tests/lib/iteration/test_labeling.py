"""Active learning: scores by hand, a diverse queue, labelled files validated into versioned
datasets, and a version evaluated by real helm-run through the project's HELM plugin."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.evaluation import load_suite_tables
from governance_assets.lib.helm import runner, tidy
from governance_assets.lib.iteration import labeling
from governance_assets_tests.conftest import MMLU_ROOT


def test_task_strips_the_model_argument() -> None:
    assert labeling.task_of("simple1:model=simple_model1") == "simple1"
    assert labeling.task_of("mmlu:subject=a,method=j,model=groq_x") == "mmlu:subject=a,method=j"
    assert labeling.task_of("mmlu:model=m,subject=a") == "mmlu:subject=a"


def _stats(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [
        {"run_name": f"t:model={model}", "model": model, "instance_id": instance, "train_trial_index": trial,
         "perturbation": None, "metric": "exact_match", "split": "test", "value": value}
        for (model, instance), trials in values.items()
        for trial, value in enumerate(trials)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_scores_by_hand() -> None:
    scores = labeling.instance_scores(
        _stats(
            {
                ("a", "i1"): [1.0],
                ("b", "i1"): [0.0],
                ("a", "i2"): [1.0],
                ("b", "i2"): [1.0],
                ("a", "i3"): [1.0, 0.0],
                ("b", "i3"): [0.0, 0.0],
            }
        ),
        "exact_match",
    ).set_index("instance_id")
    # i1: half the models right -> disagreement 1, failure 0.5, no trial doubt: 0.5 + 0.2·0.5
    assert scores.loc["i1", "score"] == pytest.approx(0.6)
    assert scores.loc["i2", "score"] == pytest.approx(0.0)  # everyone right: nothing to learn
    # i3: model a right on 1 of 2 trials (doubt 1), b never: right 0.25 -> disagreement 0.5, failure 0.75
    assert scores.loc["i3", "score"] == pytest.approx(0.5 * 0.5 + 0.3 * 0.5 + 0.2 * 0.75)
    assert json.loads(scores.loc["i3", "model_outcomes"]) == {"a": 0.5, "b": 0.0}


def test_the_queue_is_diverse_not_ten_copies_of_one_case() -> None:
    candidates = pd.DataFrame(
        {
            "task": ["t1"] * 10 + ["t2", "t3"],
            "sub_split": [""] * 12,
            "input": [f"What is the capital of country number {i}?" for i in range(10)]
            + ["Translate: hello", "Add 2 and 3"],
            "score": [0.9] * 10 + [0.5, 0.4],
        }
    )
    picked = labeling.select_queue(candidates, 4)
    assert set(picked["task"]) == {"t1", "t2", "t3"}
    duplicates = pd.DataFrame(
        {
            "task": ["a", "b", "c"],
            "sub_split": ["", "", ""],
            "input": ["same text here", "same text here!", "other"],
            "score": [0.9, 0.8, 0.1],
        }
    )
    assert list(labeling.select_queue(duplicates, 3)["input"]) == ["same text here", "other"]


def test_queue_on_real_mmlu_and_negative_traffic(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w")
    tidy.ingest_suite("v1", MMLU_ROOT / "runs" / "v1", warehouse)
    tables = load_suite_tables(warehouse, "v1")
    assert tables is not None
    traffic = pd.DataFrame(
        {
            "request_id": ["r1", "r2"],
            "model": ["m", "m"],
            "prompt": ["p1", "p2"],
            "completion": ["c1", "c2"],
            "feedback": [-1.0, 0.5],
        }
    )
    queue = labeling.labeling_queue(tables.instance_stats, tables.predictions, "exact_match", 12, traffic)
    assert 0 < len(queue) <= 12 and list(queue.columns) == list(labeling.QUEUE_FIELDS)
    assert (
        "r1" not in set(queue["instance_id"]) or queue.loc[queue["instance_id"] == "r1", "source"].item() == "traffic"
    )
    assert queue["item_id"].is_unique and (queue["label"] == "").all()
    suite_items = queue[queue["source"] == "suite"]
    assert len(suite_items) and all(
        "disagreement" in reason or "failure" in reason for reason in suite_items["reasons"]
    )
    jsonl, csv_path = labeling.export_queue(queue, tmp_path / "queue")
    assert len(jsonl.read_text().splitlines()) == len(queue) and len(pd.read_csv(csv_path)) == len(queue)


def test_labelled_files_are_validated_and_versioned(tmp_path: Path) -> None:
    good = tmp_path / "labels.jsonl"
    good.write_text(
        json.dumps({"item_id": "a", "input": "2+2?", "label": "4"}) + "\n"
        + json.dumps({"item_id": "b", "input": "3+3?", "label": ""}) + "\n"
        + "{not json\n"
        + json.dumps({"item_id": "a", "input": "2+2?", "label": "four"}) + "\n"
    )  # fmt: skip
    batch = labeling.read_labels(good)
    assert batch.accepted == [{"item_id": "a", "input": "2+2?", "label": "four", "task": "", "source": ""}]
    assert [(r["row"], r["reason"]) for r in batch.rejected] == [
        (2, "empty or missing label"),
        (3, "line 3: invalid JSON: Expecting property name enclosed in double quotes"),
    ]
    folder = tmp_path / "dataset"
    assert labeling.add_to_dataset(folder, batch, "labels.jsonl:1") == (1, True)
    assert labeling.add_to_dataset(folder, batch, "labels.jsonl:1") == (1, False)  # nothing new: no new version
    more = labeling.LabelBatch([{"item_id": "c", "input": "1+1?", "label": "2", "task": "", "source": ""}], [])
    assert labeling.add_to_dataset(folder, more, "more.csv:2") == (2, True)
    assert len(labeling.labelled_instances(folder, 1)) == 1 and len(labeling.labelled_instances(folder, 2)) == 2
    assert labeling.consumed_sources(folder) == {"labels.jsonl:1", "more.csv:2"}
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match=r"x\.txt: a labelled file is \.jsonl or \.csv"):
        labeling.read_labels(tmp_path / "x.txt")


@pytest.mark.integration
def test_a_labelled_version_is_a_helm_scenario_that_simple_model1_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOVERNANCE_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "iteration" / "scenarios" / "labeled"
    items = [
        {"item_id": f"i{n}", "input": f"Repeat the word number {n}", "label": f"w{n}", "task": "t", "source": "suite"}
        for n in range(6)
    ]
    assert labeling.add_to_dataset(folder, labeling.LabelBatch(items, []), "seed")[0] == 1
    settings = runner.HelmSettings(
        tmp_path / "out",
        tmp_path / "prod_env",
        max_eval_instances=10,
        plugins=("governance_assets.lib.iteration.labeled_scenario",),
    )
    [outcome] = runner.run_entries(
        ["governance_labeled:version=1,model=simple/model1"], "lab", settings, lambda line: None
    )
    assert outcome.status == "complete", outcome.error
    warehouse = Warehouse(tmp_path / "w")
    tidy.ingest_suite("lab", tmp_path / "out" / "runs" / "lab", warehouse)
    tables = load_suite_tables(warehouse, "lab")
    assert tables is not None and not tables.unreadable
    plain = tables.predictions[tables.predictions["perturbation"].isna()]
    assert sorted(plain["instance_id"]) == sorted(f"label_i{n}" for n in range(6))
    assert set(np.concatenate(plain["correct_references"].to_numpy())) == {f"w{n}" for n in range(6)}
