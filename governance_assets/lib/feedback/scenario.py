"""Production failures back into the benchmark: the feedback-derived HELM scenario.

`build_dataset` takes the joined feedback (`feedback/events`) and keeps the requests users rated
down (thumbs down, rating 1-2), flagged or corrected; personal data in prompts and corrections is
redacted with the compliance group's PII screen; near-duplicate prompts (word 3-shingle Jaccard at
or above `near_duplicate`) are dropped, the newest kept. Requests with a user correction become
instances whose correct reference is the correction; the others are counted but left out, since a
HELM instance needs a correct reference. The dataset is versioned by a digest of its content and
written once to `<folder>/<version>.jsonl`.

This module is also a HELM plugin (`helm-run --plugins governance_assets.lib.feedback.scenario`):
the run entry `governance_feedback:version=<version>` evaluates a model on that dataset, read from
`$GOVERNANCE_HOME/feedback/scenario/<version>.jsonl`, with exact match, quasi exact match and F1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from helm.benchmark.adaptation.common_adapter_specs import get_generation_adapter_spec
from helm.benchmark.metrics.common_metric_specs import get_basic_metric_specs
from helm.benchmark.run_spec import RunSpec, run_spec_function
from helm.benchmark.scenarios.scenario import (
    CORRECT_TAG,
    TEST_SPLIT,
    Input,
    Instance,
    Output,
    Reference,
    Scenario,
    ScenarioSpec,
)

from governance_assets.lib.compliance.pii import redact, scan
from governance_assets.lib.core.storage import DEFAULT_HOME, safe_component, write_text_atomic

SCENARIO_NAME = "governance_feedback"
FOLDER = ("feedback", "scenario")
_WORD = re.compile(r"[a-z0-9]+")


def _redacted(text: str) -> tuple[str, bool]:
    findings = scan(text)
    return (redact(text, findings), True) if findings else (text, False)


def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return frozenset(tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2)))


@dataclass(frozen=True)
class Dataset:
    """What `build_dataset` kept and why the rest went."""

    version: str
    examples: list[dict[str, Any]]
    candidates: int
    near_duplicates: int
    redacted: int
    without_correction: int


def build_dataset(events: pd.DataFrame, near_duplicate: float, max_examples: int) -> Dataset:
    """The scenario's examples from joined feedback (`request_id`, `timestamp`, `kind`, `value`, `text`, `prompt`)."""
    bad = events[
        ((events["kind"] == "thumbs") & (events["value"] < 0))
        | ((events["kind"] == "rating") & (events["value"] <= 2))
        | events["kind"].isin(["flag", "correction"])
    ]
    corrections = events[events["kind"] == "correction"].sort_values("timestamp").groupby("request_id")["text"].last()
    requests = bad.sort_values("timestamp", ascending=False).drop_duplicates("request_id")
    kept: list[dict[str, Any]] = []
    kept_shingles: list[frozenset[tuple[str, ...]]] = []
    near, redacted, uncorrected = 0, 0, 0
    for row in requests.itertuples():
        shingles = _shingles(str(row.prompt))
        if any(len(shingles & other) / len(shingles | other) >= near_duplicate for other in kept_shingles):
            near += 1
            continue
        correction = corrections.get(row.request_id)
        if correction is None:
            uncorrected += 1
            continue
        prompt, prompt_redacted = _redacted(str(row.prompt))
        reference, reference_redacted = _redacted(str(correction))
        redacted += prompt_redacted or reference_redacted
        kept.append({"id": str(row.request_id), "input": prompt, "reference": reference})
        kept_shingles.append(shingles)
        if len(kept) == max_examples:
            break
    kept.sort(key=lambda example: example["id"])
    version = hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]
    return Dataset(version, kept, len(requests), near, redacted, uncorrected)


def write_dataset(dataset: Dataset, folder: Path) -> Path:
    """`<folder>/<version>.jsonl` (written once: a version's content never changes)."""
    path = folder / f"{safe_component(dataset.version, 'scenario version')}.jsonl"
    if not path.exists():
        write_text_atomic(path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in dataset.examples))
    return path


def run_entry(version: str) -> str:
    """The HELM run entry (without the model) that evaluates a model on this version."""
    return f"{SCENARIO_NAME}:version={version}"


class GovernanceFeedbackScenario(Scenario):
    """Production requests users rated down, flagged or corrected; the correction is the reference."""

    name = SCENARIO_NAME
    description = "Production failures with user corrections as references (PII redacted, near-duplicates removed)."
    tags = ["feedback", "production"]

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = safe_component(version, "scenario version")

    def get_instances(self, output_path: str) -> list[Instance]:
        home = Path(os.environ.get("GOVERNANCE_HOME") or DEFAULT_HOME)
        path = home.joinpath(*FOLDER, f"{self.version}.jsonl")
        examples = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        return [
            Instance(
                input=Input(text=example["input"]),
                references=[Reference(Output(text=example["reference"]), tags=[CORRECT_TAG])],
                split=TEST_SPLIT,
                id=f"id_{example['id']}",
            )
            for example in examples
        ]


@run_spec_function(SCENARIO_NAME)
def get_governance_feedback_spec(version: str) -> RunSpec:
    """Generation judged by exact match, quasi exact match and F1 against the user's correction."""
    return RunSpec(
        name=f"{SCENARIO_NAME}:version={version}",
        scenario_spec=ScenarioSpec(class_name=f"{__name__}.GovernanceFeedbackScenario", args={"version": version}),
        adapter_spec=get_generation_adapter_spec(max_train_instances=0, max_tokens=100),
        metric_specs=get_basic_metric_specs(["exact_match", "quasi_exact_match", "f1_score"]),
        groups=[SCENARIO_NAME],
    )
