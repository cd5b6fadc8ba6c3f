"""The feedback-derived HELM scenario: selection, PII redaction, near-duplicates, versioning, and a
real helm-run of simple/model1 on it through the plugin."""

import json
from pathlib import Path

import pandas as pd

from governance_assets.lib.feedback.scenario import FOLDER, build_dataset, run_entry, write_dataset
from governance_assets.lib.helm.runner import HelmSettings, run_entries

PLUGIN = "governance_assets.lib.feedback.scenario"


def _event(
    request_id: str, kind: str, prompt: str, value: float | None = None, text: str | None = None
) -> dict[str, object]:
    stamp = pd.Timestamp("2026-11-20T10:00:00Z") + pd.Timedelta(minutes=len(request_id))
    return {"request_id": request_id, "kind": kind, "value": value, "text": text, "prompt": prompt, "timestamp": stamp}


EVENTS = pd.DataFrame(
    [
        _event("r1", "thumbs", "how do I reset my account password please", -1.0),
        _event("r1", "correction", "how do I reset my account password please", text="Open settings, then security."),
        _event("r22", "correction", "how do I reset my account password please now", text="Settings, security."),
        _event("r333", "flag", "mail the invoice to jane.doe@example.com today"),
        _event(
            "r333", "correction", "mail the invoice to jane.doe@example.com today", text="Sent to jane.doe@example.com"
        ),
        _event("r4444", "thumbs", "what is the capital of france", 1.0),
        _event("r55555", "rating", "explain the error in this python function", 2.0),
    ]
)


def test_failures_become_redacted_deduplicated_versioned_examples(tmp_path: Path) -> None:
    dataset = build_dataset(EVENTS, near_duplicate=0.6, max_examples=100)
    # r4444 was liked (not a failure); r1 and r22 are near-duplicates (the newest, r22, kept);
    # r55555 was rated down but has no correction, so it cannot be an instance
    assert [e["id"] for e in dataset.examples] == ["r22", "r333"]
    assert (dataset.candidates, dataset.near_duplicates, dataset.without_correction, dataset.redacted) == (4, 1, 1, 1)
    redacted = dataset.examples[1]
    assert "jane.doe@example.com" not in redacted["input"] + redacted["reference"]
    assert "<EMAIL_ADDRESS>" in redacted["input"]
    assert build_dataset(EVENTS, near_duplicate=0.6, max_examples=100).version == dataset.version
    assert build_dataset(EVENTS.iloc[:-2], near_duplicate=0.99, max_examples=100).version != dataset.version
    path = write_dataset(dataset, tmp_path)
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["r22", "r333"]


def test_helm_runs_simple_model1_on_the_scenario_through_the_plugin(offline_environment: Path) -> None:
    many = pd.DataFrame(
        [
            _event(
                f"q{i}",
                "correction",
                f"question number {i} about topic {i * 7} and detail {i * 13}",
                text=f"answer {i}",
            )
            for i in range(8)
        ]
    )
    dataset = build_dataset(many, near_duplicate=0.9, max_examples=100)
    assert len(dataset.examples) == 8
    write_dataset(dataset, offline_environment.joinpath(*FOLDER))
    settings = HelmSettings(
        output_path=offline_environment / "helm" / "benchmark_output",
        local_path=offline_environment / "helm" / "prod_env",
        max_eval_instances=5,
        plugins=(PLUGIN,),
    )
    entry = f"{run_entry(dataset.version)},model=simple/model1"
    outcomes = run_entries([entry], "feedback-suite", settings, lambda _: None)
    assert [o.status for o in outcomes] == ["complete"], outcomes
    run_dir = next(
        (offline_environment / "helm" / "benchmark_output" / "runs" / "feedback-suite").glob("governance_feedback*")
    )
    stats = json.loads((run_dir / "stats.json").read_text())
    plain = {s["name"]["name"]: s for s in stats if "perturbation" not in s["name"]}
    assert plain["num_instances"]["sum"] == 5 and "exact_match" in plain and "f1_score" in plain
    assert len(json.loads((run_dir / "per_instance_stats.json").read_text())) == 5
    instances = json.loads((run_dir / "scenario_state.json").read_text())["request_states"]
    assert {s["instance"]["references"][0]["output"]["text"] for s in instances} <= {f"answer {i}" for i in range(8)}
