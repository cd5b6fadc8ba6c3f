"""Features of production traffic for drift tests and daily KPIs, and drift of text embeddings.

`traffic_features` turns rows in `traffic.TRAFFIC_SCHEMA` into one row of features per request, the
frame the drift asset compares with its reference (`FEATURES` says which are numerical and which
categorical). Everything is columnar (pyarrow compute, RE2 regular expressions, numpy): no Python
loop runs per row, only over the distinct metadata strings that are not simple objects and over
the texts that may hold a credit-card number. The table is cut into slices of 65,536 rows that run
on one thread per CPU (pyarrow releases the GIL).

=====================  ===========  ==============================================================
feature                dtype        definition
=====================  ===========  ==============================================================
``prompt_chars``       int64        Unicode code points of the prompt (`pc.utf8_length`, = `len`)
``completion_chars``   int64        the same for the completion
``prompt_tokens``      int64        as recorded
``completion_tokens``  int64        as recorded
``latency_ms``         float64      as recorded
``refusal``            bool         the completion opens with a refusal (below)
``pii``                bool         the prompt or the completion contains PII (below)
``model``              object       as recorded
``language``           object       ``metadata["language"]``, or ``"unknown"`` (below)
``user_segment``       object       ``metadata["user_segment"]``, or ``"unknown"``
=====================  ===========  ==============================================================

**Refusal.** Case-insensitive, anchored at the start of the completion after any whitespace,
quotes or Markdown markers (``"'“”‘’*_>#-``) and after an optional apology (``sorry``, ``I'm
sorry``, ``I apologise``, ``apologies``, ``unfortunately``, then an optional ``,.!``): one of
`REFUSAL_OPENINGS` — "I'm sorry, but" / "Sorry, but", "I apologise, but", "I can't" followed by
help, assist, comply, provide, share, support, answer, do that or fulfil, "I cannot" / "I can
not", "I'm unable to" / "I am not able (allowed, permitted) to", "I won't", "I will not", "I must
decline (refuse)", "As an AI". ``’`` counts as an apostrophe, "apologize" as "apologise". So
"Sorry, I am unable to provide that." and "I'm sorry, but no." are refusals; "I'm sorry to hear
that! Here is…" and a refusal phrase in the middle of an answer are not.

**PII** (`PII_KINDS`, one RE2 expression each; digits are ASCII ``0-9``; "not after/before a
digit" means the neighbouring character, or the text's start/end):

* ``email``: ``[A-Za-z0-9._%+-]@([A-Za-z0-9-]+\\.)+[A-Za-z]{2,}`` (a local part, a dotted domain,
  a letters-only top-level domain of ≥ 2 letters). Only texts holding ``@`` are searched.
* ``phone``: international, ``+`` then 8–15 digits (E.164's range, first digit 1–9), each digit
  preceded by at most two of ``space . ( ) -`` (``+44 20 7946 0958``, ``+1 (555) 123-4567``), not
  after a digit or ``+`` nor before a digit; or North American, 10 digits as ``(NXX) XXX-XXXX`` or
  ``NXX-XXX-XXXX`` (separators space, ``.`` or ``-``, area code N = 2–9, optional leading ``1`` or
  ``+1``), not after/before a digit. Ten bare digits are not a phone number (too much like an id),
  nor are ``2024``, ``12345`` or ``555-1234``.
* ``ssn``: US Social Security number ``AAA-GG-SSSS`` not after/before a digit, with the numbers
  the SSA never issues excluded: area 000, 666 and 900–999, group 00, serial 0000.
* ``credit_card``: a maximal run of 13–19 digits, consecutive digits separated by at most one
  space or ``-``, that passes the Luhn checksum (`luhn_valid`). RE2 finds the texts holding a
  run of ≥ 13 digits; their runs are then checked in Python (rare). A random 13–19 digit run
  passes Luhn with probability 1/10.
* ``ipv4``: four dot-separated decimal octets 0–255 without leading zeros, not after a letter,
  digit or ``.`` and not before a letter, digit or ``.digit`` (so ``1.2.3.4.5`` is not one; a
  four-part version number such as ``1.2.3.4`` is).

**Metadata.** The column holds a JSON object (compact, sorted keys: `traffic.canonical_metadata`).
Each slice is dictionary-encoded and only its distinct metadata strings are read. A distinct
string that is a compact object of scalar values whose strings hold no escapes (the usual
``{"language":"en","user_segment":"pro"}``, also with numbers, booleans or nulls) is read by
RE2: the string after ``{"key":"`` or ``,"key":"`` (no string there can hold a ``"``, so this is
a key at the top level). Any other (nesting, escapes, spaces…) is decoded with orjson. A
non-empty string value is taken as is; a missing key, null, empty string, number, boolean,
object, array, null metadata or text that is not a JSON object gives ``"unknown"``. A key that
appears twice (never in stored metadata, which is written from a dict) gives the first value in
the RE2 case and the last in the orjson case.

**Daily KPIs** (`daily_kpis`, keys `KPIS`): ``rows``; ``latency_ms_mean`` and ``latency_ms_p95``
(95th percentile, linear interpolation as `np.percentile`); ``refusal_rate`` and ``pii_rate``
(shares of rows); ``feedback_mean`` over non-null feedback and ``feedback_count`` of them. Means,
percentile and rates of an empty table, and the feedback mean without feedback, are NaN.

**Text embeddings** (`embed_texts`). A hashed character n-gram embedding, *not* a semantic
model: texts that share spelling look alike whatever they mean. Each text is lower-cased
(`pc.utf8_lower`), runs of whitespace become one space, and it is trimmed and padded with one
space at each end. Every byte n-gram of its UTF-8 encoding, n = 3, 4, 5 (`EMBEDDING_NGRAMS`),
gets the hash h = ((b₀·P + b₁)·P + … + bₙ₋₁ + n)·F mod 2⁶⁴ (P = 1099511628211, the FNV-1 prime;
F = 0x9E3779B97F4A7C15, Fibonacci hashing) and bucket h >> (64 − 14): 2¹⁴ buckets
(`EMBEDDING_HASH_BITS`). The vector of bucket counts is multiplied by a fixed Gaussian random
projection, `np.random.default_rng(EMBEDDING_SEED).standard_normal((2**14, dim))`, and the result
scaled to unit L2 norm (a text without n-grams gives zeros; scaling the counts to unit norm
first, as ``norm="l2"`` does, would change nothing). This is scikit-learn's
`HashingVectorizer(analyzer="char", ngram_range=(3, 5), alternate_sign=False)` followed by a
random projection, but with another hash, on bytes, on padded text and in numpy:
`HashingVectorizer` builds every n-gram as a Python string and took 0.7–1.4 s per 1,000 generated completions (analyzer
``char``/``char_wb``) on the development machine, this takes about 0.2 s. Pass ``model=`` a
callable from a list of texts to an array of shape (texts, dim), e.g. the ``encode`` method of a
locally installed sentence-transformers model, to use a semantic embedding instead.

**Embedding drift** (`embedding_drift`): Evidently's default method for embeddings, the domain
classifier ``model()``. Source, Evidently 0.7 (the repository evidentlyai/evidently):
`src/evidently/legacy/metrics/data_drift/embedding_drift_methods.py` (``ModelDriftMethod``,
``model``) and `embeddings_drift.py` (``EmbeddingsDriftMetric``). Reference rows are labelled 1
and current rows 0, concatenated (reference first) and split in halves with
`sklearn.model_selection.train_test_split(test_size=0.5, random_state=42, shuffle=True)`;
`sklearn.linear_model.SGDClassifier(loss="log_loss", random_state=42)` (otherwise defaults; no
scaling, no PCA) learns on one half; the drift score is `roc_auc_score` of its probability of
"reference" on the other half. Drift when the ROC AUC is *strictly* above `threshold` (default
0.55). With ``bootstrap=True`` the threshold is instead the `quantile_probability` (0.95)
percentile of the ROC AUCs of 100 random scores on the same test labels, drawn as
``np.random.seed(i); np.random.rand(len(y_test))`` for i = 0…99 (here with a local
``RandomState(i)``, the same numbers). ``model()`` defaults to ``bootstrap=None`` (off);
``EmbeddingsDriftMetric`` without a method uses ``model(bootstrap=<reference rows < 1000>)``.
For speed, each side is first subsampled to at most `max_rows` rows, uniformly without
replacement with ``np.random.default_rng(seed)`` (reference drawn first, row order kept); Evidently
uses all rows. When a half holds a single class (a side with very few rows) there is no score:
ROC AUC NaN, not drifted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeAlias

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from governance_assets.lib.monitoring.drift import Kind, map_on_threads
from governance_assets.lib.monitoring.traffic import FIELDS, TRAFFIC_SCHEMA

FloatArray: TypeAlias = "NDArray[np.float64]"
BoolArray: TypeAlias = "NDArray[np.bool_]"
Texts: TypeAlias = "Sequence[str] | pa.Array | pa.ChunkedArray"
"""Texts: a sequence of strings or a pyarrow string column (nulls count as empty texts)."""
TextModel: TypeAlias = "Callable[[list[str]], ArrayLike]"
"""An embedding model: texts → array of shape (texts, dim), e.g. `SentenceTransformer.encode`."""

FEATURES: Mapping[str, Kind] = {
    "prompt_chars": "numerical",
    "completion_chars": "numerical",
    "prompt_tokens": "numerical",
    "completion_tokens": "numerical",
    "latency_ms": "numerical",
    "refusal": "categorical",
    "pii": "categorical",
    "model": "categorical",
    "language": "categorical",
    "user_segment": "categorical",
}
"""The columns of `traffic_features`, in order, with the kind the drift test should treat them as."""
METADATA_FEATURES: tuple[str, ...] = ("language", "user_segment")
"""Features read from the metadata object, under the same key."""
UNKNOWN = "unknown"
"""A metadata feature without a usable value."""
KPIS: tuple[str, ...] = (
    "rows",
    "latency_ms_mean",
    "latency_ms_p95",
    "refusal_rate",
    "pii_rate",
    "feedback_mean",
    "feedback_count",
)
"""The keys of `daily_kpis`, in order."""
PII_KINDS: tuple[str, ...] = ("email", "phone", "ssn", "credit_card", "ipv4")

REFUSAL_OPENINGS: tuple[str, ...] = (
    r"(?:i['’]m |i am )?sorry,? but\b",
    r"i apologi[sz]e,? but\b",
    r"i can['’]?t (?:help|assist|comply|provide|share|support|answer|do that|fulfil)",
    r"i can ?not\b",
    r"i(?:['’]m| am) (?:unable|not able|not allowed|not permitted) to\b",
    r"i won['’]?t\b",
    r"i will not\b",
    r"i must (?:decline|refuse)\b",
    r"as an ai\b",
)
"""Case-insensitive RE2 expressions, one per refusal opening (see the module docstring)."""
_REFUSAL = (
    r"^[\s\"'“”‘’*_>#-]*"
    r"(?:(?:(?:i['’]m |i am )?sorry|i apologi[sz]e|(?:my )?apologies|unfortunately)[,.!]?\s+)?"
    "(?:" + "|".join(REFUSAL_OPENINGS) + ")"
)

_EMAIL = r"[A-Za-z0-9._%+-]@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}"
_PHONE = (
    r"(?:^|[^0-9+])\+[1-9](?:[ .()-]{0,2}[0-9]){7,14}(?:$|[^0-9])"
    r"|(?:^|[^0-9])(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}(?:$|[^0-9])"
)
_SSN = (
    r"(?:^|[^0-9])(?:00[1-9]|0[1-9][0-9]|[1-5][0-9]{2}|6[0-5][0-9]|66[0-57-9]|6[7-9][0-9]|[78][0-9]{2})"
    r"-(?:0[1-9]|[1-9][0-9])-(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})(?:$|[^0-9])"
)
_CARD_RUN = r"[0-9](?:[ -]?[0-9]){12}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(?:^|[^0-9A-Za-z.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:$|[^0-9A-Za-z.]|\.(?:$|[^0-9]))"
_DIGIT_PII = "|".join(f"(?:{pattern})" for pattern in (_PHONE, _SSN, _CARD_RUN, _IPV4))
_JSON_SCALAR = r'(?:"[^"\\]*"|true|false|null|-?[0-9][0-9.eE+-]*)'
_FLAT_OBJECT = rf'^\{{(?:"[^"\\]*":{_JSON_SCALAR}(?:,"[^"\\]*":{_JSON_SCALAR})*)?\}}$'
"""A compact JSON object of scalar values whose strings hold no escapes."""
_DIGIT_RUN = re.compile(r"[0-9](?:[ -]?[0-9])*")
_CARD_DIGITS = range(13, 20)

_SLICE_ROWS = 1 << 16

EMBEDDING_NGRAMS: tuple[int, ...] = (3, 4, 5)
EMBEDDING_HASH_BITS = 14
EMBEDDING_SEED = 0
"""Seed of the random projection of `embed_texts`."""
EMBEDDING_DIM = 64
"""Dimension of the hashed embedding."""
_FNV_PRIME = np.uint64(1099511628211)
_FIBONACCI = np.uint64(0x9E3779B97F4A7C15)
_EMBED_BATCH_BYTES = 1 << 22
"""Texts are embedded in batches of about this many bytes, to bound the memory of the n-grams."""

DRIFT_THRESHOLD = 0.55
"""Evidently's default ROC AUC threshold of ``model()``."""
DRIFT_MAX_ROWS = 5000
"""Rows per side the domain classifier sees at most (the policy's ``embedding_max_rows`` default)."""
_SPLIT_SEED = 42
_BOOTSTRAP_SAMPLES = 100


