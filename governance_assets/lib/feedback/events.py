"""User feedback: reading landing files and database rows once, and joining each day's feedback to the traffic.

A serving system drops feedback files into ``GOVERNANCE_HOME/landing/feedback/`` (JSON Lines
``.jsonl``, ``.csv`` or ``.parquet``; write to a name starting with ``.`` and rename) and/or inserts
rows into the policy's database table (``feedback.intake.database``: an integer primary key ``id``
and the columns below; append-only). Each record:

==============  ====================================================================================
field           rule
==============  ====================================================================================
``timestamp``   required ISO-8601 with a time zone (or a zone-aware Parquet timestamp); stored in UTC
``request_id``  required non-empty string: the traffic record the feedback is about
``model``       required non-empty string: must be the model that served the request
``variant``     optional string: the experiment variant the user saw; must match the traffic's
``kind``        ``thumbs`` (value 1 or -1), ``rating`` (value an integer 1-5), ``correction``
                (``text`` the corrected answer, required) or ``flag`` (``text`` the reason, optional)
``value``       a number as above for thumbs and ratings; absent or null for corrections and flags
``text``        a string as above; absent or null for thumbs and ratings
==============  ====================================================================================

`stage_source` (a file) and `stage_table_rows` (a range of the table's ids) parse a source once into
``<staging>/<source id>/``: ``<day>.parquet`` per UTC day of the feedback, ``quarantine.jsonl``
(malformed rows with the row number, or the row's ``id``, and the reason) and ``source.json`` (written
last, so a source with it is staged). A file's source id is its name and a digest of its bytes, so
the same file seen again stages nothing new; a range's is ``db-<table>-<first id>-<last id>``.

`assemble_day` rebuilds one day of `feedback/events` from every staged part of the day and the
traffic of the day and the `join_days` before it (``warehouse/monitoring/traffic/<day>.parquet``):
a second feedback of the same kind on the same request (this day or the days before in the window)
is a duplicate, feedback whose request is not in that traffic is an orphan, and feedback naming
another model or variant than the request's is a mismatch; all are quarantined with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from governance_assets.lib.core.database import TableRows, database_source_id
from governance_assets.lib.core.storage import path_within, write_parquet_atomic, write_text_atomic

KINDS = ("thumbs", "rating", "correction", "flag")
FIELDS = ("timestamp", "request_id", "model", "variant", "kind", "value", "text")
REQUIRED = ("timestamp", "request_id", "model", "kind")
STAGED_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("model", pa.string()),
        ("variant", pa.string()),
        ("kind", pa.string()),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("source_id", pa.string()),
        ("row", pa.int64()),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        *STAGED_SCHEMA,
        ("experiment", pa.string()),
        ("request_day", pa.string()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("latency_ms", pa.float64()),
        ("completion_tokens", pa.int64()),
    ]
)
TRAFFIC_COLUMNS = [
    "request_id",
    "model",
    "timestamp",
    "prompt",
    "completion",
    "latency_ms",
    "completion_tokens",
    "metadata",
]
SOURCE_FILE = "source.json"
QUARANTINE_FILE = "quarantine.jsonl"
RAW_LIMIT = 2048


@dataclass(frozen=True)
class StagedFeedback:
    """What one staged source contributed."""

    source_id: str
    source: str
    days: dict[str, int]
    rows: int
    quarantined: int
    error: str | None = None


@dataclass
class EventsDay:
    """One day of feedback joined to its traffic, and what was set aside."""

    table: pa.Table
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0
    """Rows of the sources touching this day that were quarantined when staged."""
    sources: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Quarantined rows by reason kind (orphan, duplicate, model mismatch, variant mismatch) and malformed."""
        counts = {"malformed": self.malformed}
        for row in self.quarantined:
            counts[row["category"]] = counts.get(row["category"], 0) + 1
        return counts


