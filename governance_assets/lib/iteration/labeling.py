"""Active learning: which instances a person should label next, and labelled files turned into a
versioned dataset that the HELM plugin `labeled_scenario` evaluates.

An instance of a task (a run entry without its model) is scored by what its label would teach:
- disagreement: how evenly the models split between right and wrong on it (1 when half are right);
- uncertainty: how much a model's train trials disagree with each other (0 with one trial);
- failure: how many models get it wrong (all wrong may also mean a wrong reference).
score = 0.5·disagreement + 0.3·uncertainty + 0.2·failure. Production traffic with negative
feedback joins the queue scored by how negative it was. The queue is filled greedily by score
with diversity: each item already taken from the same task and sub-split halves the next one's
score, and an input whose character trigrams overlap a taken one's by 80% or more is skipped.
Pure pandas: no Dagster.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from governance_assets.lib.core.storage import write_text_atomic

WEIGHTS = {"disagreement": 0.5, "uncertainty": 0.3, "failure": 0.2}
NEAR_DUPLICATE = 0.8
QUEUE_FIELDS = (
    "item_id",
    "source",
    "task",
    "instance_id",
    "input",
    "references",
    "completion",
    "score",
    "reasons",
    "label",
)
REQUIRED_LABEL_FIELDS = ("item_id", "input", "label")
_MODEL_ARG = re.compile(r"(^|,|:)model=[^,]*")


def task_of(run_name: str) -> str:
    """The run entry without its model: the same task across models (`simple1:model=a` -> `simple1`)."""
    stripped = _MODEL_ARG.sub(lambda m: m.group(1) if m.group(1) == ":" else "", run_name)
    return stripped.replace(":,", ":").rstrip(":,")


def instance_scores(instance_stats: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (task, instance): the three signals and the score, from unperturbed 0/1 values of `metric`."""
    rows = instance_stats[(instance_stats["metric"] == metric) & instance_stats["perturbation"].isna()]
    rows = rows.dropna(subset=["value"]).assign(
        task=lambda f: f["run_name"].astype(str).map(task_of), value=lambda f: f["value"].astype("float64")
    )
    per_model = (
        rows.groupby(["task", "instance_id", "model"], observed=True)["value"].mean().rename("right").reset_index()
    )
    per_model["trial_doubt"] = 1.0 - (2.0 * per_model["right"] - 1.0).abs()
    grouped = per_model.groupby(["task", "instance_id"], observed=True)
    scores = grouped.agg(
        right=("right", "mean"), uncertainty=("trial_doubt", "mean"), models=("model", "nunique")
    ).reset_index()
    scores["disagreement"] = 1.0 - (2.0 * scores["right"] - 1.0).abs()
    scores["failure"] = 1.0 - scores["right"]
    scores["score"] = sum(weight * scores[name] for name, weight in WEIGHTS.items())
    outcomes: dict[tuple[str, str], dict[str, float]] = {}
    for task, instance, model, right in zip(
        per_model["task"], per_model["instance_id"], per_model["model"], per_model["right"], strict=True
    ):
        outcomes.setdefault((str(task), str(instance)), {})[str(model)] = round(float(right), 3)
    scores["model_outcomes"] = [
        json.dumps(outcomes[(str(t), str(i))]) for t, i in zip(scores["task"], scores["instance_id"], strict=True)
    ]
    return scores


def _trigrams(text: str) -> set[str]:
    text = " ".join(text.lower().split())
    return {text[i : i + 3] for i in range(max(1, len(text) - 2))}


def _reasons(row: Mapping[Any, Any]) -> str:
    parts = [f"{name} {row[name]:.2f}" for name in WEIGHTS if row.get(name, 0) > 0]
    return ", ".join(parts) + (f"; model outcomes {row['model_outcomes']}" if row.get("model_outcomes") else "")


