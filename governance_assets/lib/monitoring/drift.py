"""Feature and dataset drift of production traffic against a reference profile, chosen as Evidently does.

Per feature (prompt/completion lengths, token counts, latency, refusal or PII flags, model, language…)
the statistical test is the one Evidently's `DataDriftPreset` picks by default; a policy may override
the method or the threshold of any feature. The dataset drifts when the share of drifted features
reaches a threshold. Pure numpy/scipy/pandas: no Dagster, no I/O.

Sources, Evidently 0.7.21 (the `DataDriftPreset` of the current API calls the legacy stattests):
documentation https://docs.evidentlyai.com/metrics/explainer_drift and
https://docs.evidentlyai.com/metrics/customize_data_drift; code in `src/evidently/legacy/calculations/`:
`stattests/registry.py` (`_get_default_stattest`), `stattests/utils.py` (`get_binned_data`), the
`stattests/*.py` of each method, `data_drift.py` (`get_one_column_drift`, `get_dataset_drift`) and
`utils/data_preprocessing.py` (`_get_column_type`).

Default method (`default_method`), from the reference size after dropping missing values and the
number of distinct values of reference and current together (current size does not matter):

========================  ======================  =========================================  =========
column                    reference ≤ 1000        reference > 1000                           threshold
========================  ======================  =========================================  =========
numerical, > 5 distinct   ``ks``: two-sample       ``wasserstein``: Wasserstein-1 distance /   0.05 / 0.1
                          Kolmogorov–Smirnov       std of reference
                          p-value
categorical, or           ``chisquare`` if > 2     ``jensenshannon``: Jensen–Shannon          0.05 / 0.1
numerical with ≤ 5        distinct, else ``z``     distance
distinct                  (two-proportion z)
========================  ======================  =========================================  =========

A feature drifts when a p-value is below its threshold (``ks``: at or below, as Evidently's code
has it, ``p_value <= threshold``; ``chisquare`` and ``z``: strictly below) or when a distance is at
or above it. The dataset drifts when the share of drifted features is ≥ 0.5.

Column types (`evidently_column_type`), as Evidently 0.7's `Dataset` infers them on the current
data (`evidently.core.datasets.infer_column_type`; the report takes the current dataset's
definition): float columns are numerical; integer columns are categorical when they hold ≤ 10
distinct values (`INTEGER_CARDINALITY_LIMIT`), else numerical; string and object-of-string columns
are text when more than half of their non-missing values are distinct, else categorical; bool and
category columns are categorical; anything else (nullable ``Int64``/``boolean`` dtypes, objects
mixing booleans and None, an all-missing object column, datetimes, lists) is not a drift column.
`dataset_drift` tests numerical and categorical columns and reports the others as not tested, with
the reason, outside the dataset share, as Evidently's `DataDriftPreset` leaves them out (it tests
text columns with a text-content classifier, which is not reproduced here). `kinds` sets the kind
of any column instead (the policy's `monitoring.drift.kinds`), which also makes those columns
testable. `feature_drift` without a kind keeps the legacy rule (`feature_kind`): bool, string and
object columns categorical, integer columns with ≤ 5 distinct reference values categorical.

A numerical column with ≤ 5 distinct values in reference and current together is tested with the
categorical tests (Evidently's test selection). Formulas, as Evidently computes them:

* ``ks``: `scipy.stats.ks_2samp(reference, current).pvalue` (two-sided, method "auto").
* ``wasserstein``: `scipy.stats.wasserstein_distance(reference, current) / max(np.std(reference),
  0.001)`; `np.std` has ``ddof=0``. The floor 0.001 is Evidently's: a constant reference (std 0) is
  divided by 0.001, so any change of its value by ≥ 0.0001 drifts and no change gives 0. The
  distance is computed exactly with the quantile (sorted-difference) formulation
  ∫₀¹ |F⁻¹(t) − G⁻¹(t)| dt on the merged grid of the two samples' steps, without scipy's argsorts.
* ``chisquare``: over the categories of both samples, observed = current counts, expected =
  reference counts × current size / reference size, `scipy.stats.chisquare(observed, expected)`
  (k − 1 degrees of freedom). A category absent from the reference but present in the current has
  expected count 0, statistic ∞ and p-value 0; a single category in both gives p-value 1 (scipy
  and Evidently give NaN, which Evidently also reports as no drift).
* ``z``: the values equal to the smallest category (sorted) count as 0, all others as 1; pooled
  two-proportion z = (p₁ − p₂) / √(P(1 − P)(1/n₁ + 1/n₂)), two-sided p = 2·Φ(−|z|) (Evidently writes
  2·(1 − Φ(|z|)), equal except that it rounds to 0 below ~1e-16). Same single category: p = 1.
* ``jensenshannon``: `scipy.spatial.distance.jensenshannon(p, q)` with Evidently's default base,
  the natural logarithm (range 0 … √ln 2 ≈ 0.833; base 2 would give 0 … 1), on the shares p, q of
  reference and current per bin; ``base=2`` is available. Bins: for a numerical column whose
  reference has > 20 distinct values, `np.histogram_bin_edges(reference ∪ current, bins="sturges")`
  (equal-width bins on the combined data, ⌈log₂ n + 1⌉ of them; width at least 1 for integer
  columns) and `np.histogram` of each side; otherwise one bin per distinct value of either side.
  Empty bins stay 0.
* ``psi``: the same bins by default (``bins="sturges"``; Evidently's docstring speaks of reference
  quantiles but its code uses these bins); ``bins=<int>`` uses that many bins cut at reference
  quantiles instead (`np.quantile`, linear; duplicate cuts merged; outermost bins open so every
  current value counts; a value equal to a cut goes to the upper bin). Empty bins of each side are
  set to 0.0001, or to (smallest non-zero share)/10⁶ if that share is ≤ 0.0001 (Evidently's rule;
  shares are not renormalised). PSI = Σ (r − c)·ln(r / c); threshold 0.1.

Missing values: NaN, None, pd.NA and ±inf are dropped from each column before any test (Evidently
drops NaN and ±inf). If either side is then empty, the feature is reported with statistic NaN,
``drifted=False`` and a ``detail`` saying so, and it is left out of the dataset share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias, TypeVar, get_args

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import special, stats

Kind = Literal["numerical", "categorical"]
ColumnType = Literal["numerical", "categorical", "text", "datetime", "list", "unknown"]
"""The column types of Evidently 0.7's `Dataset` (its `ColumnType`)."""
Method = Literal["ks", "wasserstein", "chisquare", "z", "jensenshannon", "psi"]
Data: TypeAlias = "NDArray[Any] | pd.Series[Any] | Sequence[Any]"
"""A column: a 1-D numpy array, a pandas Series or a sequence of values."""
FloatArray: TypeAlias = "NDArray[np.float64]"
Item = TypeVar("Item")
Result = TypeVar("Result")

