"""Selecting rows of the tidy HELM tables: metric patterns over millions of rows, and the
baseline suite of each run."""

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def arrow_column(values: pd.Series) -> pa.ChunkedArray:  # type: ignore[type-arg]
    """The column as Arrow data (zero-copy for Arrow-backed columns)."""
    return (
        pa.chunked_array([pa.array(values.array, from_pandas=True)])
        if not hasattr(values.array, "__arrow_array__")
        else values.array.__arrow_array__()
    )


def pattern_mask(values: pd.Series, patterns: Sequence[str]) -> np.ndarray:  # type: ignore[type-arg]
    """Which values of a column match any of the shell-style patterns: the column is
    dictionary-encoded once and each distinct value matched once, so millions of rows cost one
    hashing pass."""
    encoded = pc.dictionary_encode(arrow_column(values)).combine_chunks()
    matched = [
        code
        for code, value in enumerate(encoded.dictionary.to_pylist())
        if value is not None and any(fnmatchcase(str(value), pattern) for pattern in patterns)
    ]
    mask: np.ndarray = np.isin(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False), matched)
    return mask


def choose_baselines(
    run_names: Iterable[str], baselines: Sequence[tuple[str, pd.DataFrame]], named: str | None
) -> dict[str, str]:
    """The baseline suite of each run: the named suite, else the most recent earlier suite that
    has the run. `baselines` is ordered from the most recent earlier suite to the oldest."""
    available = [(suite, set(table["run_name"].unique())) for suite, table in baselines if named in (None, suite)]
    chosen = {}
    for run_name in run_names:
        suite = next((suite for suite, names in available if run_name in names), None)
        if suite is not None:
            chosen[run_name] = suite
    return chosen