# --- traffic features ----------------------------------------------------------------------------


def _mask(array: pa.Array | pa.ChunkedArray) -> BoolArray:
    """A boolean array (nulls as False) as numpy."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=np.bool_)


def _matches(texts: pa.Array, pattern: str) -> BoolArray:
    return _mask(pc.match_substring_regex(texts, pattern))


def luhn_valid(digits: str) -> bool:
    """Whether a string of decimal digits passes the Luhn checksum (every second digit from the right doubled)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _has_card_number(text: str) -> bool:
    for run in _DIGIT_RUN.finditer(text):
        digits = run.group().replace(" ", "").replace("-", "")
        if len(digits) in _CARD_DIGITS and luhn_valid(digits):
            return True
    return False


def _pii_masks(texts: pa.Array) -> dict[str, BoolArray]:
    """Per kind of PII, which texts contain it."""
    masks = {kind: np.zeros(len(texts), dtype=np.bool_) for kind in PII_KINDS}
    at = np.flatnonzero(_matches(texts, "@"))
    masks["email"][at] = _matches(texts.take(at), _EMAIL)
    digits = np.flatnonzero(_matches(texts, _DIGIT_PII))
    candidates = texts.take(digits)
    masks["phone"][digits] = _matches(candidates, _PHONE)
    masks["ssn"][digits] = _matches(candidates, _SSN)
    masks["ipv4"][digits] = _matches(candidates, _IPV4)
    runs = _matches(candidates, _CARD_RUN)
    masks["credit_card"][digits[runs]] = [_has_card_number(t) for t in candidates.filter(runs).to_pylist()]
    return masks