KINDS: tuple[Kind, ...] = get_args(Kind)
METHODS: tuple[Method, ...] = get_args(Method)

INTEGER_CARDINALITY_LIMIT = 10
"""Evidently's `Dataset` types an integer column with at most this many distinct values as categorical."""
TEXT_DISTINCT_SHARE = 0.5
"""… and a string column whose distinct values exceed this share of its non-missing values as text."""
CATEGORICAL_MAX_UNIQUE = 5
"""A numeric column with at most this many distinct values is tested as categorical."""
SMALL_REFERENCE_MAX = 1000
"""References up to this size get tests with p-values, larger ones distances."""
BINARY_MAX_UNIQUE = 2
"""Categorical columns with at most this many distinct values get the z-test, others chi-squared."""
HISTOGRAM_MIN_UNIQUE = 20
"""A numerical reference with more distinct values than this is binned (Sturges); else one bin per value."""
WASSERSTEIN_MIN_NORM = 0.001
"""Evidently divides the Wasserstein distance by `max(std(reference), 0.001)`."""
PSI_EPSILON = 0.0001
"""Share given to empty PSI bins (unless a non-zero share is already this small)."""
DEFAULT_SHARE_THRESHOLD = 0.5
"""The dataset drifts when at least this share of the tested features drifted."""

_DEFAULT_THRESHOLDS: dict[Method, float] = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
_P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
_NUMERIC_ONLY_METHODS = frozenset({"ks", "wasserstein"})


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature between reference and current."""

    feature: str
    kind: Kind
    method: Method
    statistic: float
    """p-value for ``ks``, ``chisquare`` and ``z``; distance for the others; NaN if a side had no data."""
    threshold: float
    drifted: bool
    reference_size: int
    """Values tested after dropping missing ones."""
    current_size: int
    detail: str = ""
    """Human-readable account of the decision, e.g. ``"p_value=0.012 < 0.05"`` or why there was no test."""


@dataclass(frozen=True)
class DatasetDrift:
    """Drift of a dataset: its features' drift and the share rule."""

    features: list[FeatureDrift]
    drifted_share: float
    """Drifted features / tested features (features without data on a side are not counted)."""
    share_threshold: float
    drifted: bool


