"""Traffic features, KPIs and embedding drift, checked against plain Python, numpy and scikit-learn on the same data."""

import json
import math
import re
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from governance_assets.lib.monitoring import traffic_features as tf
from governance_assets.lib.monitoring.traffic import FIELDS, TRAFFIC_SCHEMA, canonical_metadata
from governance_assets.lib.monitoring.traffic_generator import generate_traffic

START = date(2026, 3, 2)


def traffic(rows: list[dict[str, Any]]) -> pa.Table:
    """A table in `TRAFFIC_SCHEMA`; each row gives the fields it cares about, the rest get defaults."""
    defaults: dict[str, Any] = {
        "timestamp": datetime(2026, 3, 2, 12, tzinfo=UTC),
        "model": "simple/model1",
        "prompt": "What is the capital of France?",
        "completion": "Paris.",
        "latency_ms": 100.0,
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "feedback": None,
        "metadata": canonical_metadata({"language": "en", "user_segment": "free"}),
    }
    records = [{**defaults, "request_id": f"r{i}", **row} for i, row in enumerate(rows)]
    return pa.Table.from_pylist(records, schema=TRAFFIC_SCHEMA)


def features_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return tf.traffic_features(traffic(rows))


# --- columns ---------------------------------------------------------------------------------------

SMALL = [
    {"prompt": "Hello", "completion": "Hi there!", "latency_ms": 12.5, "prompt_tokens": 1, "completion_tokens": 3},
    {"prompt": "Ça va? 😀", "completion": "", "latency_ms": 0.0, "prompt_tokens": 4, "completion_tokens": 0},
    {"prompt": "日本語のテキスト", "completion": "naïve café\n\ttabs", "latency_ms": 3.25, "model": "other/m2"},
    {"prompt": "x" * 5000, "completion": "I cannot do that.", "latency_ms": 1e6, "prompt_tokens": 5000},
]


def test_columns_dtypes_and_values_match_plain_python() -> None:
    frame = features_of(SMALL)
    assert list(frame.columns) == list(tf.FEATURES)
    expected_dtypes = {
        "prompt_chars": "int64",
        "completion_chars": "int64",
        "prompt_tokens": "int64",
        "completion_tokens": "int64",
        "latency_ms": "float64",
        "refusal": "bool",
        "pii": "bool",
        "model": "object",
        "language": "object",
        "user_segment": "object",
    }
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == expected_dtypes
    table = traffic(SMALL)
    assert frame["prompt_chars"].tolist() == [len(p) for p in table.column("prompt").to_pylist()]
    assert frame["completion_chars"].tolist() == [len(c) for c in table.column("completion").to_pylist()]
    assert frame["prompt_tokens"].tolist() == table.column("prompt_tokens").to_pylist()
    assert frame["completion_tokens"].tolist() == table.column("completion_tokens").to_pylist()
    assert frame["latency_ms"].tolist() == table.column("latency_ms").to_pylist()
    assert frame["model"].tolist() == ["simple/model1", "simple/model1", "other/m2", "simple/model1"]
    assert frame["refusal"].tolist() == [False, False, False, True]
    assert not frame["pii"].any()
    assert frame["language"].tolist() == ["en"] * 4


def test_features_say_which_are_categorical() -> None:
    numerical = [name for name, kind in tf.FEATURES.items() if kind == "numerical"]
    assert numerical == ["prompt_chars", "completion_chars", "prompt_tokens", "completion_tokens", "latency_ms"]
    assert set(tf.FEATURES.values()) == {"numerical", "categorical"}


def test_empty_table_gives_the_columns_without_rows() -> None:
    frame = tf.traffic_features(TRAFFIC_SCHEMA.empty_table())
    assert list(frame.columns) == list(tf.FEATURES)
    assert len(frame) == 0
    assert str(frame["prompt_chars"].dtype) == "int64"
    assert str(frame["refusal"].dtype) == "bool"


def test_a_missing_column_or_a_null_in_a_required_one_is_refused() -> None:
    table = traffic([{}])
    with pytest.raises(KeyError):
        tf.traffic_features(table.drop_columns(["completion"]))
    nulls = table.set_column(FIELDS.index("prompt"), pa.field("prompt", pa.string()), pa.array([None], pa.string()))
    with pytest.raises(ValueError, match="null"):
        tf.traffic_features(nulls)
    with pytest.raises(ValueError, match="workers"):
        tf.traffic_features(table, workers=0)