def source_id(path: Path) -> str:
    """The file's name and a digest of its bytes: the same content is one source wherever it lies."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{path.name}-{digest}"


Records = list[tuple[int, dict[str, Any] | None, str]]
"""(row number, record or None when unparsable, raw text) of a source."""


def _timestamp(value: Any) -> tuple[datetime | None, str | None]:
    if isinstance(value, pd.Timestamp | datetime):
        stamp = pd.Timestamp(value)
    elif isinstance(value, str) and value.strip():
        try:
            stamp = pd.Timestamp(value.strip())
        except ValueError:
            return None, f"timestamp {value!r} is not ISO-8601"
    else:
        return None, "timestamp is missing"
    if stamp.tzinfo is None:
        return None, f"timestamp {value!s} has no time zone"
    return stamp.tz_convert("UTC").floor("us").to_pydatetime(), None  # microseconds, as traffic is stored


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _number(value: Any) -> float | None:
    """A JSON/Parquet number or a CSV cell holding one; None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):  # a database NUMERIC column gives Decimal
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def validate_record(record: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The record in the staged form, or the reason it is malformed."""
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        return None, f"unknown field {unknown[0]!r}"
    for name in REQUIRED:
        value = record.get(name)
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            return None, f"{name} is missing"
    stamp, problem = _timestamp(record["timestamp"])
    if problem:
        return None, problem
    for name in ("request_id", "model", "kind"):
        if not isinstance(record[name], str):
            return None, f"{name} is not a string"
    variant, text = record.get("variant"), record.get("text")
    variant = None if _missing(variant) or variant == "" else variant
    text = None if _missing(text) or text == "" else text
    if variant is not None and not isinstance(variant, str):
        return None, "variant is not a string"
    if text is not None and not isinstance(text, str):
        return None, "text is not a string"
    kind, raw_value = record["kind"], record.get("value")
    value = None if _missing(raw_value) or raw_value == "" else _number(raw_value)
    if kind not in KINDS:
        return None, f"kind {kind!r} is not one of {', '.join(KINDS)}"
    if kind in ("thumbs", "rating") and value is None:
        return None, f"{kind} needs a numeric value, got {raw_value!r}"
    if kind == "thumbs" and value not in (1.0, -1.0):
        return None, f"thumbs value must be 1 or -1, got {raw_value!r}"
    if kind == "rating" and value not in (1.0, 2.0, 3.0, 4.0, 5.0):
        return None, f"rating value must be an integer from 1 to 5, got {raw_value!r}"
    if kind in ("correction", "flag") and not _missing(raw_value) and raw_value != "":
        return None, f"{kind} takes no value, got {raw_value!r}"
    if kind == "correction" and text is None:
        return None, "correction needs the corrected answer in text"
    return {
        "timestamp": stamp,
        "request_id": record["request_id"],
        "model": record["model"],
        "variant": variant,
        "kind": kind,
        "value": value,
        "text": text,
    }, None


def _records(path: Path) -> Records:
    """(row number, record or None when unparsable, raw text) of a landing file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows: Records = []
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                parsed = None
            rows.append((number, parsed if isinstance(parsed, dict) else None, line[:RAW_LIMIT]))
        return rows
    if suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise ValueError(f"{path.name}: not a .jsonl, .json, .csv or .parquet file")
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        (i, {str(k): v for k, v in r.items()}, json.dumps(r, default=str)[:RAW_LIMIT])
        for i, r in enumerate(records, start=1)
    ]


def stage_source(path: Path, staging: Path) -> StagedFeedback:
    """Parse landing file `path` once into `staging/<source id>/` (idempotent: a staged source is read back)."""

    def read() -> tuple[str, Records, str | None]:
        try:
            return path.name, _records(path), None
        except (ValueError, OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            return path.name, [], f"{path.name}: unreadable: {exc}"

    return _stage(staging, source_id(path), read)


def stage_table_rows(
    staging: Path, table: str, after_id: int, up_to_id: int, fetch: Callable[[], TableRows]
) -> StagedFeedback:
    """Stage the rows of database `table` with `after_id` < id <= `up_to_id` once, as
    `db-<table>-<first>-<last>`; `fetch` reads them (only when the range is not staged yet). A row's
    number is its `id`; a table without `id`, or gone, is a whole-source error."""

    def read() -> tuple[str, Records, str | None]:
        rows = fetch()
        if rows.error:
            return rows.source, [], f"{rows.source}: {rows.error}"
        raw = [json.dumps(record, default=str, ensure_ascii=False)[:RAW_LIMIT] for record in rows.records]
        return rows.source, list(zip(rows.ids, rows.records, raw, strict=True)), None

    return _stage(staging, database_source_id(table, after_id + 1, up_to_id), read)


def _stage(staging: Path, sid: str, read: Callable[[], tuple[str, Records, str | None]]) -> StagedFeedback:
    """Validate what `read` gives (source name, records, whole-source error) and stage it as `sid`."""
    folder = path_within(staging, sid, what="source id")
    marker = folder / SOURCE_FILE
    if marker.exists():
        return StagedFeedback(**json.loads(marker.read_text("utf-8")))
    source, records, error = read()
    folder.mkdir(parents=True, exist_ok=True)
    valid: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    for number, record, raw in records:
        checked, problem = (None, "not a JSON object") if record is None else validate_record(record)
        if checked is None:
            quarantined.append({"source": source, "row": number, "reason": problem, "raw": raw})
        else:
            valid.append(checked | {"source_id": sid, "row": number})
    table = pa.Table.from_pylist(valid, schema=STAGED_SCHEMA)
    days: dict[str, int] = {}
    if valid:
        frame = table.to_pandas()
        for day, part in frame.groupby(frame["timestamp"].dt.strftime("%Y-%m-%d")):
            write_parquet_atomic(
                folder / f"{day}.parquet", pa.Table.from_pandas(part, schema=STAGED_SCHEMA, preserve_index=False)
            )
            days[str(day)] = len(part)
    write_text_atomic(folder / QUARANTINE_FILE, "".join(json.dumps(row) + "\n" for row in quarantined))
    staged = StagedFeedback(sid, source, days, len(valid), len(quarantined), error)
    write_text_atomic(marker, json.dumps(asdict(staged), sort_keys=True))
    return staged


def staged_sources(staging: Path) -> list[StagedFeedback]:
    """Every staged source, in name order (only those whose `source.json` was written)."""
    if not staging.exists():
        return []
    markers = sorted(staging.glob(f"*/{SOURCE_FILE}"))
    return [StagedFeedback(**json.loads(marker.read_text("utf-8"))) for marker in markers]


def _staged_day(staging: Path, sources: list[StagedFeedback], day: str) -> pd.DataFrame:
    parts = [pq.read_table(staging / s.source_id / f"{day}.parquet") for s in sources if day in s.days]
    table = pa.concat_tables(parts) if parts else STAGED_SCHEMA.empty_table()
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _traffic(traffic_folder: Path, days: list[str]) -> pd.DataFrame:
    frames = []
    for day in days:
        path = traffic_folder / f"{day}.parquet"
        if path.exists():
            frames.append(pq.read_table(path, columns=TRAFFIC_COLUMNS).to_pandas().assign(request_day=day))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in [*TRAFFIC_COLUMNS, "request_day"]})
    traffic: pd.DataFrame = pd.concat(frames, ignore_index=True).drop_duplicates("request_id")
    return traffic


