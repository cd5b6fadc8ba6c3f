"""The policy's `compliance:` section: fairness limits, screens, slices, contamination, waivers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from governance_assets.lib.core.strict import StrictModel


class FairnessLimit(StrictModel):
    """One fairness threshold, judged as one asset check on `compliance/bias_fairness`."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    """The check's name in Dagster (lower_snake_case)."""
    metric: str = "exact_match"
    """Metric name pattern (`*`, `?`) of the per-instance values compared across groups."""
    max_group_gap: Annotated[float, Field(ge=0)]
    """The largest allowed difference between two groups' means (e.g. 0.1 = ten points)."""
    blocking: bool = False
    """A violation fails the check at ERROR (else at WARN)."""


class SliceSettings(StrictModel):
    """How failure slices are found and ranked."""

    metrics: Annotated[list[str], Field(min_length=1)] = [
        "exact_match",
        "harm_bench_score",
        "art_score",
        "sst_score",
    ]
    """Metric name patterns whose per-instance values are sliced (each metric separately)."""
    min_support: Annotated[int, Field(ge=2)] = 10
    """Slices (and their complements) with fewer instances are not tested."""
    input_length_buckets: Annotated[int, Field(ge=2, le=20)] = 4
    top: Annotated[int, Field(gt=0)] = 5
    """How many slices the report shows."""


class ComplianceSettings(StrictModel):
    """Evidence for compliance: bias and fairness, PII and toxicity screens, failure slices,
    contamination-aware claims, reviewer waivers and the regulation-mapped report."""

    fairness_metrics: Annotated[list[str], Field(min_length=1)] = ["exact_match", "quasi_exact_match"]
    """Metric patterns whose perturbation gaps and group gaps are computed."""
    fairness_limits: list[FairnessLimit] = []
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """Significance level of the fairness checks and the slice tests (after correction)."""
    correction: Literal["holm", "bh"] = "holm"
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    """Level of the intervals shown (per-group values, perturbation gaps)."""
    bootstrap_resamples: Annotated[int, Field(ge=50)] = 500
    """fairlearn `MetricFrame` bootstrap resamples for the per-group intervals."""
    seed: int = 0
    min_group_size: Annotated[int, Field(ge=2)] = 5
    """Groups with fewer instances are left out of group fairness."""
    max_perturbation_drop: Annotated[float, Field(ge=0)] | None = 0.1
    """The robustness check fails when a metric's worst case under a perturbation drops by more
    than this with significance; None turns the check off."""
    max_pii_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of a model's completions in which the PII screen may find personal data."""
    scan_prompts: bool = False
    """Also scan prompts (they hold the benchmark's own data, which may contain PII by design)."""
    max_toxic_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Share of a model's completions the offline toxicity screen may flag."""
    slices: SliceSettings = SliceSettings()
    contamination_files: list[str] = []
    """Extra contamination files in HELM's format, relative to the policy's folder."""
    block_on_contamination: Literal["weak", "strong"] | None = "strong"
    """Claims on a (model, run group) pair contaminated at this level or worse block a promotion;
    None only flags them."""
    waivers_file: str = "waivers.yaml"
    """Reviewer waivers, relative to the policy's folder (see lib/compliance/waivers.py)."""
    requirements_file: str | None = None
    """A requirement mapping of your own (relative to the policy's folder); None: the packaged one."""

    @field_validator("fairness_limits")
    @classmethod
    def _unique_names(cls, limits: list[FairnessLimit]) -> list[FairnessLimit]:
        names = [limit.name for limit in limits]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"fairness limit names must be unique; repeated: {repeated}")
        return limits