# --- columns -------------------------------------------------------------------------------------


@dataclass
class _Column:
    """A column without missing values; numeric columns are float64."""

    values: NDArray[Any]
    numeric: bool
    """Numeric dtype other than bool."""
    integer: bool
    """Integer dtype (before dropping missing values)."""
    _sorted: FloatArray | None = field(default=None, repr=False)
    _n_unique: int | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.values.size)

    def sorted(self) -> FloatArray:
        if self._sorted is None:
            self._sorted = np.sort(self.values)
        return self._sorted

    def n_unique(self) -> int:
        if self._n_unique is None:
            if self.size == 0:
                self._n_unique = 0
            elif self.numeric:
                ordered = self.sorted()
                self._n_unique = 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
            else:
                self._n_unique = int(pd.unique(self.values).size)
        return self._n_unique


def _column(data: Data, name: str = "column") -> _Column:
    """`data` as a `_Column`: missing values (NaN, None, pd.NA, ±inf) dropped."""
    if isinstance(data, _Column):
        return data
    series: pd.Series[Any] = data if isinstance(data, pd.Series) else pd.Series(data)
    if series.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return _Column(series.dropna().to_numpy(dtype=bool), numeric=False, integer=False)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
        return _Column(values, numeric=True, integer=pd.api.types.is_integer_dtype(dtype))
    return _Column(series.dropna().to_numpy(), numeric=False, integer=False)


def _union_size(reference: _Column, current: _Column) -> int:
    """Distinct values of reference and current together."""
    if current.size == 0:
        return reference.n_unique()
    if reference.size == 0:
        return current.n_unique()
    both = np.concatenate([pd.unique(reference.values), pd.unique(current.values)])
    return int(pd.unique(both).size)


def _kind(reference: _Column, current: _Column) -> Kind:
    if reference.size == 0 and current.size > 0:
        return _kind(current, reference)
    if not reference.numeric:
        return "categorical"
    if reference.integer and 0 < reference.n_unique() <= CATEGORICAL_MAX_UNIQUE:
        return "categorical"
    if reference.n_unique() > CATEGORICAL_MAX_UNIQUE or _union_size(reference, current) > CATEGORICAL_MAX_UNIQUE:
        return "numerical"
    return "categorical"


def _require_numeric(reference: _Column, current: _Column, what: str) -> None:
    for side, column in (("reference", reference), ("current", current)):
        if not column.numeric:
            raise ValueError(f"{what} needs numeric values; the {side} column has dtype {column.values.dtype}")


def _require_data(reference: _Column, current: _Column) -> None:
    for side, column in (("reference", reference), ("current", current)):
        if column.size == 0:
            raise ValueError(f"the {side} column has no values after dropping missing ones")


def _category_counts(reference: _Column, current: _Column) -> tuple[list[Any], FloatArray, FloatArray]:
    """The distinct values of both sides and each side's count of each."""
    ref_counts = pd.Series(reference.values).value_counts(sort=False)
    cur_counts = pd.Series(current.values).value_counts(sort=False)
    ref_counts = ref_counts[ref_counts > 0]
    cur_counts = cur_counts[cur_counts > 0]
    keys = ref_counts.index.union(cur_counts.index, sort=False)
    ref = np.asarray(ref_counts.reindex(keys, fill_value=0), dtype=np.float64)
    cur = np.asarray(cur_counts.reindex(keys, fill_value=0), dtype=np.float64)
    return list(keys), ref, cur


# --- primitives ----------------------------------------------------------------------------------


def ks_p_value(reference: Data, current: Data) -> float:
    """Two-sided two-sample Kolmogorov–Smirnov p-value (`scipy.stats.ks_2samp`, method "auto")."""
    ref, cur = _column(reference, "reference"), _column(current, "current")
    return _ks(ref, cur)


def _ks(ref: _Column, cur: _Column) -> float:
    _require_numeric(ref, cur, "the Kolmogorov–Smirnov test")
    _require_data(ref, cur)
    return float(stats.ks_2samp(ref.sorted(), cur.sorted()).pvalue)