# --- refusal ---------------------------------------------------------------------------------------

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request.",
    "Sorry, I am unable to provide that information.",
    "I can’t help with creating malware.",
    '  "I can not share personal data."',
    "**I won't do that.**",
    "I will not write that essay.",
    "As an AI language model, I do not have opinions.",
    "I apologize, but that is not something I can do.",
    "Unfortunately, I'm unable to browse the web.",
    "i am not able to comply.",
    "SORRY, BUT NO.",
    "I must decline this request.",
    "> I'm not permitted to discuss that.",
]
ANSWERS = [
    "Paris is the capital of France.",
    "I'm sorry to hear that! Here are some steps that may help.",
    "Sure. Note that I cannot guarantee the code is bug-free.",  # the phrase is not at the start
    "Sorry for the confusion: the answer is 42.",
    "I can help with that. First, open the settings.",
    "Icannot is not a word.",
    "As an aid to memory, use a mnemonic.",
    "",
]


@pytest.mark.parametrize(("completion", "expected"), [(r, True) for r in REFUSALS] + [(a, False) for a in ANSWERS])
def test_refusal(completion: str, expected: bool) -> None:
    assert features_of([{"completion": completion}])["refusal"].tolist() == [expected]


# --- PII -------------------------------------------------------------------------------------------

PII_CASES = [
    ("write to john.doe@example.co.uk today", {"email"}),
    ("CC: A_B+tag@mail-server.example.org", {"email"}),
    ("call +44 20 7946 0958 now", {"phone"}),
    ("+1 (555) 123-4567", {"phone"}),
    ("my number is (212) 555-0199.", {"phone"}),
    ("dial 1-800-555-0199", {"phone"}),
    ("phone: 415.555.2671", {"phone"}),
    ("+33 1 23 45 67 89", {"phone"}),
    ("SSN 123-45-6789", {"ssn"}),
    ("ssn:078-05-1120.", {"ssn"}),
    ("card 4111 1111 1111 1111 exp 12/28", {"credit_card"}),
    ("5555-5555-5555-4444", {"credit_card"}),
    ("amex 378282246310005", {"credit_card"}),
    ("server at 192.168.0.1.", {"ipv4"}),
    ("8.8.8.8", {"ipv4"}),
    ("ssh root@10.0.0.255 then mail ops@corp.example.com or +49 30 901820", {"email", "ipv4", "phone"}),
]
NOT_PII = [
    "in 2024 we sold 12345 units",
    "call 555-1234",  # 7 digits
    "order 5551234567",  # 10 bare digits are an id, not a phone
    "3 + 4 = 7 and +5 points",
    "SSN 000-12-3456",  # area 000
    "SSN 666-12-3456",
    "SSN 912-34-5678",
    "SSN 123-00-4567",
    "SSN 123-45-0000",
    "date 2024-01-15 time 10:30:00",
    "card 4111 1111 1111 1112",  # fails Luhn
    "id 12345678901234567890123",  # 23 digits: too long for a card
    "version 1.2.3.4.5",
    "256.1.1.1 and 01.02.03.04",
    "@decorator and @mention",
    "user@localhost",
    "(123) 456-7890",  # area code cannot start with 1
    "",
]


@pytest.mark.parametrize(("text", "kinds"), PII_CASES + [(text, set()) for text in NOT_PII])
def test_pii_kinds(text: str, kinds: set[str]) -> None:
    assert tf.pii_kinds(text) == kinds


def test_pii_feature_looks_at_prompt_and_completion() -> None:
    frame = features_of(
        [
            {"prompt": "my email is a.b@example.com"},
            {"completion": "Your card 4111-1111-1111-1111 is noted."},
            {"prompt": "card 4111-1111-1111-1112", "completion": "order 2024-12345"},
            {},
        ]
    )
    assert frame["pii"].tolist() == [True, True, False, False]


def luhn_reference(number: str) -> bool:
    """Luhn as usually written out: double every second digit from the right, add the digits of the products."""
    digits = [int(d) for d in number]
    for i in range(len(digits) - 2, -1, -2):
        digits[i] = sum(int(d) for d in str(2 * digits[i]))
    return sum(digits) % 10 == 0


def test_luhn_matches_known_numbers_and_a_written_out_reference() -> None:
    for valid in ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "79927398713"):
        assert tf.luhn_valid(valid)
        assert not tf.luhn_valid(valid[:-1] + str((int(valid[-1]) + 1) % 10))
    generator = np.random.default_rng(4)
    for _ in range(500):
        number = "".join(map(str, generator.integers(0, 10, size=int(generator.integers(1, 20)))))
        assert tf.luhn_valid(number) == luhn_reference(number)


# --- metadata --------------------------------------------------------------------------------------


