"""The unit of an A/B test: one request assigned to the experiment, with its metric values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from governance_assets.lib.feedback.events import experiment_of
from governance_assets.lib.feedback.metrics import METRICS

TRAFFIC_COLUMNS = ["request_id", "timestamp", "metadata", "latency_ms", "completion_tokens"]
EVENT_COLUMNS = ["request_id", "kind", "value"]


def read_days(folder: Path, days: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """The named columns of `<folder>/<day>.parquet` for the days that have a file."""
    tables = [
        pq.read_table(folder / f"{day}.parquet", columns=list(columns))
        for day in days
        if (folder / f"{day}.parquet").exists()
    ]
    frame: pd.DataFrame = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=list(columns))
    return frame


def experiment_units(experiment: str, traffic: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per request of `traffic` whose metadata names `experiment`: `request_id`, `day`
    (UTC, of the request), `variant` and one column per metric of `METRICS` (feedback from `events`)."""
    traffic = traffic.reset_index(drop=True)
    named = traffic["metadata"].map(experiment_of)
    mine = traffic[named.map(lambda pair: pair[0] == experiment)].drop_duplicates("request_id")
    units = pd.DataFrame(
        {
            "request_id": mine["request_id"].to_numpy(),
            "day": pd.to_datetime(mine["timestamp"], utc=True).dt.strftime("%Y-%m-%d").to_numpy(),
            "variant": named[mine.index].map(lambda pair: pair[1]).to_numpy(),
            "latency_ms": mine["latency_ms"].to_numpy(np.float64),
            "completion_tokens": mine["completion_tokens"].to_numpy(np.float64),
        }
    )
    on_units = events[events["request_id"].isin(set(units["request_id"]))]
    thumbs = on_units[on_units["kind"] == "thumbs"]
    ratings = on_units[on_units["kind"] == "rating"]

    def any_of(frame: pd.DataFrame) -> pd.Series:
        return units["request_id"].isin(set(frame["request_id"])).astype(np.float64)

    units["positive_feedback"] = any_of(pd.concat([thumbs[thumbs["value"] > 0], ratings[ratings["value"] >= 4]]))
    units["negative_feedback"] = any_of(pd.concat([thumbs[thumbs["value"] < 0], ratings[ratings["value"] <= 2]]))
    units["flagged"] = any_of(on_units[on_units["kind"] == "flag"])
    units["corrected"] = any_of(on_units[on_units["kind"] == "correction"])
    units["rating"] = units["request_id"].map(ratings.groupby("request_id")["value"].mean()).astype(np.float64)
    return units[["request_id", "day", "variant", *METRICS]]