def _has_pii(texts: pa.Array) -> BoolArray:
    masks = list(_pii_masks(texts).values())
    return np.asarray(np.logical_or.reduce(masks), dtype=np.bool_)


def pii_kinds(text: str) -> set[str]:
    """The kinds of PII (`PII_KINDS`) in one text, by the same expressions as the ``pii`` feature."""
    return {kind for kind, mask in _pii_masks(pa.array([text], pa.string())).items() if mask[0]}


def _metadata_label(value: Any) -> str:
    return value if isinstance(value, str) and value else UNKNOWN


def _metadata_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _metadata_features(metadata: pa.Array) -> dict[str, pa.Array]:
    """`METADATA_FEATURES` of each row, from the distinct metadata strings (module docstring)."""
    encoded = metadata.dictionary_encode()
    distinct = encoded.dictionary
    other = pa.array(~_matches(distinct, _FLAT_OBJECT))
    objects = [_metadata_object(text) for text in distinct.filter(other).to_pylist()]
    features = {}
    for key in METADATA_FEATURES:
        found = pc.struct_field(pc.extract_regex(distinct, f'[{{,]"{key}":"(?P<value>[^"]*)"'), [0])
        labels = pc.replace_with_mask(
            found, other, pa.array([_metadata_label(o.get(key)) for o in objects], pa.string())
        )
        labels = pc.if_else(pc.equal(labels, ""), pa.scalar(None, pa.string()), labels)
        features[key] = pc.fill_null(labels.take(encoded.indices), UNKNOWN)
    return features


