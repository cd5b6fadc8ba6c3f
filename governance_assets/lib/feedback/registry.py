"""Champion and challenger through the MLflow Model Registry: the hook a serving system uses.

A serving system registers each model it may serve as a version of a registered model, tagged with
the HELM deployment that evaluates it (tag `helm.model`, e.g. `simple/model1`), and points the
aliases `champion` (served) and `challenger` (under test) at versions. The platform watches the
registry; a new version, or an alias that moved, gets an evaluation suite with the policy's plan.
When the suite is judged, the release decision for the version's HELM model is written back as tags
on the version (`governance.decision` = promote / block, `governance.suite`, `governance.reasons`),
and the `champion` alias is moved to it only when the policy allows automatic promotion
(`feedback.registry.auto_promote`) and every blocking gate passed (decision `promote`). A serving
system reads the alias (`models:/<name>@champion`) and the tags; it never needs Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
WATCHED_ALIASES = (CHAMPION, CHALLENGER)
DECISION_TAG = "governance.decision"
SUITE_TAG = "governance.suite"
REASONS_TAG = "governance.reasons"
TAG_LIMIT = 5000


@dataclass(frozen=True)
class RegisteredVersion:
    """One model version as the registry shows it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    """The watched aliases pointing at it."""
    helm_model: str | None
    """The HELM deployment named by its tag (None: untagged, it cannot be evaluated)."""

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def state(self) -> str:
        """What a change is judged against: its watched aliases."""
        return ",".join(self.aliases)


def registered_versions(client: MlflowClient, helm_model_tag: str) -> list[RegisteredVersion]:
    """Every version of every registered model, with its watched aliases, in name and version order."""
    found: list[RegisteredVersion] = []
    for model in client.search_registered_models():
        aliases: Mapping[str, str] = model.aliases or {}
        for version in client.search_model_versions(f"name='{model.name}'"):
            pointing = tuple(
                sorted(a for a, v in aliases.items() if a in WATCHED_ALIASES and str(v) == str(version.version))
            )
            tags = version.tags or {}
            found.append(RegisteredVersion(model.name, str(version.version), pointing, tags.get(helm_model_tag)))
    return sorted(found, key=lambda v: (v.name, int(v.version)))


def changed_versions(versions: Sequence[RegisteredVersion], seen: Mapping[str, str]) -> list[RegisteredVersion]:
    """Versions that are new, or whose watched aliases changed, since `seen` (key -> state)."""
    return [v for v in versions if seen.get(v.key) != v.state and (v.key not in seen or v.aliases)]


def suite_for(version: RegisteredVersion) -> str:
    """The evaluation suite of a registered version (a safe partition key)."""
    return "registry-" + re.sub(r"[^A-Za-z0-9_.-]", "_", version.name) + f"-v{version.version}"


@dataclass(frozen=True)
class WriteBack:
    decision: str
    reasons: list[str]
    champion_moved: bool


def decision_for(rows: Sequence[Mapping[str, Any]] | None, helm_model: str | None, suite: str) -> tuple[str, list[str]]:
    """The suite's release decision for `helm_model`: `block` when there is none (a failed blocking
    gate stops `release/decision`, a model outside the plan has no row), with the reason."""
    if helm_model is None:
        return "block", ["the version has no HELM model tag, so it could not be evaluated"]
    if rows is None:
        return "block", [f"suite {suite} has no release decision (a blocking gate failed, or the evaluation failed)"]
    mine = [r for r in rows if r["model"] == helm_model]
    if not mine:
        return "block", [f"suite {suite} did not evaluate {helm_model} (is it in evaluation_plan.models?)"]
    return str(mine[0]["decision"]), [str(reason) for reason in mine[0]["reasons"]]


def write_back(
    client: MlflowClient, name: str, version: str, decision: str, reasons: Sequence[str], suite: str, auto_promote: bool
) -> WriteBack:
    """Tag the version with the decision; move `champion` to it only on `promote` with `auto_promote`."""
    client.set_model_version_tag(name, version, DECISION_TAG, decision)
    client.set_model_version_tag(name, version, SUITE_TAG, suite)
    client.set_model_version_tag(
        name, version, REASONS_TAG, ("; ".join(reasons) or "all blocking gates passed")[:TAG_LIMIT]
    )
    moved = decision == "promote" and auto_promote
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
    return WriteBack(decision, list(reasons), moved)
