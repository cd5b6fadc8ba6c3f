"""The governance policy: one YAML file, validated at load time with pydantic."""

from __future__ import annotations

import os
import re
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from governance_assets.lib.compliance.settings import ComplianceSettings
from governance_assets.lib.core.strict import StrictModel
from governance_assets.lib.deployment.endpoints import ModelEndpoint
from governance_assets.lib.feedback.metrics import MetricName, OnlineMetricName
from governance_assets.lib.gates.registry import Gate
from governance_assets.lib.gates.regression import RegressionSettings
from governance_assets.lib.iteration.settings import IterationSettings

_ENTRY = re.compile(r"^[A-Za-z0-9_][\w.\-]*(:[^\s]+)?$")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the field path and why."""


_Strict = StrictModel


class EvaluationPlan(_Strict):
    """What a new suite runs: every run entry against every model deployment."""

    run_entries: Annotated[list[str], Field(min_length=1)]
    """HELM run entries without the model, e.g. `simple1` or `synthetic_reasoning:mode=induction`."""
    models: Annotated[list[str], Field(min_length=1)]
    """HELM model deployments, e.g. `simple/model1`."""
    max_eval_instances: Annotated[int, Field(gt=0)] = 10
    num_train_trials: Annotated[int, Field(ge=1, le=5)] | None = None
    """HELM train trials per run (`--num-train-trials`), each with other in-context examples;
    None: each run spec's own (usually 1). `iteration/plan` says when more would decide a comparison."""
    num_threads: Annotated[int, Field(gt=0)] = 1
    parallel_runs: Annotated[int, Field(gt=0, le=8)] = 1
    """How many `helm-run` processes run at once."""

    @field_validator("run_entries")
    @classmethod
    def _entries_have_no_model(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if not _ENTRY.match(entry):
                raise ValueError(f"{entry!r} is not a HELM run entry such as 'simple1' or 'mmlu:subject=anatomy'")
            if "model=" in entry:
                raise ValueError(f"{entry!r} names a model; list models under 'models' instead")
        return entries

    def run_entries_with_models(self) -> list[str]:
        """Entries in HELM's syntax: the model goes after a colon, or after a comma if there are args."""
        return [
            f"{entry}{',' if ':' in entry else ':'}model={model}" for entry in self.run_entries for model in self.models
        ]


class AlertSettings(_Strict):
    """Where failed gates are sent; the JSONL ledger under GOVERNANCE_HOME/alerts is always on."""

    webhook_url_env: str | None = None
    """Environment variable holding a Slack-compatible webhook URL (the URL is a secret)."""
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    backoff_seconds: Annotated[float, Field(ge=0)] = 1.0


class ReproducibilitySettings(_Strict):
    """How `lineage/reproducibility` re-creates a suite."""

    sample_runs: Annotated[int, Field(ge=0)] = 2
    """How many runs (whose model is reachable) are fully re-run with caching off."""
    tolerance: Annotated[float, Field(ge=0)] = 0.02
    """Allowed absolute difference of a mean for runs that sample (temperature > 0); greedy
    runs must reproduce exactly."""


class LineageSettings(_Strict):
    """Where OpenLineage events go: GOVERNANCE_HOME/lineage/openlineage.jsonl, or an HTTP
    endpoint (Marquez, a catalogue) when the variable named here is set."""

    openlineage_url_env: str | None = "OPENLINEAGE_URL"
    openlineage_api_key_env: str | None = "OPENLINEAGE_API_KEY"


class DatabaseSource(_Strict):
    """A database table of rows (integer primary key `id`, append-only), read in `id` order."""

    url_env: Annotated[str, Field(min_length=1)]
    """Environment variable holding the SQLAlchemy URL (it may carry a password: never logged)."""
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
    batch_rows: Annotated[int, Field(gt=0)] = 100_000


class IntakeSettings(_Strict):
    """Where rows arrive: files in a landing folder (GOVERNANCE_HOME/landing/traffic or
    landing/feedback) and, optionally, a database table."""

    database: DatabaseSource | None = None
    max_sources_per_tick: Annotated[int, Field(gt=0)] = 20
    """Landing files (or database batches) the sensor stages per tick; the rest wait for the next."""


class ReferenceSettings(_Strict):
    """What traffic is compared with: a window of days of traffic, or a HELM suite's instances."""

    source: Literal["traffic", "suite"] = "traffic"
    start: date | None = None
    end: date | None = None
    """The traffic window, inclusive; without both, the first `days` days that have traffic."""
    days: Annotated[int, Field(gt=0)] = 7
    suite: str | None = None
    """For `source: suite`: the suite whose predictions and instance stats are the reference."""

    @model_validator(mode="after")
    def _complete(self) -> ReferenceSettings:
        if self.source == "suite" and not self.suite:
            raise ValueError("a 'suite' reference needs 'suite'")
        if (self.start is None) != (self.end is None):
            raise ValueError("give both 'start' and 'end', or neither")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"'start' ({self.start}) is after 'end' ({self.end})")
        return self