def _slice_features(rows: pa.Table) -> pa.Table:
    prompt = rows.column("prompt").combine_chunks()
    completion = rows.column("completion").combine_chunks()
    return pa.table(
        {
            "prompt_chars": pc.utf8_length(prompt).cast(pa.int64()),
            "completion_chars": pc.utf8_length(completion).cast(pa.int64()),
            "prompt_tokens": rows.column("prompt_tokens"),
            "completion_tokens": rows.column("completion_tokens"),
            "latency_ms": rows.column("latency_ms"),
            "refusal": pc.match_substring_regex(completion, _REFUSAL, ignore_case=True),
            "pii": pa.array(_has_pii(prompt) | _has_pii(completion)),
            "model": rows.column("model"),
            **_metadata_features(rows.column("metadata").combine_chunks()),
        }
    )


def traffic_features(table: pa.Table, *, workers: int | None = None) -> pd.DataFrame:
    """One row of `FEATURES` per traffic row (`TRAFFIC_SCHEMA`), in the table's order.

    Slices of the table run on `workers` threads (default: one per available CPU). Raises
    KeyError if a schema column is missing and ValueError if a required one holds nulls."""
    table = table.select(list(FIELDS)).cast(TRAFFIC_SCHEMA)
    slices = [table.slice(start, _SLICE_ROWS) for start in range(0, max(table.num_rows, 1), _SLICE_ROWS)]
    parts = map_on_threads(_slice_features, slices, workers)
    frame: pd.DataFrame = pa.concat_tables(parts).to_pandas()
    return frame