def normalized_wasserstein(reference: Data, current: Data) -> float:
    """Wasserstein-1 distance divided by `max(np.std(reference), 0.001)` (ddof=0), as Evidently does."""
    ref, cur = _column(reference, "reference"), _column(current, "current")
    return _normalized_wasserstein(ref, cur)[0]


def _normalized_wasserstein(ref: _Column, cur: _Column) -> tuple[float, float]:
    """(normalized distance, reference std)."""
    _require_numeric(ref, cur, "the Wasserstein distance")
    _require_data(ref, cur)
    std = float(np.std(ref.values))
    return _wasserstein_sorted(ref.sorted(), cur.sorted()) / max(std, WASSERSTEIN_MIN_NORM), std


def _wasserstein_sorted(u: FloatArray, v: FloatArray) -> float:
    """Exact W1 = ∫₀¹ |Qᵤ(t) − Qᵥ(t)| dt of two sorted samples (Q: quantile functions).

    Qᵤ steps at t = i/n and Qᵥ at j/m; scaled by n·m the steps are the integers i·m and j·n, and
    each step ends one interval of the merged grid (a tie: the u step ends it, the v step ends an
    empty one). On each interval both Q are constant, so W1 = Σ length·|u[a] − v[b]| / (n·m) with
    lengths and indices from integer arithmetic: O(n + m) after sorting, no merge sort or search,
    and on the larger sample only a repeat, a subtraction and a dot product.
    """
    if u.size > v.size:
        u, v = v, u  # W1 is symmetric; below n ≤ m
    n, m = u.size, v.size
    if n == m:
        return float(np.mean(np.abs(u - v)))
    i = np.arange(1, n + 1, dtype=np.int64)
    # first[i-1] = ⌈i·m/n⌉ − 1: the number of v steps strictly before u's step i, i.e. the index of
    # v on the interval that u's step i ends (key i·m; previous key first·n, never (i−1)·m as m > n).
    first = (i * m - 1) // n
    u_side = np.dot((i * m - first * n).astype(np.float64), np.abs(u - v[first]))
    # The interval ended by v's step j < m (key j·n) lies on u[⌊j·n/m⌋]: a run of `counts` equal
    # indices per u value. Its length is n, except for the first j of a run (j = first[i-1] + 1 for
    # u index i ≥ 1), whose interval starts at u's key i·m: length j·n − i·m (0 on a tie). v's last
    # step j = m ties with u's last step and ends an empty interval.
    counts = np.diff(first, prepend=0)
    diff = np.repeat(u, counts)
    np.subtract(v[:-1], diff, out=diff)
    np.abs(diff, out=diff)
    lengths = np.full(m - 1, float(n))
    starts = first[:-1]
    lengths[starts] = ((starts + 1) * n - i[:-1] * m).astype(np.float64)
    v_side = np.dot(lengths, diff)
    return float((u_side + v_side) / (float(n) * float(m)))


def chisquare_p_value(reference: Data, current: Data) -> float:
    """Chi-squared p-value of current counts against reference shares × current size (Evidently's)."""
    ref, cur = _column(reference, "reference"), _column(current, "current")
    _require_data(ref, cur)
    _, ref_counts, cur_counts = _category_counts(ref, cur)
    return _chisquare(ref_counts, cur_counts)


def _chisquare(ref_counts: FloatArray, cur_counts: FloatArray) -> float:
    if ref_counts.size < 2:
        return 1.0
    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (cur_counts - expected) ** 2 / expected
    statistic = float(terms.sum()) if np.all(expected > 0) else math.inf
    return float(stats.chi2.sf(statistic, ref_counts.size - 1))


def z_proportion_p_value(reference: Data, current: Data) -> float:
    """Two-sided pooled two-proportion z-test p-value of "not the smallest category" (Evidently's z)."""
    ref, cur = _column(reference, "reference"), _column(current, "current")
    _require_data(ref, cur)
    keys, ref_counts, cur_counts = _category_counts(ref, cur)
    return _z_test(keys, ref_counts, cur_counts)


def _first_key_index(keys: list[Any]) -> int:
    try:
        first = min(keys)
    except TypeError:  # mixed types: order by text
        first = min(keys, key=str)
    return keys.index(first)