class DriftSettings(_Strict):
    """Traffic drift per feature; tests and thresholds default to Evidently's choice."""

    methods: dict[str, Literal["ks", "wasserstein", "chisquare", "z", "jensenshannon", "psi"]] = {}
    """Per feature, a test other than Evidently's default (e.g. `latency_ms: psi`)."""
    thresholds: dict[str, float] = {}
    """Per feature, a threshold other than the test's default."""
    kinds: dict[str, Literal["numerical", "categorical"]] = {}
    """Per feature, its kind instead of the type Evidently's `Dataset` infers on the day's data
    (e.g. `completion_tokens: numerical`); also makes a column Evidently would not test testable."""
    share_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    """The day drifts (check fails at WARN) when this share of the tested features drifted."""
    error_share: Annotated[float, Field(gt=0, le=1)] = 0.75
    """Past this share the check fails at ERROR."""
    embeddings: bool = True
    """Also test prompt and completion text embeddings (a domain classifier, as Evidently does)."""
    embedding_threshold: Annotated[float, Field(gt=0.5, lt=1)] = 0.55
    embedding_max_rows: Annotated[int, Field(ge=100)] = 5000

    @model_validator(mode="after")
    def _ordered(self) -> DriftSettings:
        if self.error_share < self.share_threshold:
            raise ValueError(f"'error_share' ({self.error_share}) is below 'share_threshold' ({self.share_threshold})")
        return self


class EvalDriftSettings(_Strict):
    """Per-instance outcome flips between a suite and the previous suite with the same run."""

    metrics: Annotated[list[str], Field(min_length=1)] = ["exact_match", "quasi_exact_match"]
    """Patterns of 0/1 metrics whose per-instance outcome is compared."""
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    correction: Literal["holm", "bh"] = "holm"


class TrendSettings(_Strict):
    """Change detection on metric time series (across suites) and traffic KPIs (across days)."""

    method: Literal["self_starting_cusum", "cusum", "page_hinkley", "ewma"] = "self_starting_cusum"
    """`self_starting_cusum` (Hawkins) is calibrated to `arl0`; the others depend on a short warm-up."""
    arl0: Annotated[float, Field(ge=100)] = 370.0
    """In-control average run length (points between false alarms) of the self-starting CUSUM."""
    warmup: Annotated[int, Field(ge=2)] = 7
    """Points that estimate the in-control mean and spread (and Page–Hinkley's first possible alarm)."""
    cusum_k: Annotated[float, Field(ge=0)] = 0.5
    """Reference value of both CUSUMs, in σ (half the shift they are tuned to find fastest)."""
    cusum_h: Annotated[float, Field(gt=0)] = 5.0
    ewma_lambda: Annotated[float, Field(gt=0, le=1)] = 0.2
    ewma_l: Annotated[float, Field(gt=0)] = 3.0
    ph_delta: Annotated[float, Field(ge=0)] = 0.1
    """Page–Hinkley tolerance, in standard deviations of the warm-up points."""
    ph_threshold: Annotated[float, Field(gt=0)] = 5.0
    """Page–Hinkley alarm level λ, in standard deviations of the warm-up points."""
    metrics: Annotated[list[str], Field(min_length=1)] = ["exact_match"]
    """Headline HELM metrics (test split, unperturbed), averaged over a suite's runs per model."""