METADATA_CASES = [
    (canonical_metadata({"language": "fr", "user_segment": "pro"}), "fr", "pro"),
    (canonical_metadata({"language": "de"}), "de", "unknown"),
    (None, "unknown", "unknown"),
    ("{}", "unknown", "unknown"),
    (canonical_metadata({"language": None, "user_segment": ""}), "unknown", "unknown"),
    (canonical_metadata({"language": 7, "n": -1.5e3, "user_segment": True, "x": None}), "unknown", "unknown"),
    ('{"language":7,"n":-1.5e3,"user_segment":"pro","x":null,"y":false}', "unknown", "pro"),
    ('{"language": 7, "user_segment": "pro"}', "unknown", "pro"),
    (canonical_metadata({"language": {"code": "es"}, "user_segment": ["a"]}), "unknown", "unknown"),
    (canonical_metadata({"extra": {"language": "xx"}, "language": "pt", "user": "language"}), "pt", "unknown"),
    (canonical_metadata({"language": 'fr "ca"', "note": '"user_segment":"x"'}), 'fr "ca"', "unknown"),
    (canonical_metadata({"language": "中文", "session": "a,b{c}", "user_segment": "free"}), "中文", "free"),
    ('{ "user_segment" : "enterprise" , "language" : "en" }', "en", "enterprise"),
    ('{"language":"en","language":"fr"}', "en", "unknown"),  # a repeated key: RE2 takes the first
    ('{"language": "en", "language": "fr"}', "fr", "unknown"),  # and orjson the last
    ("[1, 2]", "unknown", "unknown"),
    ("not json", "unknown", "unknown"),
]


def test_metadata_values_missing_keys_and_null_metadata() -> None:
    frame = features_of([{"metadata": metadata} for metadata, _, _ in METADATA_CASES])
    assert frame["language"].tolist() == [language for _, language, _ in METADATA_CASES]
    assert frame["user_segment"].tolist() == [segment for _, _, segment in METADATA_CASES]


# --- daily KPIs ------------------------------------------------------------------------------------


def test_daily_kpis_match_numpy() -> None:
    latency = [12.0, 250.5, 99.0, 1000.0, 3.0, 48.0, 70.0]
    feedback = [1.0, None, -1.0, None, 1.0, 0.5, None]
    completions = ["ok", "I cannot.", "fine", "I won't.", "sure", "yes", "no"]
    prompts = ["a", "b", "mail x@example.com", "c", "d", "e", "f"]
    table = traffic(
        [
            {"latency_ms": lat, "feedback": fb, "completion": c, "prompt": p}
            for lat, fb, c, p in zip(latency, feedback, completions, prompts, strict=True)
        ]
    )
    given = [f for f in feedback if f is not None]
    expected = {
        "rows": 7.0,
        "latency_ms_mean": float(np.mean(latency)),
        "latency_ms_p95": float(np.percentile(latency, 95)),
        "refusal_rate": 2 / 7,
        "pii_rate": 1 / 7,
        "feedback_mean": float(np.mean(given)),
        "feedback_count": float(len(given)),
    }
    kpis = tf.daily_kpis(table)
    assert list(kpis) == list(tf.KPIS)
    assert kpis == pytest.approx(expected, rel=1e-12)
    assert tf.daily_kpis(table, features=tf.traffic_features(table)) == kpis
    with pytest.raises(ValueError, match="rows"):
        tf.daily_kpis(table, features=tf.traffic_features(table.slice(0, 3)))


def test_daily_kpis_of_an_empty_day_and_a_day_without_feedback() -> None:
    empty = tf.daily_kpis(TRAFFIC_SCHEMA.empty_table())
    assert empty["rows"] == 0.0
    assert empty["feedback_count"] == 0.0
    assert all(math.isnan(empty[key]) for key in tf.KPIS if key not in ("rows", "feedback_count"))
    silent = tf.daily_kpis(traffic([{}, {}]))
    assert math.isnan(silent["feedback_mean"])
    assert silent["feedback_count"] == 0.0
    assert silent["latency_ms_mean"] == 100.0


# --- generated traffic -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    """200,000 generated rows over four days, drift injected on the third."""
    return generate_traffic(START, 4, 50_000, date(2026, 3, 4), seed=11, models=("a/one", "b/two"))