def _z_test(keys: list[Any], ref_counts: FloatArray, cur_counts: FloatArray) -> float:
    if len(keys) < 2:
        return 1.0
    first = _first_key_index(keys)
    n1, n2 = float(ref_counts.sum()), float(cur_counts.sum())
    x1, x2 = n1 - float(ref_counts[first]), n2 - float(cur_counts[first])
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2.0 * stats.norm.sf(abs(z)))


def _sturges_edges(ref: _Column, cur: _Column) -> FloatArray:
    """`np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")` without the concatenation."""
    low = min(float(ref.sorted()[0]), float(cur.sorted()[0]))
    high = max(float(ref.sorted()[-1]), float(cur.sorted()[-1]))
    spread = high - low
    if low == high:
        low, high = low - 0.5, high + 0.5
    width = spread / (np.log2(ref.size + cur.size) + 1.0)
    if width:
        if ref.integer and cur.integer and width < 1:
            width = 1.0
        n_bins = int(np.ceil((high - low) / width))
    else:
        n_bins = 1
    return np.linspace(low, high, n_bins + 1)


def _histogram_sorted(ordered: FloatArray, edges: FloatArray) -> FloatArray:
    """`np.histogram(ordered, edges)[0]` of sorted data (last bin closed) as floats."""
    cumulative = np.concatenate(
        [np.searchsorted(ordered, edges[:-1], side="left"), np.searchsorted(ordered, edges[-1:], side="right")]
    )
    return np.diff(cumulative).astype(np.float64)


def _quantile_counts(ref: _Column, cur: _Column, bins: int) -> tuple[FloatArray, FloatArray]:
    """Counts in `bins` bins cut at reference quantiles, the outer bins open-ended."""
    cuts = np.unique(np.quantile(ref.sorted(), np.linspace(0.0, 1.0, bins + 1))[1:-1])

    def counts(ordered: FloatArray) -> FloatArray:
        positions = np.concatenate([[0], np.searchsorted(ordered, cuts, side="left"), [ordered.size]])
        return np.diff(positions).astype(np.float64)

    return counts(ref.sorted()), counts(cur.sorted())


def _binned_counts(
    ref: _Column, cur: _Column, kind: Kind, bins: int | Literal["sturges"]
) -> tuple[FloatArray, FloatArray]:
    """Per-bin counts of reference and current, binned as Evidently's `get_binned_data`."""
    if kind == "numerical":
        _require_numeric(ref, cur, "numerical binning")
        if bins != "sturges":
            return _quantile_counts(ref, cur, bins)
        if ref.n_unique() > HISTOGRAM_MIN_UNIQUE:
            edges = _sturges_edges(ref, cur)
            return _histogram_sorted(ref.sorted(), edges), _histogram_sorted(cur.sorted(), edges)
    _, ref_counts, cur_counts = _category_counts(ref, cur)
    return ref_counts, cur_counts


def _resolve_kind(kind: Kind | None, ref: _Column, cur: _Column) -> Kind:
    if kind is None:
        return _kind(ref, cur)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def jensen_shannon_distance(
    reference: Data, current: Data, kind: Kind | None = None, *, base: float | None = None
) -> float:
    """Jensen–Shannon distance of the binned shares (natural log unless `base`), as Evidently computes it.

    `kind` None: inferred as `feature_kind(reference, current)`.
    """
    ref, cur = _column(reference, "reference"), _column(current, "current")
    _require_data(ref, cur)
    ref_counts, cur_counts = _binned_counts(ref, cur, _resolve_kind(kind, ref, cur), "sturges")
    return _jensen_shannon(ref_counts / ref.size, cur_counts / cur.size, base)


def _jensen_shannon(p: FloatArray, q: FloatArray, base: float | None) -> float:
    """`scipy.spatial.distance.jensenshannon(p, q, base)`, vectorised the same way."""
    p = p / p.sum()
    q = q / q.sum()
    middle = (p + q) / 2.0
    divergence = float(np.sum(special.rel_entr(p, middle) + special.rel_entr(q, middle)))
    if base is not None:
        divergence /= math.log(base)
    return math.sqrt(max(divergence, 0.0) / 2.0)


