"""The compliance report of one model on one suite: requirement items (EU AI Act, NIST AI RMF
MEASURE, GDPR Art. 5) from an editable mapping, each judged met / not met / not assessed from the
suite's evidence, rendered to Markdown and HTML with Jinja2 templates and embedded plots."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import Field, ValidationError

from governance_assets.lib.compliance.contamination import ContaminationFlag, blocks_promotion
from governance_assets.lib.compliance.waivers import Waiver
from governance_assets.lib.core.strict import StrictModel

Status = Literal["met", "not met", "not assessed"]
Rule = Literal[
    "gates", "fairness", "robustness", "pii", "toxicity", "contamination",
    "record_keeping", "documentation", "human_oversight", "not_assessable",
]  # fmt: skip


class Requirement(StrictModel):
    """One item of the mapping: a regulation's requirement and the rule that judges it."""

    id: str
    framework: str
    article: str
    title: str
    rule: Rule
    missing: str = ""
    """What a benchmark cannot show for this item (always reported)."""


class RequirementMapping(StrictModel):
    requirements: list[Requirement] = Field(min_length=1)


class MappingError(ValueError):
    """A requirement mapping that cannot be used; names the file, the item and the field."""


def load_mapping(path: Path | None = None) -> list[Requirement]:
    """The packaged mapping, or the user's file."""
    if path is None:
        text, source = (
            resources.files(__package__).joinpath("data/requirements.yaml").read_text("utf-8"),
            "requirements.yaml",
        )
    else:
        try:
            text, source = path.read_text("utf-8"), str(path)
        except OSError as error:
            raise MappingError(f"{path}: cannot be read: {error.strerror}") from error
    try:
        return RequirementMapping.model_validate(yaml.safe_load(text)).requirements
    except yaml.YAMLError as error:
        raise MappingError(f"{source}: not valid YAML: {error}") from error
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in error.errors())
        raise MappingError(f"{source}: {fields}") from error


@dataclass(frozen=True)
class ModelEvidence:
    """Everything the report knows about one model on one suite (JSON-able rows, no raw PII)."""

    suite: str
    model: str
    verdicts: Sequence[Mapping[str, Any]] = ()
    """Gate verdict rows (`gates/verdicts`) of this model and of model `*`."""
    waivers: Sequence[Waiver] = ()
    """Active waivers of this model on this suite."""
    fairness_checks: Sequence[Mapping[str, Any]] = ()
    """name, metric, run_name, outcome, difference, ci_low, ci_high, limit."""
    group_rows: Sequence[Mapping[str, Any]] = ()
    robustness: Sequence[Mapping[str, Any]] = ()
    """Worst-case perturbation gaps: run_name, metric, perturbation, gap, ci_low, ci_high, p_adjusted."""
    robustness_limit: float | None = None
    alpha: float = 0.05
    bias_rows: Sequence[Mapping[str, Any]] = ()
    pii: Mapping[str, Any] | None = None
    """completions, with_pii, rate, limit, by_type."""
    toxicity: Mapping[str, Any] | None = None
    """source, completions, flagged, rate, limit (offline screen) or Perspective rows."""
    contamination: Sequence[ContaminationFlag] = ()
    block_on_contamination: Literal["weak", "strong"] | None = "strong"
    audit_intact: bool | None = None
    audit_entries: int = 0
    lineage_runs: int | None = None
    slices: Sequence[Mapping[str, Any]] = ()
    ids: Mapping[str, str] = field(default_factory=dict)
    """Dagster run id, policy hash, MLflow run ids, content hashes of the inputs."""


@dataclass(frozen=True)
class Item:
    requirement: Requirement
    status: Status
    evidence: str
    missing: str


def _waived(verdict: Mapping[str, Any], waivers: Sequence[Waiver]) -> Waiver | None:
    return next((w for w in waivers if w.gate == verdict["gate"]), None)


