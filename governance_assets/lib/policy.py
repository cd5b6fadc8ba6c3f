"""The governance policy: one YAML file, validated at load time with pydantic."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_ENTRY = re.compile(r"^[A-Za-z0-9_][\w.\-]*(:[^\s]+)?$")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the field path and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvaluationPlan(_Strict):
    """What a new suite runs: every run entry against every model deployment."""

    run_entries: Annotated[list[str], Field(min_length=1)]
    """HELM run entries without the model, e.g. `simple1` or `synthetic_reasoning:mode=induction`."""
    models: Annotated[list[str], Field(min_length=1)]
    """HELM model deployments, e.g. `simple/model1`."""
    max_eval_instances: Annotated[int, Field(gt=0)] = 10
    num_threads: Annotated[int, Field(gt=0)] = 1
    parallel_runs: Annotated[int, Field(gt=0, le=8)] = 1
    """How many `helm-run` processes run at once."""

    @field_validator("run_entries")
    @classmethod
    def _entries_have_no_model(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if not _ENTRY.match(entry):
                raise ValueError(
                    f"{entry!r} is not a HELM run entry such as 'simple1' or 'mmlu:subject=anatomy'"
                )
            if "model=" in entry:
                raise ValueError(f"{entry!r} names a model; list models under 'models' instead")
        return entries

    def run_entries_with_models(self) -> list[str]:
        """Entries in HELM's syntax: the model goes after a colon, or after a comma if there are args."""
        return [
            f"{entry}{',' if ':' in entry else ':'}model={model}"
            for entry in self.run_entries
            for model in self.models
        ]


class MlflowSettings(_Strict):
    """Where results are recorded."""

    evaluation_experiment: str = "helm-evaluations"
    governance_experiment: str = "governance"


class Policy(_Strict):
    """Every threshold and plan the platform applies."""

    evaluation_plan: EvaluationPlan
    mlflow: MlflowSettings = MlflowSettings()


def _format_errors(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
        for item in error.errors()
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


def load_policy(path: str | Path | None = None) -> Policy:
    """Load `path`, else GOVERNANCE_POLICY, else the packaged default."""
    chosen = path or os.environ.get("GOVERNANCE_POLICY")
    if not chosen:
        return parse_policy(default_policy_text(), "governance_assets/policy/default.yaml")
    policy_path = Path(chosen)
    try:
        text = policy_path.read_text("utf-8")
    except OSError as error:
        raise PolicyError(f"{policy_path}: cannot be read: {error.strerror}") from error
    return parse_policy(text, str(policy_path))