def test_generated_traffic_runs_in_slices_and_matches_pandas(generated: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(generated, schema=TRAFFIC_SCHEMA, preserve_index=False)
    frame = tf.traffic_features(table)
    assert len(frame) == 200_000
    assert frame.equals(tf.traffic_features(table, workers=1))
    assert (frame["prompt_chars"] == generated["prompt"].str.len()).all()
    assert (frame["completion_chars"] == generated["completion"].str.len()).all()
    refusals = {
        "I'm sorry, but I can't help with that.",
        "I cannot assist with this request.",
        "Sorry, I am unable to provide that information.",
    }  # the generator's refusals; its other completions are words that never start one
    assert (frame["refusal"] == generated["completion"].isin(refusals)).all()
    assert 0.03 < frame["refusal"].mean() < 0.15
    assert not frame["pii"].any()
    metadata = [json.loads(m) for m in generated["metadata"]]
    assert frame["language"].tolist() == [m["language"] for m in metadata]
    assert frame["user_segment"].tolist() == [m["user_segment"] for m in metadata]
    assert set(frame["model"]) == {"a/one", "b/two"}


# --- embeddings ------------------------------------------------------------------------------------

P, F = 1099511628211, 0x9E3779B97F4A7C15


def reference_embedding(text: str, dim: int) -> np.ndarray:
    """The documented hashed n-gram embedding, one n-gram at a time in plain Python (ASCII whitespace)."""
    padded = (" " + " ".join(text.lower().split()) + " ").encode()
    counts = np.zeros(2**tf.EMBEDDING_HASH_BITS)
    for n in tf.EMBEDDING_NGRAMS:
        for start in range(len(padded) - n + 1):
            h = 0
            for byte in padded[start : start + n]:
                h = (h * P + byte) % 2**64
            h = ((h + n) * F) % 2**64
            counts[h >> (64 - tf.EMBEDDING_HASH_BITS)] += 1
    vector = counts @ np.random.default_rng(tf.EMBEDDING_SEED).standard_normal((2**tf.EMBEDDING_HASH_BITS, dim))
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


EMBEDDED = ["Hello World", "  hello \t  WORLD ", "Ünïcødé façade — 日本", "ab", "", "The cat sat on the mat. " * 40]


def test_embedding_matches_the_documented_formula() -> None:
    embedded = tf.embed_texts(EMBEDDED, dim=16)
    assert embedded.shape == (len(EMBEDDED), 16)
    for row, text in zip(embedded, EMBEDDED, strict=True):
        np.testing.assert_allclose(row, reference_embedding(text, 16), rtol=1e-10, atol=1e-12)
    norms = np.linalg.norm(embedded, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 5]], 1.0)
    assert norms[4] == 0.0  # "" pads to two spaces: no 3-gram
    np.testing.assert_array_equal(embedded[0], embedded[1])  # case and whitespace do not count


def test_embedding_is_the_same_in_batches_and_from_arrow(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"text number {i} " + "word " * (i % 17) for i in range(300)]
    whole = tf.embed_texts(texts)
    chunked = pa.chunked_array([pa.array(texts[:100]), pa.array([*texts[100:], None])])
    np.testing.assert_array_equal(tf.embed_texts(chunked)[:300], whole)
    monkeypatch.setattr(tf, "_EMBED_BATCH_BYTES", 64)  # a few texts per batch, and texts longer than a batch
    np.testing.assert_allclose(tf.embed_texts(texts), whole, rtol=1e-12, atol=1e-15)
    assert tf.embed_texts([]).shape == (0, tf.EMBEDDING_DIM)
    with pytest.raises(ValueError, match="dim"):
        tf.embed_texts(texts, dim=0)