def daily_kpis(table: pa.Table, *, features: pd.DataFrame | None = None) -> dict[str, float]:
    """The `KPIS` of a table of traffic; pass its `traffic_features` if already computed."""
    if features is None:
        features = traffic_features(table)
    if len(features) != table.num_rows:
        raise ValueError(f"features have {len(features)} rows, the table {table.num_rows}")
    latency = table.column("latency_ms").to_numpy()
    feedback = table.column("feedback").drop_null().to_numpy()
    empty = table.num_rows == 0
    return {
        "rows": float(table.num_rows),
        "latency_ms_mean": math.nan if empty else float(np.mean(latency)),
        "latency_ms_p95": math.nan if empty else float(np.percentile(latency, 95)),
        "refusal_rate": math.nan if empty else float(features["refusal"].mean()),
        "pii_rate": math.nan if empty else float(features["pii"].mean()),
        "feedback_mean": float(np.mean(feedback)) if feedback.size else math.nan,
        "feedback_count": float(feedback.size),
    }


# --- text embeddings -----------------------------------------------------------------------------


def _text_array(texts: Texts) -> pa.LargeStringArray:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    array = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.large_string())
    return pc.fill_null(array.cast(pa.large_string()), "")


@cache
def _projection(dim: int) -> FloatArray:
    matrix = np.random.default_rng(EMBEDDING_SEED).standard_normal((1 << EMBEDDING_HASH_BITS, dim))
    matrix.flags.writeable = False
    return matrix