def psi(reference: Data, current: Data, kind: Kind | None = None, bins: int | Literal["sturges"] = "sturges") -> float:
    """Population stability index Σ (r − c)·ln(r/c) over Evidently's bins (or `bins` reference-quantile bins).

    `bins` applies to numerical columns only; categorical columns have one bin per value.
    """
    if bins != "sturges" and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise ValueError(f'bins must be a positive integer or "sturges", got {bins!r}')
    ref, cur = _column(reference, "reference"), _column(current, "current")
    _require_data(ref, cur)
    ref_counts, cur_counts = _binned_counts(ref, cur, _resolve_kind(kind, ref, cur), bins)
    return _psi(ref_counts / ref.size, cur_counts / cur.size)


def _fill_empty(shares: FloatArray) -> FloatArray:
    """Evidently's `feel_zeroes`: empty bins get 0.0001, or min non-zero share / 1e6 if that is ≤ 0.0001."""
    empty = shares == 0
    if not empty.any():
        return shares
    smallest = float(shares[~empty].min())
    filled = shares.copy()
    filled[empty] = smallest / 10**6 if smallest <= PSI_EPSILON else PSI_EPSILON
    return filled


def _psi(ref_shares: FloatArray, cur_shares: FloatArray) -> float:
    r, c = _fill_empty(ref_shares), _fill_empty(cur_shares)
    return float(np.sum((r - c) * np.log(r / c)))


# --- selection -----------------------------------------------------------------------------------


def feature_kind(reference: Data, current: Data | None = None) -> Kind:
    """Numerical or categorical, by dtype and distinct values (see the module docstring).

    With `current`, a numeric column counts as numerical when reference and current together hold
    more than 5 distinct values, as Evidently's test selection does; without it, the reference alone.
    """
    ref = _column(reference, "reference")
    cur = _column(current, "current") if current is not None else _Column(np.empty(0), numeric=True, integer=False)
    return _kind(ref, cur)


def evidently_column_type(column: pd.Series[Any]) -> ColumnType:
    """The type Evidently 0.7's `Dataset.from_pandas` gives `column` (see the module docstring)."""
    name = column.dtype.name
    if name.startswith("float"):
        return "numerical"
    if name.startswith("int"):
        return "categorical" if column.nunique() <= INTEGER_CARDINALITY_LIMIT else "numerical"
    if name in ("string", "str"):
        return _text_or_categorical(column)
    if name == "object":
        present = column.dropna()
        if present.empty:
            return "unknown"
        first, last = present.iloc[0], present.iloc[-1]
        if isinstance(first, str) and isinstance(last, str):
            return _text_or_categorical(column)
        if isinstance(first, list | tuple) and isinstance(last, list | tuple):
            return "list"
        return "unknown"
    if name in ("bool", "category"):
        return "categorical"
    if name.startswith("datetime"):
        return "datetime"
    return "unknown"


def _text_or_categorical(column: pd.Series[Any]) -> ColumnType:
    return "text" if column.nunique() > column.count() * TEXT_DISTINCT_SHARE else "categorical"


def default_method(kind: Kind, reference_size: int, n_unique: int) -> Method:
    """Evidently's default test for a column of `kind` with `reference_size` values (missing ones
    dropped) and `n_unique` distinct values in reference and current together."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    small = reference_size <= SMALL_REFERENCE_MAX
    if kind == "numerical" and n_unique > CATEGORICAL_MAX_UNIQUE:
        return "ks" if small else "wasserstein"
    if small:
        return "chisquare" if n_unique > BINARY_MAX_UNIQUE else "z"
    return "jensenshannon"


def default_threshold(method: Method) -> float:
    """Evidently's default threshold: 0.05 for p-values (ks, chisquare, z), 0.1 for distances."""
    try:
        return _DEFAULT_THRESHOLDS[method]
    except KeyError:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}") from None


def _is_drifted(method: Method, statistic: float, threshold: float) -> bool:
    if math.isnan(statistic):
        return False
    if method == "ks":
        return statistic <= threshold
    if method in _P_VALUE_METHODS:
        return statistic < threshold
    return statistic >= threshold


def _verdict(method: Method, statistic: float, threshold: float, drifted: bool) -> str:
    name = "p_value" if method in _P_VALUE_METHODS else "distance"
    if method in _P_VALUE_METHODS:
        op = ("<=" if method == "ks" else "<") if drifted else (">" if method == "ks" else ">=")
    else:
        op = ">=" if drifted else "<"
    return f"{name}={statistic:.6g} {op} {threshold:g}"