def experiment_of(metadata: str | None) -> tuple[str | None, str | None]:
    """The `experiment` and `variant` named in a traffic record's metadata (a JSON object)."""
    if not metadata:
        return None, None
    try:
        parsed = json.loads(metadata)
    except json.JSONDecodeError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    experiment, variant = parsed.get("experiment"), parsed.get("variant")
    return (
        experiment if isinstance(experiment, str) else None,
        variant if isinstance(variant, str) else None,
    )


def _quarantine(frame: pd.DataFrame, category: str, reasons: pd.Series) -> list[dict[str, Any]]:
    return [
        {
            "category": category,
            "reason": reason,
            "source_id": row.source_id,
            "row": int(str(row.row)),
            "request_id": row.request_id,
        }
        for row, reason in zip(frame.itertuples(), reasons, strict=True)
    ]


def assemble_day(staging: Path, traffic_folder: Path, day: str, join_days: int) -> EventsDay:
    """Feedback of `day` from every staged source, joined to the traffic of `day` and the
    `join_days` days before it; duplicates, orphans and mismatches set aside with reasons."""
    sources = staged_sources(staging)
    first = date.fromisoformat(day) - timedelta(days=join_days)
    window = [(first + timedelta(days=i)).isoformat() for i in range(join_days + 1)]
    frame = _staged_day(staging, sources, day).sort_values(["timestamp", "source_id", "row"], kind="stable")
    earlier = pd.concat([_staged_day(staging, sources, d) for d in window[:-1]], ignore_index=True)
    seen = set(zip(earlier["request_id"], earlier["kind"], strict=True))
    key = pd.Series(list(zip(frame["request_id"], frame["kind"], strict=True)), index=frame.index, dtype=object)
    duplicate = frame.duplicated(["request_id", "kind"], keep="first") | key.isin(seen)
    quarantined = _quarantine(
        frame[duplicate], "duplicate", frame.loc[duplicate, "kind"].map(lambda k: f"a second {k} on this request")
    )
    frame = frame[~duplicate]
    traffic = _traffic(traffic_folder, window)
    joined = frame.merge(traffic, on="request_id", how="left", suffixes=("", "_served"))
    orphan = joined["request_day"].isna()
    quarantined += _quarantine(
        joined[orphan], "orphan", pd.Series([f"request not in the traffic of {window[0]} to {day}"] * int(orphan.sum()))
    )
    joined = joined[~orphan].copy()
    served = joined["metadata"].map(experiment_of)
    joined["experiment"] = served.map(lambda pair: pair[0])
    served_variant = served.map(lambda pair: pair[1])
    model_mismatch = joined["model"] != joined["model_served"]
    quarantined += _quarantine(
        joined[model_mismatch],
        "model mismatch",
        pd.Series(
            [
                f"model {a!r} but the request was served by {b!r}"
                for a, b in zip(
                    joined.loc[model_mismatch, "model"], joined.loc[model_mismatch, "model_served"], strict=True
                )
            ]
        ),
    )
    variant_mismatch = ~model_mismatch & joined["variant"].notna() & (joined["variant"] != served_variant)
    quarantined += _quarantine(
        joined[variant_mismatch],
        "variant mismatch",
        pd.Series(
            [
                f"variant {a!r} but the request was served as {b!r}"
                for a, b in zip(joined.loc[variant_mismatch, "variant"], served_variant[variant_mismatch], strict=True)
            ]
        ),
    )
    joined = joined[~model_mismatch & ~variant_mismatch].copy()
    joined["variant"] = served_variant[joined.index]
    touching = [s for s in sources if day in s.days]
    table = pa.Table.from_pandas(joined[EVENTS_SCHEMA.names], schema=EVENTS_SCHEMA, preserve_index=False)
    return EventsDay(table, quarantined, sum(s.quarantined for s in touching), [s.source_id for s in touching])