def _ngram_counts(data: NDArray[np.uint8], lengths: NDArray[np.int64]) -> sparse.csr_matrix:
    """Texts (concatenated UTF-8 `data`, byte `lengths`) × hash buckets: n-gram counts."""
    text = data.astype(np.uint64)
    row = np.repeat(np.arange(lengths.size), lengths)
    room = np.cumsum(lengths)[row] - np.arange(text.size)  # bytes from each position to its text's end
    rows, buckets = [], []
    for n in EMBEDDING_NGRAMS:
        start = np.flatnonzero(room >= n)
        hashed = text[start]
        for k in range(1, n):
            hashed = hashed * _FNV_PRIME + text[start + k]
        hashed = (hashed + np.uint64(n)) * _FIBONACCI
        rows.append(row[start])
        buckets.append((hashed >> np.uint64(64 - EMBEDDING_HASH_BITS)).astype(np.int64))
    coordinates = (np.concatenate(rows), np.concatenate(buckets))
    ones = np.ones(coordinates[0].size)
    return sparse.csr_matrix((ones, coordinates), shape=(lengths.size, 1 << EMBEDDING_HASH_BITS))


def _hashed_embedding(texts: pa.LargeStringArray, dim: int) -> FloatArray:
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(texts), r"\s+", " "))
    space = pa.scalar(" ", pa.large_string())
    padded = pc.binary_join_element_wise(space, spaced, space, pa.scalar("", pa.large_string()))
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int64)[padded.offset : padded.offset + len(padded) + 1]
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)
    projection = _projection(dim)
    out = np.empty((len(padded), dim))
    first = 0
    while first < len(padded):
        last = max(first + 1, int(np.searchsorted(offsets, offsets[first] + _EMBED_BATCH_BYTES, side="right")) - 1)
        counts = _ngram_counts(data[offsets[first] : offsets[last]], np.diff(offsets[first : last + 1]))
        out[first:last] = counts @ projection
        first = last
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def embed_texts(texts: Texts, *, dim: int = EMBEDDING_DIM, model: TextModel | None = None) -> FloatArray:
    """Embeddings of `texts`, shape (texts, dim): hashed n-grams (module docstring) or `model`'s.

    `dim` applies to the hashed embedding only; a `model` decides its own dimension."""
    array = _text_array(texts)
    if model is not None:
        embedded = np.asarray(model(array.to_pylist()), dtype=np.float64)
        if embedded.ndim != 2 or embedded.shape[0] != len(array):
            raise ValueError(f"the model returned shape {embedded.shape} for {len(array)} texts")
        return embedded
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    if len(array) == 0:
        return np.zeros((0, dim))
    return _hashed_embedding(array, dim)


# --- embedding drift -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingDrift:
    """Drift of embeddings by Evidently's domain classifier (module docstring)."""

    roc_auc: float
    """ROC AUC of the classifier on the held-out half; NaN when a half held one class only."""
    threshold: float
    """The ROC AUC above which the embeddings drifted (with bootstrap, the random-score quantile)."""
    drifted: bool
    reference_rows: int
    """Reference rows used, after subsampling."""
    current_rows: int
    """Current rows used, after subsampling."""
    detail: str
    """Human-readable account of the decision."""


