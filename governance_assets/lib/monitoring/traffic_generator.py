"""Synthetic production traffic with a drift injected on a known day, for the demo and tests.

Before `drift_day` every day is drawn from the same distributions (prompt and completion lengths,
token counts, lognormal latency, ~3% refusals, mostly English). From `drift_day` on: completions are
~60% longer, latency doubles, ~15% of completions are refusals and the language mix moves away
from English, so a drift detector flags that day and none before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from governance_assets.lib.core.storage import atomic_path
from governance_assets.lib.monitoring.traffic import FIELDS, TRAFFIC_SCHEMA, canonical_metadata

_WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "data",
    "report",
    "summary",
    "table",
    "user",
    "customer",
    "order",
    "account",
    "invoice",
    "please",
    "explain",
    "how",
    "why",
    "what",
    "when",
    "where",
    "list",
    "steps",
    "example",
    "code",
    "python",
    "function",
    "error",
    "fix",
    "translate",
    "email",
    "draft",
    "write",
    "short",
    "long",
    "detailed",
    "policy",
    "refund",
    "shipping",
    "price",
    "product",
    "feature",
    "compare",
    "difference",
    "between",
    "best",
    "practice",
    "security",
    "password",
    "reset",
    "login",
    "issue",
    "help",
    "thanks",
]
_REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request.",
    "Sorry, I am unable to provide that information.",
)
_LANGUAGES = ("en", "es", "fr", "de", "zh")
_LANGUAGE_SHARES = {False: (0.85, 0.05, 0.05, 0.04, 0.01), True: (0.45, 0.25, 0.10, 0.05, 0.15)}
_SEGMENTS = ("free", "pro", "enterprise")


def generate_traffic(
    start: date,
    days: int,
    rows_per_day: int,
    drift_day: date | None,
    seed: int = 0,
    models: Sequence[str] = ("simple/model1",),
) -> pd.DataFrame:
    """`days` × `rows_per_day` records in `TRAFFIC_SCHEMA` columns, sorted by time; deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    frames = [
        _day(
            rng,
            start + timedelta(days=d),
            rows_per_day,
            drift_day is not None and start + timedelta(days=d) >= drift_day,
            models,
        )
        for d in range(days)
    ]
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in FIELDS})
    return pd.concat(frames, ignore_index=True)


def _dtype(name: str) -> Any:
    return {"timestamp": "datetime64[us, UTC]", "latency_ms": float, "feedback": float}.get(
        name, "int64" if name.endswith("_tokens") else object
    )


def _texts(rng: np.random.Generator, counts: np.ndarray[Any, Any]) -> list[str]:
    """One text of `counts[i]` random words per row."""
    words = np.array(_WORDS, dtype=object)[rng.integers(len(_WORDS), size=int(counts.sum()))].tolist()
    ends = np.cumsum(counts)
    return [" ".join(words[e - c : e]) for c, e in zip(counts.tolist(), ends.tolist(), strict=True)]


def _day(rng: np.random.Generator, day: date, n: int, drifted: bool, models: Sequence[str]) -> pd.DataFrame:
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    offsets = np.sort(rng.integers(0, 86_400_000_000, size=n))
    timestamps = pd.DatetimeIndex(
        np.datetime64(midnight.replace(tzinfo=None), "us") + offsets.astype("timedelta64[us]")
    )
    prompt_words = np.clip(rng.lognormal(np.log(25), 0.5, n), 3, 400).astype(int)
    completion_words = np.clip(rng.lognormal(np.log(60), 0.5, n) * (1.6 if drifted else 1.0), 1, 2000).astype(int)
    refusal = rng.random(n) < (0.15 if drifted else 0.03)
    prompts = _texts(rng, prompt_words)
    completions = _texts(rng, completion_words)
    for i in np.flatnonzero(refusal).tolist():
        completions[i] = _REFUSALS[int(rng.integers(len(_REFUSALS)))]
    completion_count = np.array([len(c.split()) for c in completions], dtype=np.int64)
    prompt_tokens = np.round(prompt_words * 1.3).astype(np.int64) + rng.integers(0, 3, n)
    completion_tokens = np.round(completion_count * 1.3).astype(np.int64) + rng.integers(0, 3, n)
    latency = (120 + 8.0 * completion_tokens) * rng.lognormal(0, 0.3, n) * (2.0 if drifted else 1.0)
    has_feedback = rng.random(n) < 0.3
    thumbs = np.where(rng.random(n) < (0.6 if drifted else 0.8), 1.0, -1.0)
    languages = rng.choice(_LANGUAGES, size=n, p=_LANGUAGE_SHARES[drifted])
    segments = rng.choice(_SEGMENTS, size=n, p=(0.6, 0.3, 0.1))
    return pd.DataFrame(
        {
            "timestamp": timestamps.tz_localize("UTC"),
            "model": rng.choice(list(models), size=n).astype(object),
            "request_id": [f"req-{day:%Y%m%d}-{i:07d}" for i in range(n)],
            "prompt": prompts,
            "completion": completions,
            "latency_ms": np.round(latency, 3),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "feedback": np.where(has_feedback, thumbs, np.nan),
            "metadata": [
                canonical_metadata({"language": str(lang), "user_segment": str(seg)})
                for lang, seg in zip(languages, segments, strict=True)
            ],
        }
    )


def write_landing_files(
    frame: pd.DataFrame,
    folder: Path,
    fmt: Literal["jsonl", "csv", "parquet"] = "jsonl",
    per_day: bool = True,
) -> list[Path]:
    """Write `frame` as `traffic-<day>.<fmt>` files (one per UTC day) or one `traffic-<first>_<last>` file.

    Each file is written to a temporary `.…tmp` name beside it and renamed, so a sensor never sees
    half a file. Returns the paths in day order."""
    if frame.empty:
        return []
    days = frame["timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    if per_day:
        groups = [(str(day), frame[days == day]) for day in sorted(days.unique())]
    else:
        groups = [(f"{days.min()}_{days.max()}", frame)]
    paths = []
    for name, rows in groups:
        path = folder / f"traffic-{name}.{fmt}"
        with atomic_path(path) as tmp:
            _write(rows, tmp, fmt)
        paths.append(path)
    return paths


def _write(frame: pd.DataFrame, path: Path, fmt: Literal["jsonl", "csv", "parquet"]) -> None:
    table = pa.Table.from_pandas(frame[list(FIELDS)], schema=TRAFFIC_SCHEMA, preserve_index=False)
    if fmt == "parquet":
        pq.write_table(table, path)
        return
    stamps = frame["timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if fmt == "csv":
        table = table.set_column(0, "timestamp", pa.array(stamps.tolist(), pa.string()))
        pcsv.write_csv(table, path)
        return
    records = frame[list(FIELDS)].assign(timestamp=stamps).to_dict("records")
    with path.open("wb") as file:
        for record in records:
            if pd.isna(record["feedback"]):
                record["feedback"] = None
            record["metadata"] = None if record["metadata"] is None else orjson.loads(record["metadata"])
            file.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