def test_embedding_with_a_model() -> None:
    def lengths(texts: list[str]) -> list[list[float]]:
        return [[len(t), 1.0] for t in texts]

    np.testing.assert_array_equal(tf.embed_texts(["abc", "de"], model=lengths), [[3.0, 1.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="shape"):
        tf.embed_texts(["abc", "de"], model=lambda texts: [[1.0]])


# --- embedding drift -------------------------------------------------------------------------------

OTHER_WORDS = [
    "patient",
    "dosage",
    "symptom",
    "clinic",
    "diagnosis",
    "therapy",
    "nurse",
    "ward",
    "vaccine",
    "allergy",
    "fracture",
    "scan",
]


def sentences(words: list[str], rows: int, seed: int) -> list[str]:
    generator = np.random.default_rng(seed)
    return [" ".join(generator.choice(words, size=int(generator.integers(5, 30)))) for _ in range(rows)]


def evidently_model_auc(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's `ModelDriftMethod.__call__` (bootstrap off, no PCA) as it is written, on DataFrames."""
    reference_emb, current_emb = pd.DataFrame(reference), pd.DataFrame(current)
    reference_emb["target"] = [1] * reference_emb.shape[0]
    current_emb["target"] = [0] * current_emb.shape[0]
    data = pd.concat((reference_emb, current_emb))
    x_train, x_test, y_train, y_test = train_test_split(
        data.drop("target", axis=1), data["target"], test_size=0.5, random_state=42, shuffle=True
    )
    clf = SGDClassifier(loss="log_loss", random_state=42)
    clf.fit(x_train, y_train)
    return float(roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1]))


def test_same_distribution_does_not_drift(generated: pd.DataFrame) -> None:
    day = generated["timestamp"].dt.date
    reference = generated.loc[day == START, "prompt"].tolist()
    current = generated.loc[day == date(2026, 3, 3), "prompt"].tolist()
    result = tf.text_embedding_drift(reference, current, max_rows=2000)
    assert (result.reference_rows, result.current_rows) == (2000, 2000)
    assert not result.drifted
    assert abs(result.roc_auc - 0.5) < 0.05
    assert result.threshold == 0.55
    assert "≤ 0.550" in result.detail


def test_other_vocabulary_drifts_and_auc_is_evidently_s() -> None:
    words = generate_traffic(START, 1, 300, None, seed=2)["prompt"].str.split().explode().unique().tolist()
    reference = tf.embed_texts(sentences(words, 600, seed=1))
    current = tf.embed_texts(sentences(OTHER_WORDS, 500, seed=2))
    result = tf.embedding_drift(reference, current)
    assert result.drifted
    assert result.roc_auc > 0.95
    assert result.roc_auc == pytest.approx(evidently_model_auc(reference, current), rel=1e-12)
    same = tf.embed_texts(sentences(words, 500, seed=3))
    unchanged = tf.embedding_drift(reference, same)
    assert unchanged.roc_auc == pytest.approx(evidently_model_auc(reference, same), rel=1e-12)
    assert not unchanged.drifted


def test_bootstrap_threshold_is_the_random_score_quantile() -> None:
    reference = np.random.default_rng(5).normal(size=(120, 8))
    current = np.random.default_rng(6).normal(size=(80, 8))
    result = tf.embedding_drift(reference, current, bootstrap=True)
    labels = np.array([1] * 120 + [0] * 80)
    _, _, _, y_test = train_test_split(np.vstack([reference, current]), labels, test_size=0.5, random_state=42)
    random_aucs = []
    for i in range(100):
        np.random.seed(i)  # as Evidently's calc_roc_auc_random does
        random_aucs.append(roc_auc_score(y_test, np.random.rand(len(y_test))))
    assert result.threshold == pytest.approx(float(np.percentile(random_aucs, 95)), rel=1e-12)
    assert result.drifted == (result.roc_auc > result.threshold)
    assert "random-score 95% quantile" in result.detail


def test_subsampling_is_seeded_and_bounded() -> None:
    reference = np.random.default_rng(7).normal(size=(900, 4))
    current = np.random.default_rng(8).normal(size=(700, 4))
    first = tf.embedding_drift(reference, current, max_rows=300, seed=1)
    assert (first.reference_rows, first.current_rows) == (300, 300)
    assert tf.embedding_drift(reference, current, max_rows=300, seed=1) == first
    texts = sentences(OTHER_WORDS, 400, seed=9)
    from_list = tf.text_embedding_drift(texts, texts[::-1], max_rows=150, seed=3)
    from_arrow = tf.text_embedding_drift(
        pa.array(texts), pa.chunked_array([pa.array(texts[::-1])]), max_rows=150, seed=3
    )
    assert from_list == from_arrow
    assert from_list.reference_rows == 150


def test_too_few_rows_give_no_score_and_bad_input_is_refused() -> None:
    tiny = tf.embedding_drift(np.ones((1, 3)), np.zeros((1, 3)))
    assert math.isnan(tiny.roc_auc)
    assert not tiny.drifted
    assert re.search("no score", tiny.detail)
    with pytest.raises(ValueError, match="dimensions"):
        tf.embedding_drift(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="2-D"):
        tf.embedding_drift(np.ones(5), np.ones((5, 1)))
    with pytest.raises(ValueError, match="2-D"):
        tf.embedding_drift(np.ones((0, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        tf.embedding_drift(np.full((5, 2), np.nan), np.ones((5, 2)))
    with pytest.raises(ValueError, match="max_rows"):
        tf.embedding_drift(np.ones((5, 2)), np.ones((5, 2)), max_rows=0)
    with pytest.raises(ValueError, match="max_rows"):
        tf.text_embedding_drift(["a"], ["b"], max_rows=0)
    with pytest.raises(ValueError, match="threshold"):
        tf.embedding_drift(np.ones((5, 2)), np.ones((5, 2)), threshold=math.nan)