class MonitoringSettings(_Strict):
    """Production monitoring: traffic, its reference, drift, evaluation drift and trends."""

    start_date: date = date(2026, 1, 1)
    """The earliest UTC day of traffic accepted (earlier rows are quarantined); the daily partitions
    are the days that have traffic, added as they land."""
    traffic: IntakeSettings = IntakeSettings()
    reference: ReferenceSettings = ReferenceSettings()
    drift: DriftSettings = DriftSettings()
    eval_drift: EvalDriftSettings = EvalDriftSettings()
    trends: TrendSettings = TrendSettings()


class MlflowSettings(_Strict):
    """Where results are recorded."""

    evaluation_experiment: str = "helm-evaluations"
    governance_experiment: str = "governance"


class ScaleOutSettings(_Strict):
    """How a suite's HELM runs fan out on the team deployment's workers."""

    provider_concurrency: dict[str, Annotated[int, Field(gt=0)]] = {}
    """At most this many HELM runs at once per provider (the model's organisation, e.g. `openai`):
    the Dagster pool `helm_<provider>`, so that a provider's rate limits hold across workers."""
    default_provider_concurrency: Annotated[int, Field(gt=0)] = 2
    """The limit of a provider not named above."""


class ExperimentVariant(_Strict):
    """One arm of an A/B test: the `variant` value that traffic metadata and feedback carry."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    share: Annotated[float, Field(gt=0, lt=1)]
    """The intended share of the experiment's requests (the shares add up to 1)."""


class ExperimentGuardrail(_Strict):
    """A metric the challenger must not harm."""

    metric: MetricName
    minimum_detectable_effect: Annotated[float, Field(gt=0)]
    """The sequential test's mixture scale for this metric, in its units."""
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    """Harm is a change for the worse beyond this, shown by the confidence sequence."""


class Experiment(_Strict):
    """An A/B test: requests whose traffic metadata names it (`{"experiment": name, "variant": …}`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    variants: Annotated[list[ExperimentVariant], Field(min_length=2)]
    """The champion first, then the challengers."""
    primary_metric: MetricName
    minimum_detectable_effect: Annotated[float, Field(gt=0)]
    """The smallest change of the primary metric worth detecting (its units); the mSPRT's tau."""
    guardrails: list[ExperimentGuardrail] = []
    """Harm is judged over all guardrails and challengers together (Holm at `alpha`), so the
    chance of a false "keep the champion (harm)" stays at most `alpha` under daily looks."""
    start_date: date
    """Requests before this UTC day are not part of the experiment."""
    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05

    @model_validator(mode="after")
    def _split_adds_up(self) -> Experiment:
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name}: variant names repeat: {names}")
        total = sum(variant.share for variant in self.variants)
        if abs(total - 1) > 1e-9:
            raise ValueError(f"experiment {self.name}: variant shares add up to {total:g}, not 1")
        return self