def select_queue(candidates: pd.DataFrame, size: int) -> pd.DataFrame:
    """Greedy, diverse selection (see the module docstring) of at most `size` candidates with
    columns `task`, `sub_split`, `input`, `score`."""
    taken: list[int] = []
    taken_grams: list[set[str]] = []
    per_group: dict[tuple[str, str], int] = {}
    remaining = candidates.reset_index(drop=True)
    grams = [_trigrams(str(text)) for text in remaining["input"]]
    while len(taken) < size:
        best, best_score = None, 0.0
        for index, row in remaining.iterrows():
            if index in taken:
                continue
            score = float(row["score"]) * 0.5 ** per_group.get((str(row["task"]), str(row["sub_split"])), 0)
            if score > best_score:
                best, best_score = int(index), score  # type: ignore[call-overload]
        if best is None:
            break
        if any(len(grams[best] & other) / max(1, len(grams[best] | other)) >= NEAR_DUPLICATE for other in taken_grams):
            remaining.loc[best, "score"] = 0.0  # a near duplicate of a taken item: never picked
            continue
        taken.append(best)
        taken_grams.append(grams[best])
        key = (str(remaining.loc[best, "task"]), str(remaining.loc[best, "sub_split"]))
        per_group[key] = per_group.get(key, 0) + 1
    return remaining.loc[taken].reset_index(drop=True)


