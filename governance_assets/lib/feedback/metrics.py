"""The per-request metrics an experiment can test: what each measures and which way is better."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricName = Literal[
    "positive_feedback", "negative_feedback", "flagged", "corrected", "rating", "latency_ms", "completion_tokens"
]


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is defined over the requests assigned to a variant."""

    binary: bool
    """0/1 per request (a rate); else a mean of a number."""
    higher_is_better: bool
    definition: str


METRICS: dict[str, MetricSpec] = {
    "positive_feedback": MetricSpec(True, True, "share of requests with a thumbs up or a rating of 4 or 5"),
    "negative_feedback": MetricSpec(True, False, "share of requests with a thumbs down or a rating of 1 or 2"),
    "flagged": MetricSpec(True, False, "share of requests a user flagged"),
    "corrected": MetricSpec(True, False, "share of requests a user corrected"),
    "rating": MetricSpec(False, True, "mean rating (1-5) of the rated requests"),
    "latency_ms": MetricSpec(False, False, "mean latency of the requests (ms)"),
    "completion_tokens": MetricSpec(False, False, "mean completion length of the requests (tokens)"),
}


OnlineMetricName = Literal[
    "refusal_rate", "completion_tokens", "pii_rate", "toxic_rate", "positive_feedback_rate", "correction_f1"
]
"""What `feedback/online_eval` measures on a sample of live responses (see `online_eval.py`)."""