def _no_data(
    feature: str, kind: Kind, method: Method, threshold: float, ref_size: int, cur_size: int, why: str
) -> FeatureDrift:
    return FeatureDrift(
        feature=feature,
        kind=kind,
        method=method,
        statistic=math.nan,
        threshold=threshold,
        drifted=False,
        reference_size=ref_size,
        current_size=cur_size,
        detail=f"no data: {why}; not tested",
    )


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return value


def feature_drift(
    feature: str,
    reference: Data,
    current: Data,
    *,
    method: Method | None = None,
    threshold: float | None = None,
    kind: Kind | None = None,
) -> FeatureDrift:
    """Drift of one feature; `method`, `threshold` and `kind` default to Evidently's choice."""
    ref, cur = _column(reference, "reference"), _column(current, "current")
    kind = _resolve_kind(kind, ref, cur)
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    if ref.size == 0 or cur.size == 0:
        chosen = method or default_method(kind, ref.size, _union_size(ref, cur))
        limit = default_threshold(chosen) if threshold is None else _check_threshold(threshold)
        empty = " and ".join(side for side, col in (("reference", ref), ("current", cur)) if col.size == 0)
        return _no_data(
            feature, kind, chosen, limit, ref.size, cur.size, f"{empty} empty after dropping missing values"
        )

    counts: tuple[list[Any], FloatArray, FloatArray] | None = None
    if method is None:
        if kind == "numerical" and ref.n_unique() > CATEGORICAL_MAX_UNIQUE:
            n_unique = ref.n_unique()  # the union has at least as many: the same choice
        elif kind == "categorical":
            counts = _category_counts(ref, cur)
            n_unique = len(counts[0])
        else:
            n_unique = _union_size(ref, cur)
        method = default_method(kind, ref.size, n_unique)
    limit = default_threshold(method) if threshold is None else _check_threshold(threshold)

    notes: list[str] = []
    if method in _NUMERIC_ONLY_METHODS:
        _require_numeric(ref, cur, f"method {method!r}")
    if method == "ks":
        statistic = _ks(ref, cur)
    elif method == "wasserstein":
        statistic, std = _normalized_wasserstein(ref, cur)
        if std < WASSERSTEIN_MIN_NORM:
            notes.append(f"reference std {std:.3g} < {WASSERSTEIN_MIN_NORM}: divided by {WASSERSTEIN_MIN_NORM}")
    elif method in ("chisquare", "z"):
        keys, ref_counts, cur_counts = counts if counts is not None else _category_counts(ref, cur)
        if len(keys) < 2:
            notes.append("one category on both sides")
        if method == "chisquare":
            new = int(np.count_nonzero((ref_counts == 0) & (cur_counts > 0)))
            if new:
                notes.append(f"{new} categor{'y' if new == 1 else 'ies'} absent from the reference")
            statistic = _chisquare(ref_counts, cur_counts)
        else:
            statistic = _z_test(keys, ref_counts, cur_counts)
    else:
        if counts is not None:
            ref_counts, cur_counts = counts[1], counts[2]
        else:
            ref_counts, cur_counts = _binned_counts(ref, cur, kind, "sturges")
        ref_shares, cur_shares = ref_counts / ref.size, cur_counts / cur.size
        statistic = (
            _jensen_shannon(ref_shares, cur_shares, None) if method == "jensenshannon" else _psi(ref_shares, cur_shares)
        )
        notes.append(f"{ref_counts.size} bin{'' if ref_counts.size == 1 else 's'}")

    drifted = _is_drifted(method, statistic, limit)
    return FeatureDrift(
        feature=feature,
        kind=kind,
        method=method,
        statistic=statistic,
        threshold=limit,
        drifted=drifted,
        reference_size=ref.size,
        current_size=cur.size,
        detail="; ".join([_verdict(method, statistic, limit, drifted), *notes]),
    )


def _workers(requested: int | None, tasks: int) -> int:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers must be at least 1, got {requested}")
        return min(requested, max(tasks, 1))
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, tasks))


def map_on_threads(function: Callable[[Item], Result], items: Sequence[Item], workers: int | None) -> list[Result]:
    """`function` of each item, in order, on `workers` threads (default: one per available
    CPU, at most one per item); raises ValueError when `workers` is below 1."""
    n_workers = _workers(workers, len(items))
    if n_workers > 1:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]


