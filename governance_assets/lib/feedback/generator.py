"""Synthetic experiment traffic and user feedback with known truths, for the demo and tests.

Two experiments, as the default policy declares them:

- `answer_style_v2` (control / concise, 50/50): concise answers get a thumbs up from 31% of users
  instead of 25% (a true effect of +0.06 on `positive_feedback`), are shorter and a little faster,
  and are flagged as often (1%);
- `retrieval_rerank` (control / rerank, 70/30): no effect on anything.

Traffic records follow the schema documented in `governance_assets/lib/monitoring/traffic.py`
(the variant in `metadata`); feedback records the one in `events.py`. `bad_feedback` adds rows that
must be quarantined: malformed rows, duplicates, orphans and a model mismatch, in known numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from governance_assets.lib.core.storage import write_text_atomic


@dataclass(frozen=True)
class Arm:
    experiment: str
    variant: str
    model: str
    share: float
    thumbs_up: float
    completion_words: int
    latency_ms: float


ARMS = (
    Arm("answer_style_v2", "control", "assistant-v1", 0.5, 0.25, 60, 900.0),
    Arm("answer_style_v2", "concise", "assistant-v2", 0.5, 0.31, 35, 800.0),
    Arm("retrieval_rerank", "control", "assistant-v1", 0.7, 0.25, 60, 900.0),
    Arm("retrieval_rerank", "rerank", "assistant-v1", 0.3, 0.25, 60, 900.0),
)
TRUE_EFFECTS = {"answer_style_v2": 0.06, "retrieval_rerank": 0.0}
"""The true change of `positive_feedback` (challenger - champion) of each experiment."""
THUMBS_DOWN = 0.15
FLAGGED = 0.01
CORRECTED = 0.03
RATED = 0.1
EXPERIMENT_REQUESTS = {"answer_style_v2": 800, "retrieval_rerank": 600}
"""Requests a day per experiment."""
BAD_ROWS = {"malformed": 4, "duplicate": 3, "orphan": 2, "model mismatch": 1}
_EMAIL = "jane.doe@example.com"


def _text(rng: np.random.Generator, words: int) -> str:
    vocabulary = ["the", "answer", "is", "model", "order", "account", "steps", "first", "then", "check", "invoice"]
    return " ".join(rng.choice(vocabulary, max(3, int(rng.poisson(words)))))


def generate(first_day: date, days: int, seed: int = 13) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Traffic records and feedback records for `days` days from `first_day`."""
    rng = np.random.default_rng(seed)
    traffic: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for experiment, count in EXPERIMENT_REQUESTS.items():
            arms = [arm for arm in ARMS if arm.experiment == experiment]
            chosen = rng.choice(len(arms), count, p=[arm.share for arm in arms])
            for i, index in enumerate(chosen):
                arm = arms[index]
                stamp = start + timedelta(seconds=float(rng.uniform(0, 86_000)))
                request_id = f"{experiment}-{day.isoformat()}-{i:05d}"
                completion = _text(rng, arm.completion_words)
                traffic.append(
                    {
                        "timestamp": stamp.isoformat(),
                        "model": arm.model,
                        "request_id": request_id,
                        "prompt": f"please help with my order, reach me at {_EMAIL}" if i % 97 == 0 else _text(rng, 12),
                        "completion": "I cannot help with that." if rng.random() < 0.03 else completion,
                        "latency_ms": float(rng.lognormal(np.log(arm.latency_ms), 0.3)),
                        "prompt_tokens": int(rng.integers(5, 60)),
                        "completion_tokens": len(completion.split()),
                        "feedback": None,
                        "metadata": json.dumps({"experiment": experiment, "variant": arm.variant}, sort_keys=True),
                    }
                )
                after = stamp + timedelta(seconds=float(rng.uniform(5, 300)))
                after = min(after, start + timedelta(seconds=86_399))
                base = {
                    "timestamp": after.isoformat(),
                    "request_id": request_id,
                    "model": arm.model,
                    "variant": arm.variant,
                }
                draw = rng.random()
                if draw < arm.thumbs_up:
                    feedback.append(base | {"kind": "thumbs", "value": 1})
                elif draw < arm.thumbs_up + THUMBS_DOWN:
                    feedback.append(base | {"kind": "thumbs", "value": -1})
                if rng.random() < RATED:
                    feedback.append(base | {"kind": "rating", "value": int(rng.integers(1, 6))})
                if rng.random() < FLAGGED:
                    feedback.append(base | {"kind": "flag", "text": "wrong or unsafe answer"})
                if rng.random() < CORRECTED:
                    feedback.append(base | {"kind": "correction", "text": f"The answer is {_text(rng, 8)}"})
    return pd.DataFrame(traffic), pd.DataFrame(feedback)