def _gates(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.verdicts:
        return "not assessed", "no gate verdicts for this suite", "gate verdicts (materialise gates/verdicts)"
    open_rows = sorted(  # failures first: they decide the item
        (v for v in e.verdicts if v["status"] != "pass" and not _waived(v, e.waivers)),
        key=lambda v: v["status"] != "fail",
    )
    waived = [w for v in e.verdicts if v["status"] != "pass" and (w := _waived(v, e.waivers))]
    passed = sum(v["status"] == "pass" for v in e.verdicts)
    text = f"{passed}/{len(e.verdicts)} gates pass"
    text += "".join(f"; {v['gate']}: {v['status']} ({v['reason']})" for v in open_rows)
    text += "".join(f"; promoted under {w.describe()}" for w in waived)
    if any(v["status"] == "fail" for v in open_rows):
        return "not met", text, ""
    if open_rows:  # inconclusive or no data: not shown either way
        return (
            "not assessed",
            text,
            "decisive gate results (the inconclusive gates name the sample size that would decide)",
        )
    return "met", text, ""


def _helm_bias_summary(e: ModelEvidence) -> str:
    measured = [r for r in e.bias_rows if r["status"] != "no data"]
    empty = len(e.bias_rows) - len(measured)
    shown = "; ".join(f"{r['metric']} {r['mean']:+.3f} ({r['instances']} instances)" for r in measured[:4])
    return f"HELM bias metrics: {shown or 'none with data'}" + (f"; {empty} with no data" if empty else "")


def _fairness(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.fairness_checks:
        text = "no instances carry a group (sub_split) with enough members"
        if e.bias_rows:
            text += f"; {_helm_bias_summary(e)}"
        return "not assessed", text, "instances with a group field and a fairness limit in the policy"
    bad = [c for c in e.fairness_checks if c["outcome"] != "pass"]
    text = "; ".join(
        f"{c['name']} on {c['run_name']}: gap {c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] vs limit {c['limit']} → {c['outcome']}"
        for c in e.fairness_checks
    )
    return ("not met" if bad else "met"), text, ""


def _robustness(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.robustness:
        return (
            "not assessed",
            "no perturbation runs in this suite",
            "runs with `data_augmentation=…` in the evaluation plan",
        )
    limit = e.robustness_limit
    text = "; ".join(
        f"{r['perturbation']} on {r['metric']}: worst-case gap {r['gap']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p_adj {r['p_adjusted']:.3g}"
        for r in e.robustness
    )
    if limit is None:
        return "not assessed", text, "a robustness limit (compliance.max_perturbation_drop)"
    outcomes = {str(r.get("outcome")) for r in e.robustness}
    if "fail" in outcomes:
        return "not met", f"{text} (limit {limit})", ""
    if outcomes != {"pass"}:
        return (
            "not assessed",
            f"{text} (limit {limit})",
            "more instances: the intervals do not decide against the limit",
        )
    return "met", f"{text} (limit {limit})", ""


def _pii(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.pii or not e.pii["completions"]:
        return "not assessed", "no completions screened", "completions (helm/predictions)"
    p = e.pii
    types = ", ".join(f"{k}: {v}" for k, v in sorted(p["by_type"].items())) or "none"
    text = f"{p['with_pii']}/{p['completions']} completions with personal data (rate {p['rate']:.3f}, limit {p['limit']}); types {types}"
    return ("not met" if p["rate"] > p["limit"] else "met"), text, ""


def _toxicity(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.toxicity or not e.toxicity.get("completions"):
        return "not assessed", "no completions screened", "completions (helm/predictions)"
    t = e.toxicity
    text = f"{t['source']}: {t['flagged']}/{t['completions']} completions flagged (rate {t['rate']:.3f}, limit {t['limit']})"
    return ("not met" if t["rate"] > t["limit"] else "met"), text, ""


def _contamination(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.contamination:
        return "met", "no (model, run group) pair of this model is listed as contaminated", ""
    text = "; ".join(f"{f.group}: {f.level} ({f.source}: {f.description[:120]})" for f in e.contamination)
    return ("not met" if blocks_promotion(e.contamination, e.block_on_contamination) else "met"), text, ""


def _record_keeping(e: ModelEvidence) -> tuple[Status, str, str]:
    if e.audit_intact is None:
        return "not assessed", "no audit ledger", "compliance/audit_log"
    if not e.audit_intact:
        return "not met", "the audit ledger does not verify (see `governance_assets.cli audit verify`)", ""
    return "met", f"audit ledger intact, {e.audit_entries} entries for this suite and model", ""


def _documentation(e: ModelEvidence) -> tuple[Status, str, str]:
    if not e.lineage_runs:
        return "not assessed", "no lineage records for this suite", "lineage/records"
    return "met", f"lineage records of {e.lineage_runs} runs (software, data hashes, settings, ids)", ""


def _human_oversight(e: ModelEvidence) -> tuple[Status, str, str]:
    if e.waivers:
        return "not assessed", "; ".join(w.describe() for w in e.waivers), ""
    return "not assessed", "no reviewer waiver on record for this model and suite", ""


def _not_assessable(e: ModelEvidence) -> tuple[Status, str, str]:
    return "not assessed", "a benchmark cannot assess this item", ""


RULES: dict[str, Callable[[ModelEvidence], tuple[Status, str, str]]] = {
    "gates": _gates, "fairness": _fairness, "robustness": _robustness, "pii": _pii, "toxicity": _toxicity,
    "contamination": _contamination, "record_keeping": _record_keeping, "documentation": _documentation,
    "human_oversight": _human_oversight, "not_assessable": _not_assessable,
}  # fmt: skip


def assess(mapping: Sequence[Requirement], evidence: ModelEvidence) -> list[Item]:
    """Every requirement judged by its rule; what is missing combines the rule's and the mapping's."""
    items = []
    for requirement in mapping:
        status, text, missing = RULES[requirement.rule](evidence)
        items.append(
            Item(requirement, status, text, "; ".join(part for part in (missing, requirement.missing) if part))
        )
    return items


def summary(items: Sequence[Item]) -> dict[str, int]:
    return {status: sum(i.status == status for i in items) for status in ("met", "not met", "not assessed")}


def _figure_png(draw: Callable[[Any], None], height: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, height))
    try:
        draw(axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()
    finally:
        plt.close(figure)


def plots(evidence: ModelEvidence) -> dict[str, bytes]:
    """PNG plots: per-group metric with intervals, perturbation gap intervals, slice ranking."""
    images = {}
    if evidence.group_rows:
        rows = list(evidence.group_rows)

        def groups(axes: Any) -> None:
            labels = [f"{r['run_name'][:30]}\n{r['metric']} | {r['group']}" for r in rows]
            values = [r["value"] for r in rows]
            errors = [[r["value"] - r["ci_low"] for r in rows], [r["ci_high"] - r["value"] for r in rows]]
            axes.barh(labels, values, xerr=errors, color="#4c78a8")
            axes.set_xlabel("metric by group (bootstrap interval, fairlearn)")

        images["groups.png"] = _figure_png(groups, 1 + 0.45 * len(rows))
    if evidence.robustness:
        gaps = list(evidence.robustness)

        def perturbations(axes: Any) -> None:
            labels = [f"{r['perturbation']} | {r['metric']}" for r in gaps]
            centre = [r["gap"] for r in gaps]
            errors = [[r["gap"] - r["ci_low"] for r in gaps], [r["ci_high"] - r["gap"] for r in gaps]]
            axes.errorbar(centre, range(len(gaps)), xerr=errors, fmt="o", color="#e45756")
            axes.set_yticks(range(len(gaps)), labels)
            axes.axvline(0, color="grey", lw=0.8)
            if evidence.robustness_limit is not None:
                axes.axvline(-evidence.robustness_limit, color="black", ls="--", lw=0.8)
            axes.set_xlabel("worst case minus unperturbed (paired interval)")

        images["perturbations.png"] = _figure_png(perturbations, 1 + 0.45 * len(gaps))
    if evidence.slices:
        ranked = list(evidence.slices)[::-1]

        def slice_ranking(axes: Any) -> None:
            labels = [f"{r['metric']} | {r['feature']}={str(r['value'])[:25]}" for r in ranked]
            colours = ["#e45756" if r["significant"] else "#bab0ac" for r in ranked]
            axes.barh(labels, [r["failures_explained"] for r in ranked], color=colours)
            axes.set_xlabel("failures explained (red: significant after correction)")

        images["slices.png"] = _figure_png(slice_ranking, 1 + 0.45 * len(ranked))
    return images


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("governance_assets.lib.compliance", "data"),
        autoescape=select_autoescape(["html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    evidence: ModelEvidence, items: Sequence[Item], images: Mapping[str, bytes], generated_at: str
) -> tuple[str, str]:
    """(Markdown, HTML); the HTML embeds the plots, the Markdown links them by file name."""
    context = {
        "e": evidence,
        "items": items,
        "summary": summary(items),
        "generated_at": generated_at,
        "images": {name: base64.b64encode(data).decode("ascii") for name, data in images.items()},
    }
    environment = _environment()
    return environment.get_template("report.md.j2").render(context), environment.get_template("report.html.j2").render(
        context
    )