class OnlineComparison(_Strict):
    """A production metric set beside a HELM metric of the same model; diverging beyond `max_gap` fails."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
    production: OnlineMetricName
    helm: Annotated[str, Field(min_length=1)]
    """A HELM stat name, e.g. `num_output_tokens` or `f1_score` (mean over the model's plain runs)."""
    max_gap: Annotated[float, Field(ge=0)]
    relative: bool = False
    """Judge the gap relative to |HELM value| (for lengths and other unbounded numbers)."""


class OnlineEvalSettings(_Strict):
    """`feedback/online_eval`: which live responses are scored and what they are compared with."""

    sample_size: Annotated[int, Field(gt=0)] = 500
    """Requests scored per model and day (a seeded random sample)."""
    suite: str | None = None
    """The HELM suite to compare with; None: the newest suite in the warehouse."""
    comparisons: list[OnlineComparison] = [
        OnlineComparison(
            name="output_length", production="completion_tokens", helm="num_output_tokens", max_gap=1.0, relative=True
        ),
        OnlineComparison(name="correction_agreement", production="correction_f1", helm="f1_score", max_gap=0.3),
    ]


class RegistrySettings(_Strict):
    """Champion/challenger through the MLflow Model Registry (see lib/feedback/registry.py)."""

    auto_promote: bool = False
    """Move the `champion` alias to a version whose release decision is `promote` (else only tag it)."""
    helm_model_tag: Annotated[str, Field(min_length=1)] = "helm.model"
    """The model-version tag naming the HELM deployment that evaluates the version."""


class FeedbackScenarioSettings(_Strict):
    """`feedback/scenario`: production failures turned into the HELM scenario `governance_feedback`."""

    days: Annotated[int, Field(gt=0)] = 30
    """Feedback of this many days up to the partition's day is considered."""
    near_duplicate: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Prompts whose word 3-shingle Jaccard similarity reaches this are near-duplicates (newest kept)."""
    max_examples: Annotated[int, Field(gt=0)] = 500


class FeedbackSettings(_Strict):
    """The production feedback loop: A/B tests over traffic and user feedback, online evaluation,
    champion/challenger through the model registry."""

    intake: IntakeSettings = IntakeSettings()
    """Where feedback arrives besides GOVERNANCE_HOME/landing/feedback: a database table, staged as traffic is."""
    experiments: list[Experiment] = []
    online_eval: OnlineEvalSettings = OnlineEvalSettings()
    registry: RegistrySettings = RegistrySettings()
    scenario: FeedbackScenarioSettings = FeedbackScenarioSettings()
    srm_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.001
    """A sequential sample-ratio-mismatch p-value below this fails the experiment's check (always
    valid: looking every day keeps the false alarm rate at most this)."""
    srm_prior_concentration: Annotated[float, Field(gt=0)] = 10_000.0
    """The sequential SRM test's Dirichlet mixture: concentration c of Dirichlet(c * intended split)
    (Lindon and Malek's default); larger finds small mismatches sooner, large ones later."""

    @field_validator("experiments")
    @classmethod
    def _unique_experiments(cls, experiments: list[Experiment]) -> list[Experiment]:
        names = [experiment.name for experiment in experiments]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"experiment names must be unique; repeated: {repeated}")
        return experiments


class Policy(_Strict):
    """Every threshold and plan the platform applies."""

    evaluation_plan: EvaluationPlan
    gates: list[Gate] = []
    regression: RegressionSettings = RegressionSettings()
    alerts: AlertSettings = AlertSettings()
    reproducibility: ReproducibilitySettings = ReproducibilitySettings()
    lineage: LineageSettings = LineageSettings()
    mlflow: MlflowSettings = MlflowSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    iteration: IterationSettings = IterationSettings()
    scale_out: ScaleOutSettings = ScaleOutSettings()
    endpoints: list[ModelEndpoint] = []
    """OpenAI-compatible model endpoints the evaluation plan may name (see lib/deployment/endpoints.py)."""
    compliance: ComplianceSettings = ComplianceSettings()
    feedback: FeedbackSettings = FeedbackSettings()

    @field_validator("gates")
    @classmethod
    def _unique_gate_names(cls, gates: list[Gate]) -> list[Gate]:
        names = [gate.name for gate in gates]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"gate names must be unique; repeated: {duplicates}")
        return gates


def _format_errors(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
    )


def parse_policy(text: str, source: str) -> Policy:
    """Validate policy YAML; errors name `source`, the field path and the reason."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{source}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping at the top level")
    try:
        return Policy.model_validate(data)
    except ValidationError as error:
        raise PolicyError(f"{source}: {_format_errors(error)}") from error


def default_policy_text() -> str:
    """The policy shipped with the package."""
    return resources.files("governance_assets.policy").joinpath("default.yaml").read_text("utf-8")


def policy_source(path: str | Path | None = None) -> tuple[str, str]:
    """The text of the policy in force and where it came from: `path`, else GOVERNANCE_POLICY,
    else the packaged default."""
    chosen = path or os.environ.get("GOVERNANCE_POLICY")
    if not chosen:
        return default_policy_text(), "governance_assets/policy/default.yaml"
    policy_path = Path(chosen)
    try:
        return policy_path.read_text("utf-8"), str(policy_path)
    except OSError as error:
        raise PolicyError(f"{policy_path}: cannot be read: {error.strerror}") from error


def load_policy(path: str | Path | None = None) -> Policy:
    """Load `path`, else GOVERNANCE_POLICY, else the packaged default."""
    return parse_policy(*policy_source(path))