def bad_feedback(feedback: pd.DataFrame, day: date) -> list[dict[str, Any]]:
    """Rows that must be quarantined, `BAD_ROWS` of each kind (on `day`, whose traffic exists)."""
    stamp = datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC).isoformat()
    of_day = feedback[feedback["timestamp"].str.startswith(day.isoformat())]
    thumbs = of_day[of_day["kind"] == "thumbs"].head(BAD_ROWS["duplicate"] + BAD_ROWS["model mismatch"])
    rows: list[dict[str, Any]] = [
        {"timestamp": stamp, "request_id": "x", "model": "assistant-v1", "kind": "thumbs", "value": 3},
        {"timestamp": "2026-11-27T10:00:00", "request_id": "x", "model": "assistant-v1", "kind": "flag"},
        {"timestamp": stamp, "request_id": "x", "model": "assistant-v1", "kind": "like"},
        {"timestamp": stamp, "request_id": "x", "model": "assistant-v1", "kind": "correction"},
    ]
    for row in thumbs.head(BAD_ROWS["duplicate"]).to_dict("records"):
        rows.append({str(k): v for k, v in row.items() if not _is_missing(v)} | {"timestamp": stamp})
    rows += [
        {"timestamp": stamp, "request_id": f"unknown-{i}", "model": "assistant-v1", "kind": "thumbs", "value": 1}
        for i in range(BAD_ROWS["orphan"])
    ]
    for row in thumbs.tail(BAD_ROWS["model mismatch"]).to_dict("records"):
        rows.append({"timestamp": stamp, "request_id": row["request_id"], "model": "assistant-v9", "kind": "flag"})
    return rows


def write_jsonl(records: Sequence[Mapping[Any, Any]], path: Path) -> Path:
    """One JSON object a line, written to a temporary name and renamed (as a serving system should)."""
    lines = "".join(json.dumps({k: v for k, v in r.items() if not _is_missing(v)}) + "\n" for r in records)
    write_text_atomic(path, lines)
    return path


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def write_landing(first_day: date, days: int, home: Path, seed: int = 13) -> tuple[list[Path], list[Path]]:
    """The traffic as one JSON Lines file in landing/traffic, the feedback as one file a day in
    landing/feedback plus one of bad rows on the last day; returns (traffic files, feedback files)."""
    traffic, feedback = generate(first_day, days, seed)
    traffic_file = write_jsonl(
        traffic.to_dict("records"), home / "landing" / "traffic" / f"experiments-{first_day}.jsonl"
    )
    feedback_files = []
    day_of = feedback["timestamp"].str.slice(0, 10)
    for day, part in feedback.groupby(day_of):
        feedback_files.append(
            write_jsonl(part.to_dict("records"), home / "landing" / "feedback" / f"feedback-{day}.jsonl")
        )
    last = first_day + timedelta(days=days - 1)
    feedback_files.append(
        write_jsonl(bad_feedback(feedback, last), home / "landing" / "feedback" / f"bad-{last}.jsonl")
    )
    return [traffic_file], feedback_files
