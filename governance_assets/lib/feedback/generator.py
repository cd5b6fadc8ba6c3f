"""Synthetic experiment traffic and user feedback with known truths, for the demo and tests.

Two experiments, as the default policy declares them:

- `answer_style_v2` (control / concise, 50/50): concise answers get a thumbs up from 31% of users
  instead of 25% (a true effect of +0.06 on `positive_feedback`) and are flagged as often (1%);
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
from governance_assets.lib.monitoring.traffic_generator import generate_traffic


@dataclass(frozen=True)
class Arm:
    experiment: str
    variant: str
    share: float
    thumbs_up: float


ARMS = (
    Arm("answer_style_v2", "control", 0.5, 0.25),
    Arm("answer_style_v2", "concise", 0.5, 0.31),
    Arm("retrieval_rerank", "control", 0.7, 0.25),
    Arm("retrieval_rerank", "rerank", 0.3, 0.25),
)
TRUE_EFFECTS = {"answer_style_v2": 0.06, "retrieval_rerank": 0.0}
"""The true change of `positive_feedback` (challenger - champion) of each experiment."""
EXPERIMENT_SHARES = {"answer_style_v2": 4 / 7, "retrieval_rerank": 3 / 7}
"""Which experiment a request is in."""
THUMBS_DOWN = 0.15
FLAGGED = 0.01
CORRECTED = 0.03
RATED = 0.1
REQUESTS_PER_DAY = 1400
BAD_ROWS = {"malformed": 4, "duplicate": 3, "orphan": 2, "model mismatch": 1}
_EMAIL = "jane.doe@example.com"


def generate(first_day: date, days: int, seed: int = 13) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Traffic records and feedback records for `days` days from `first_day`. The traffic is the
    monitoring generator's undrifted traffic (so it passes the drift tests), each request assigned to
    an experiment and variant in its metadata; the effect is in the feedback only."""
    rng = np.random.default_rng(seed)
    traffic = generate_traffic(first_day, days, REQUESTS_PER_DAY, None, seed=seed)
    traffic["request_id"] = "ab-" + traffic["request_id"]
    experiments = list(EXPERIMENT_SHARES)
    chosen = rng.choice(len(experiments), len(traffic), p=list(EXPERIMENT_SHARES.values()))
    arms: list[Arm] = []
    for index in chosen:
        mine = [arm for arm in ARMS if arm.experiment == experiments[index]]
        arms.append(mine[int(rng.choice(len(mine), p=[arm.share for arm in mine]))])
    traffic["metadata"] = [
        json.dumps(
            json.loads(meta) | {"experiment": arm.experiment, "variant": arm.variant},
            sort_keys=True,
            separators=(",", ":"),
        )
        for meta, arm in zip(traffic["metadata"], arms, strict=True)
    ]
    traffic.loc[traffic.index[::97], "prompt"] = f"please help with my order, reach me at {_EMAIL}"
    feedback: list[dict[str, Any]] = []
    end_of_day = traffic["timestamp"].dt.floor("D") + pd.Timedelta(seconds=86_399)
    delays = pd.to_timedelta(rng.uniform(5, 300, len(traffic)), unit="s")
    stamps = np.minimum(traffic["timestamp"] + delays, end_of_day)
    for row, arm, stamp in zip(traffic.itertuples(), arms, stamps, strict=True):
        base = {
            "timestamp": stamp.isoformat(),
            "request_id": row.request_id,
            "model": row.model,
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
            feedback.append(
                base | {"kind": "correction", "text": f"The answer is: {' '.join(str(row.completion).split()[:8])}"}
            )
    return traffic, pd.DataFrame(feedback)


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


@dataclass(frozen=True)
class Landed:
    """What `write_landing` wrote, and the traffic as a table (`metadata` a JSON string, as stored)."""

    traffic: pd.DataFrame
    traffic_file: Path
    feedback_files: list[Path]


def write_landing(first_day: date, days: int, home: Path, seed: int = 13) -> Landed:
    """The traffic as one JSON Lines file in landing/traffic (`metadata` an object, as the traffic
    schema wants it in JSON Lines), the feedback as one file a day in landing/feedback plus one of
    bad rows on the last day."""
    traffic, feedback = generate(first_day, days, seed)
    records = traffic.assign(
        timestamp=traffic["timestamp"].map(lambda t: t.isoformat()), metadata=traffic["metadata"].map(json.loads)
    ).to_dict("records")
    traffic_file = write_jsonl(records, home / "landing" / "traffic" / f"experiments-{first_day}.jsonl")
    feedback_files = [
        write_jsonl(part.to_dict("records"), home / "landing" / "feedback" / f"feedback-{day}.jsonl")
        for day, part in feedback.groupby(feedback["timestamp"].str.slice(0, 10))
    ]
    last = first_day + timedelta(days=days - 1)
    feedback_files.append(
        write_jsonl(bad_feedback(feedback, last), home / "landing" / "feedback" / f"bad-{last}.jsonl")
    )
    return Landed(traffic, traffic_file, feedback_files)