def _untested(feature: str, column_type: ColumnType, column: pd.Series[Any] | None) -> FeatureDrift:
    """A column Evidently's `DataDriftPreset` would not test as numerical or categorical."""
    why = {
        "text": f"more than {TEXT_DISTINCT_SHARE:.0%} of its values are distinct, so Evidently types it as text",
        "unknown": "all missing"
        if column is not None and column.count() == 0
        else f"dtype {column.dtype if column is not None else '?'} has no drift type in Evidently",
        "datetime": "a datetime column",
        "list": "a column of lists",
    }[column_type]
    return FeatureDrift(
        feature=feature,
        kind="categorical",
        method="chisquare",
        statistic=math.nan,
        threshold=default_threshold("chisquare"),
        drifted=False,
        reference_size=0,
        current_size=0,
        detail=f"no data: not tested ({why}); give its kind in monitoring.drift.kinds to test it",
    )


def dataset_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    methods: Mapping[str, Method] | None = None,
    thresholds: Mapping[str, float] | None = None,
    kinds: Mapping[str, Kind] | None = None,
    share_threshold: float = DEFAULT_SHARE_THRESHOLD,
    workers: int | None = None,
) -> DatasetDrift:
    """Drift of each column and of the dataset: drifted if drifted/tested features ≥ `share_threshold`.

    `columns` defaults to the reference's columns; a column missing from a frame is reported as
    without data. Each column's kind is the one Evidently's `Dataset` infers on the current data
    (`evidently_column_type`; a column it would not test is reported as not tested, with the
    reason) unless `kinds` gives it. `methods` and `thresholds` override Evidently's choice per
    column. Features run on `workers` threads (default: one per available CPU); numpy's sorts
    release the GIL.
    """
    if not 0.0 <= share_threshold <= 1.0:
        raise ValueError(f"share_threshold must be between 0 and 1, got {share_threshold}")
    names: list[Any] = list(reference.columns) if columns is None else list(columns)
    if len(set(names)) != len(names):
        raise ValueError("columns must not repeat")
    neither = [name for name in names if name not in reference.columns and name not in current.columns]
    if neither:
        raise KeyError(f"columns in neither frame: {neither}")
    for side, frame in (("reference", reference), ("current", current)):
        repeated = set(frame.columns[frame.columns.duplicated()]) & set(names)
        if repeated:
            raise ValueError(f"the {side} frame repeats columns {sorted(map(str, repeated))}")
    methods = dict(methods or {})
    thresholds = dict(thresholds or {})
    kinds = dict(kinds or {})
    unknown = (set(methods) | set(thresholds) | set(kinds)) - set(names)
    if unknown:
        raise ValueError(f"methods/thresholds/kinds name columns that are not compared: {sorted(map(str, unknown))}")
    bad_kinds = {name: kind for name, kind in kinds.items() if kind not in KINDS}
    if bad_kinds:
        raise ValueError(f"kinds must be one of {KINDS}, got {bad_kinds}")

    empty: pd.Series[Any] = pd.Series([], dtype=np.float64)
    # Columns are taken out in this thread: DataFrame.__getitem__ fills a cache.
    jobs = [
        (
            name,
            reference[name] if name in reference.columns else None,
            current[name] if name in current.columns else None,
        )
        for name in names
    ]

    def one(job: tuple[Any, pd.Series[Any] | None, pd.Series[Any] | None]) -> FeatureDrift:
        name, ref, cur = job
        kind = kinds.get(name)
        typed = cur if cur is not None else ref
        inferred = evidently_column_type(typed) if kind is None and typed is not None else None
        if inferred is not None and inferred not in KINDS:
            return _untested(str(name), inferred, typed)
        try:
            result = feature_drift(
                str(name),
                empty if ref is None else ref,
                empty if cur is None else cur,
                method=methods.get(name),
                threshold=thresholds.get(name),
                kind=kind or inferred,
            )
        except ValueError as error:
            raise ValueError(f"column {name!r}: {error}") from None
        if ref is None or cur is None:
            side = "reference" if ref is None else "current"
            result = replace(result, detail=f"no data: column missing from {side}; not tested")
        return result

    features = map_on_threads(one, jobs, workers)

    tested = [f for f in features if f.reference_size > 0 and f.current_size > 0]
    drifted_count = sum(f.drifted for f in tested)
    share = drifted_count / len(tested) if tested else 0.0
    return DatasetDrift(
        features=features,
        drifted_share=share,
        share_threshold=share_threshold,
        drifted=bool(tested) and share >= share_threshold,
    )