def _sample(size: int, max_rows: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Indices of at most `max_rows` of `size` rows, uniformly without replacement, in order."""
    if size <= max_rows:
        return np.arange(size)
    return np.sort(rng.choice(size, max_rows, replace=False))


def _check_matrix(values: ArrayLike, side: str) -> FloatArray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"{side} embeddings must be a 2-D array with rows, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{side} embeddings hold NaN or infinite values")
    return matrix


def embedding_drift(
    reference_emb: ArrayLike,
    current_emb: ArrayLike,
    *,
    threshold: float = DRIFT_THRESHOLD,
    seed: int = 0,
    max_rows: int = DRIFT_MAX_ROWS,
    bootstrap: bool = False,
    quantile_probability: float = 0.95,
) -> EmbeddingDrift:
    """Drift of `current_emb` from `reference_emb` (rows are embeddings) by Evidently's ``model()`` method."""
    reference = _check_matrix(reference_emb, "reference")
    current = _check_matrix(current_emb, "current")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"reference has {reference.shape[1]} dimensions, current {current.shape[1]}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    rng = np.random.default_rng(seed)
    reference = reference[_sample(len(reference), max_rows, rng)]
    current = current[_sample(len(current), max_rows, rng)]
    features = np.vstack([reference, current])
    labels = np.concatenate([np.ones(len(reference), dtype=np.int64), np.zeros(len(current), dtype=np.int64)])
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.5, random_state=_SPLIT_SEED, shuffle=True
    )
    sizes = {"reference_rows": len(reference), "current_rows": len(current)}
    if len(np.unique(y_train)) < 2 or len(np.unique(y_test)) < 2:
        detail = f"no score: a half of the {len(labels)} rows holds one side only"
        return EmbeddingDrift(roc_auc=math.nan, threshold=threshold, drifted=False, detail=detail, **sizes)
    classifier = SGDClassifier(loss="log_loss", random_state=_SPLIT_SEED).fit(x_train, y_train)
    roc_auc = float(roc_auc_score(y_test, classifier.predict_proba(x_test)[:, 1]))
    if bootstrap:
        random_aucs = [
            roc_auc_score(y_test, np.random.RandomState(i).rand(len(y_test))) for i in range(_BOOTSTRAP_SAMPLES)
        ]
        threshold = float(np.percentile(random_aucs, 100 * quantile_probability))
    drifted = roc_auc > threshold
    rule = f"random-score {quantile_probability:.0%} quantile " if bootstrap else ""
    detail = f"ROC AUC {roc_auc:.3f} {'>' if drifted else '≤'} {rule}{threshold:.3f}"
    return EmbeddingDrift(roc_auc=roc_auc, threshold=threshold, drifted=drifted, detail=detail, **sizes)


def _take_texts(texts: Texts, indices: NDArray[np.int64]) -> Texts:
    if isinstance(texts, pa.Array | pa.ChunkedArray):
        return texts.take(pa.array(indices))
    return [texts[i] for i in indices.tolist()]


def text_embedding_drift(
    reference_texts: Texts,
    current_texts: Texts,
    *,
    threshold: float = DRIFT_THRESHOLD,
    seed: int = 0,
    max_rows: int = DRIFT_MAX_ROWS,
    bootstrap: bool = False,
    dim: int = EMBEDDING_DIM,
    model: TextModel | None = None,
) -> EmbeddingDrift:
    """`embedding_drift` of the texts' `embed_texts`, subsampling the texts before embedding them."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    rng = np.random.default_rng(seed)
    reference = _take_texts(reference_texts, _sample(len(reference_texts), max_rows, rng))
    current = _take_texts(current_texts, _sample(len(current_texts), max_rows, rng))
    return embedding_drift(
        embed_texts(reference, dim=dim, model=model),
        embed_texts(current, dim=dim, model=model),
        threshold=threshold,
        seed=seed,
        max_rows=max_rows,
        bootstrap=bootstrap,
    )