def labeling_queue(
    instance_stats: pd.DataFrame,
    predictions: pd.DataFrame,
    metric: str,
    size: int,
    traffic: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The queue (`QUEUE_FIELDS`, label empty) from a suite's tables and, optionally, traffic
    records with negative feedback."""
    scores = instance_scores(instance_stats, metric)
    plain = predictions[predictions["perturbation"].isna()].assign(
        task=lambda f: f["run_name"].astype(str).map(task_of)
    )
    first = plain.drop_duplicates(["task", "instance_id"])[
        ["task", "instance_id", "input", "sub_split", "correct_references", "completion"]
    ]
    candidates = scores.merge(first, on=["task", "instance_id"], how="inner")
    candidates = candidates[candidates["score"] > 0].assign(source="suite")
    candidates["reasons"] = [_reasons(row) for row in candidates.to_dict("records")]
    candidates["references"] = candidates["correct_references"].map(
        lambda refs: json.dumps(list(refs) if refs is not None else [])
    )
    if (
        traffic is not None
        and len(traffic)
        and {"feedback", "prompt", "completion", "request_id"} <= set(traffic.columns)
    ):
        negative = traffic[traffic["feedback"].astype("float64") < 0]
        candidates = pd.concat(
            [
                candidates,
                pd.DataFrame(
                    {
                        "source": "traffic",
                        "task": "production:" + negative.get("model", pd.Series("?", index=negative.index)).astype(str),
                        "instance_id": negative["request_id"].astype(str),
                        "input": negative["prompt"].astype(str),
                        "sub_split": "",
                        "completion": negative["completion"].astype(str),
                        "references": "[]",
                        "score": -negative["feedback"].astype("float64"),
                        "reasons": "negative user feedback " + negative["feedback"].astype(str),
                    }
                ),
            ],
            ignore_index=True,
        )
    queue = select_queue(candidates.fillna({"sub_split": ""}), size)
    queue["item_id"] = [
        hashlib.sha256(f"{r['source']}|{r['task']}|{r['instance_id']}".encode()).hexdigest()[:16]
        for r in queue.to_dict("records")
    ]
    queue["label"] = ""
    return queue[list(QUEUE_FIELDS)]


def export_queue(queue: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    """The queue as `queue.jsonl` and `queue.csv` (both written atomically) for a labelling tool."""
    jsonl = "".join(
        json.dumps({k: (v if not isinstance(v, float) else round(v, 4)) for k, v in row.items()}) + "\n"
        for row in queue.to_dict("records")
    )
    buffer = io.StringIO()
    queue.to_csv(buffer, index=False, quoting=csv.QUOTE_NONNUMERIC)
    write_text_atomic(folder / "queue.jsonl", jsonl)
    write_text_atomic(folder / "queue.csv", buffer.getvalue())
    return folder / "queue.jsonl", folder / "queue.csv"


@dataclass(frozen=True)
class LabelBatch:
    """What a labelled file gave: accepted rows and rejected ones with the reason."""

    accepted: list[dict[str, str]]
    rejected: list[dict[str, Any]]


def read_labels(path: Path) -> LabelBatch:
    """Validate a labelled file (JSON Lines or CSV, as exported, with `label` filled in): every row
    needs a non-empty `item_id`, `input` and `label`; an item labelled twice keeps its last label.
    Bad rows are rejected with their line and reason; an unreadable file raises ValueError naming it."""
    text = path.read_text("utf-8")
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    rows.append(ValueError(f"line {number}: invalid JSON: {error.msg}"))
    elif path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        raise ValueError(f"{path}: a labelled file is .jsonl or .csv")
    accepted: dict[str, dict[str, str]] = {}
    rejected = []
    for number, row in enumerate(rows, start=1):
        if isinstance(row, ValueError) or not isinstance(row, dict):
            rejected.append(
                {
                    "file": path.name,
                    "row": number,
                    "reason": str(row) if isinstance(row, ValueError) else "not an object",
                }
            )
            continue
        missing = [field for field in REQUIRED_LABEL_FIELDS if not str(row.get(field) or "").strip()]
        if missing:
            rejected.append({"file": path.name, "row": number, "reason": f"empty or missing {', '.join(missing)}"})
            continue
        accepted[str(row["item_id"])] = {
            "item_id": str(row["item_id"]),
            "input": str(row["input"]),
            "label": str(row["label"]).strip(),
            "task": str(row.get("task") or ""),
            "source": str(row.get("source") or ""),
        }
    return LabelBatch(list(accepted.values()), rejected)


def _manifest(folder: Path) -> dict[str, Any]:
    """The dataset's manifest: each version's source, item count and content hash."""
    path = folder / "manifest.json"
    manifest: dict[str, Any] = json.loads(path.read_text("utf-8")) if path.exists() else {"versions": []}
    return manifest


def add_to_dataset(folder: Path, batch: LabelBatch, source: str) -> tuple[int, bool]:
    """Merge accepted labels into the dataset's latest version and write the next version
    (`v<N>.jsonl`, the previous ones kept) when anything changed; the manifest records each
    version's sources and content hash. Returns the latest version and whether it is new."""
    manifest = _manifest(folder)
    latest = latest_version(folder)
    items: dict[str, dict[str, str]] = {}
    if latest:
        for line in (folder / f"v{latest}.jsonl").read_text("utf-8").splitlines():
            item = json.loads(line)
            items[item["item_id"]] = item
    before = dict(items)
    items.update({row["item_id"]: row for row in batch.accepted})
    if items == before:
        return latest, False
    version = latest + 1
    body = "".join(json.dumps(items[key], sort_keys=True) + "\n" for key in sorted(items))
    write_text_atomic(folder / f"v{version}.jsonl", body)
    manifest["versions"].append(
        {"version": version, "source": source, "items": len(items), "sha256": hashlib.sha256(body.encode()).hexdigest()}
    )
    write_text_atomic(folder / "manifest.json", json.dumps(manifest, indent=2))
    return version, True


def latest_version(folder: Path) -> int:
    """The dataset's latest version (0 when nothing was labelled yet)."""
    return len(_manifest(folder)["versions"])


def labelled_instances(folder: Path, version: int) -> list[dict[str, str]]:
    """The items of one dataset version."""
    return [json.loads(line) for line in (folder / f"v{version}.jsonl").read_text("utf-8").splitlines() if line.strip()]


def consumed_sources(folder: Path) -> set[str]:
    """Sources (file name and digest) already merged into the dataset."""
    return {str(entry["source"]) for entry in _manifest(folder)["versions"]}


def source_id(path: Path) -> str:
    """A labelled file's identity: its name and a digest of its bytes."""
    return f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
