"""The iteration plan: a ranked list of next steps built from what a suite's evidence says.

Sources: the gate verdicts (failed, inconclusive and no-data comparisons, with their evidence),
and, where a suite has them, failure slices and fairness gaps (compliance), drifted features and
trend changes (monitoring) and experiment outcomes (feedback). Each item names the problem, the
evidence, the proposed action, the expected gain with its interval (metric points; None where the
action buys a decision rather than points) and the cost in HELM instances and model calls.

Ranking rule (README "Iteration plans"), in order:
1. items that block a release come first;
2. then by kind: failed gate, inconclusive comparison, missing data, failed warning gate,
   fairness gap, failure slice, drift, trend change, production feedback;
3. then by the lower end of the expected gain, largest first (items without one after those
   with one);
4. then by cost in model calls, cheapest first.
Pure pandas: no Dagster, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from governance_assets.lib.iteration.sample_size import Design, decidable_tolerance

KIND_ORDER = (
    "failed gate",
    "inconclusive comparison",
    "missing data",
    "failed warning gate",
    "fairness gap",
    "failure slice",
    "drift",
    "trend change",
    "production feedback",
)


@dataclass(frozen=True)
class PlanItem:
    """One next step."""

    kind: str
    model: str
    blocks_release: bool
    problem: str
    evidence: str
    """Numbers, asset keys and MLflow run ids behind the problem."""
    action: str
    expected_gain: float | None
    gain_low: float | None
    gain_high: float | None
    instances: int
    """HELM instances the action evaluates (per run, summed over the runs it touches)."""
    model_calls: int
    evaluation_plan: Mapping[str, int] = field(default_factory=dict)
    """For "evaluate more" items: the evaluation-plan settings that would decide the comparison."""
    instances_available: int | None = None
    """For inconclusive comparisons: the most instances the scenario has (None: not known)."""


@dataclass(frozen=True)
class PlanContext:
    """What costs and actions are computed from."""

    max_eval_instances: int
    num_train_trials: int
    sweep_trials: int
    """Trials of a guided sweep (each a HELM run of `max_eval_instances` instances)."""
    links: str
    """Where the verdicts are: asset key and MLflow run id."""
    designs: Callable[[Mapping[str, Any]], list[Design]] = lambda comparison: []
    """Designs that decide an inconclusive comparison (its evidence row), cheapest first."""
    available: Callable[[Mapping[str, Any]], int | None] = lambda comparison: None
    """The most instances a comparison (its evidence row) can have: what its scenario has."""


def _evidence(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [item for row in rows for item in json.loads(str(row["evidence"]))]


def _sweep_cost(context: PlanContext) -> tuple[int, int]:
    instances = context.sweep_trials * context.max_eval_instances
    return instances, instances * context.num_train_trials


def _regression_item(verdict: Mapping[str, Any], row: Mapping[str, Any], context: PlanContext) -> PlanItem | None:
    where = f"{row['run_name']} {row['metric']} ({row.get('split') or 'all splits'})"
    numbers = f"drop {row['drop']:+.3f}, interval [{row['drop_lower']:+.3f}, {row['drop_upper']:+.3f}], n={row['n']}"
    evidence = f"{numbers} against {row['baseline_suite']}; {context.links}"
    tolerance = float(row["tolerance"])
    if row["status"] == "fail":
        instances, calls = _sweep_cost(context)
        return PlanItem(
            "failed gate" if verdict["severity"] == "error" else "failed warning gate",
            str(verdict["model"]),
            bool(verdict["blocks_release"]),
            f"{where} dropped beyond the tolerance {tolerance} ({verdict['gate']})",
            evidence,
            "find adapter settings that recover it (iteration/sweep on this scenario), or find what changed in the model",
            float(row["drop"]) - tolerance,
            max(0.0, float(row["drop_lower"]) - tolerance),
            float(row["drop_upper"]) - tolerance,
            instances,
            calls,
        )
    if row["status"] == "inconclusive":
        return _inconclusive_item(verdict, row, context, where, evidence, tolerance)
    return None


def _inconclusive_item(
    verdict: Mapping[str, Any],
    row: Mapping[str, Any],
    context: PlanContext,
    where: str,
    evidence: str,
    tolerance: float,
) -> PlanItem:
    """More instances (and trials) that decide the comparison, at most as many as the scenario has;
    if even all of them cannot, say so and what else would decide it."""
    n, trials = int(row["n"]), int(row.get("trials") or 1)
    available = context.available(row)
    # Tango's test (0/1 outcomes, one trial) sized itself; trials only matter for the paired t-test.
    designs = context.designs(row) if row.get("test") == "paired_t" else []
    needed = min(d.instances for d in designs) if designs else row.get("instances_needed")
    fits = [d for d in designs if available is None or d.instances <= available]
    plan: dict[str, int] = {}
    if fits:
        best = fits[0]
        plan = {"max_eval_instances": best.instances, "num_train_trials": best.trials}
        action = f"evaluate {best.instances} instances × {best.trials} train trials (max_eval_instances={best.instances}, num_train_trials={best.trials})"
        if best is not designs[0]:
            action += f"; cheaper designs need more than the {available} instances the scenario has"
        cost = (max(0, best.instances - n), best.model_calls - n * trials)
    elif needed and available is not None and int(needed) > available:
        looser = decidable_tolerance(float(row["drop"]), tolerance, int(needed), available)
        trial_note = (
            f"not even with {max(d.trials for d in designs)} train trials"
            if len({d.trials for d in designs}) > 1
            else "more train trials (num_train_trials) help only if the instances' answers vary between trials, "
            "which one trial per instance cannot show"
        )
        action = (
            f"even all {available} instances the scenario has cannot decide at tolerance {tolerance} "
            f"({needed} needed; {trial_note}): a tolerance of about {looser:.3f} would be decidable with all of "
            "them, or evaluate a larger scenario of the same skill"
        )
        cost = (max(0, available - n), max(0, available - n) * trials)
    elif needed:
        plan = {"max_eval_instances": int(needed)}
        action = f"evaluate {needed} instances (max_eval_instances={needed})"
        cost = (max(0, int(needed) - n), max(0, int(needed) - n) * context.num_train_trials)
    else:
        action = "the drop sits on the tolerance: change the tolerance or accept the risk in a waiver"
        cost = (0, 0)
    return PlanItem(
        "inconclusive comparison",
        str(verdict["model"]),
        bool(verdict["blocks_release"]),
        f"{where}: the data cannot tell whether the drop is within {tolerance} ({verdict['gate']})",
        evidence,
        action,
        None,
        None,
        None,
        cost[0],
        max(0, cost[1]),
        plan,
        available,
    )


def _other_item(verdict: Mapping[str, Any], row: Mapping[str, Any], context: PlanContext) -> PlanItem | None:
    if row["status"] not in ("fail", "no data"):
        return None
    detail = str(row.get("detail") or "")
    where = str(row.get("run_name") or row.get("table") or "the suite")
    if row["status"] == "no data":
        action = (
            "evaluate this run in a baseline suite first"
            if "no baseline" in detail
            else f"re-run {where} so that the stat is recorded (or narrow the gate's runs)"
        )
        instances = context.max_eval_instances
        return PlanItem(
            "missing data",
            str(verdict["model"]),
            bool(verdict["blocks_release"]),
            f"{verdict['gate']}: {detail}",
            f"{where}; {context.links}",
            action,
            None,
            None,
            None,
            instances,
            instances * context.num_train_trials,
        )
    kind = "failed gate" if verdict["severity"] == "error" else "failed warning gate"
    gain = None
    if verdict["kind"] == "threshold" and row.get("actual") is not None:
        bound = str(row.get("threshold") or "")
        limit = float(bound.split()[1]) if bound.split()[:1] in (["<="], [">="]) else None
        gain = abs(limit - float(row["actual"])) if limit is not None else None
        action = f"raise {row['metric']} on {where}: sweep adapter settings (few-shot count, instructions, temperature)"
        instances, calls = _sweep_cost(context)
    elif verdict["kind"] in ("completeness", "ingestion"):
        action, instances = f"repair or re-run {where}", context.max_eval_instances
        calls = instances * context.num_train_trials
    else:
        action, instances, calls = f"fix what {verdict['gate']} found in {where}", 0, 0
    return PlanItem(
        kind,
        str(verdict["model"]),
        bool(verdict["blocks_release"]),
        f"{verdict['gate']}: {detail}",
        f"{where}; {context.links}",
        action,
        gain,
        gain,
        gain,
        instances,
        calls,
    )


def items_from_verdicts(verdicts: Sequence[Mapping[str, Any]], context: PlanContext) -> list[PlanItem]:
    """An item per failed, inconclusive or data-less comparison of every gate."""
    items = []
    for verdict in verdicts:
        if verdict["status"] == "pass":
            continue
        for row in _evidence([verdict]):
            item = _regression_item(verdict, row, context) if "drop" in row else _other_item(verdict, row, context)
            if item is not None:
                items.append(item)
    return items


def _column_items(
    frame: pd.DataFrame | None,
    required: Sequence[str],
    keep: Callable[[pd.DataFrame], pd.Series],  # type: ignore[type-arg]
    make: Callable[[Mapping[str, Any]], PlanItem],
) -> list[PlanItem]:
    if frame is None or frame.empty or not set(required) <= set(frame.columns):
        return []
    return [make({str(k): v for k, v in row.items()}) for row in frame[keep(frame)].to_dict("records")]


def items_from_slices(slices: pd.DataFrame | None, context: PlanContext, links: str) -> list[PlanItem]:
    """Significant failure slices (compliance/slices): label more of the slice or add a scenario for it."""
    return _column_items(
        slices,
        ["metric", "feature", "value", "support", "slice_mean", "rest_mean", "significant"],
        lambda f: f["significant"].astype(bool),
        lambda row: PlanItem(
            "failure slice",
            str(row.get("model") or "*"),
            False,
            f"{row['metric']} is {row['slice_mean']:.3f} where {row['feature']} = {row['value']} against {row['rest_mean']:.3f} elsewhere",
            f"support {row['support']}, p_adj {row.get('p_adjusted', float('nan')):.3g}; {links}",
            f"label instances where {row['feature']} = {row['value']} (iteration/labeling_queue) and add them as a scenario",
            float(row["rest_mean"]) - float(row["slice_mean"]),
            None,
            None,
            int(row["support"]),
            int(row["support"]) * context.num_train_trials,
        ),
    )


def items_from_fairness(fairness: pd.DataFrame | None, context: PlanContext, links: str) -> list[PlanItem]:
    """Fairness limits that failed or could not be decided (compliance/bias_fairness)."""
    return _column_items(
        fairness,
        ["section", "outcome"],
        lambda f: (f["section"] == "fairness_check") & f["outcome"].isin(["fail", "inconclusive"]),
        lambda row: PlanItem(
            "fairness gap",
            str(row.get("model") or "*"),
            bool(row.get("blocking", False)),
            f"{row.get('metric', 'metric')} gap between groups: {row['outcome']}",
            f"{ {k: row[k] for k in ('gap', 'ci_low', 'ci_high', 'group') if k in row} }; {links}",
            "test a perturbation that targets the gap (data_augmentation) and evaluate more instances per group",
            None,
            None,
            None,
            context.max_eval_instances,
            context.max_eval_instances * context.num_train_trials,
        ),
    )


def rank(items: Sequence[PlanItem]) -> list[dict[str, Any]]:
    """The items ordered by the ranking rule, as rows with their rank (1 = first)."""
    order = {kind: index for index, kind in enumerate(KIND_ORDER)}

    def key(item: PlanItem) -> tuple[Any, ...]:
        gain = item.gain_low if item.gain_low is not None else item.expected_gain
        return (
            not item.blocks_release,
            order.get(item.kind, len(order)),
            gain is None,
            -(gain or 0.0),
            item.model_calls,
        )

    return [{"rank": index + 1, **asdict(item)} for index, item in enumerate(sorted(items, key=key))]


def needed_evaluation_plan(ranked: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """One evaluation plan that would decide every inconclusive comparison of the plan: the
    largest instance count and train-trial count any of them needs."""
    plans = [row["evaluation_plan"] for row in ranked if row["evaluation_plan"]]
    if not plans:
        return {}
    return {
        key: max(int(plan.get(key, 0)) for plan in plans)
        for key in ("max_eval_instances", "num_train_trials")
        if any(key in p for p in plans)
    }


def items_from_drift(drift: pd.DataFrame | None, context: PlanContext, links: str) -> list[PlanItem]:
    """Drifted traffic features of the latest monitored day (monitoring/traffic_drift)."""
    return _column_items(
        drift,
        ["day", "feature", "method", "statistic", "threshold", "drifted"],
        lambda f: f["drifted"].astype(bool),
        lambda row: PlanItem(
            "drift",
            "*",
            False,
            f"production {row['feature']} drifted on {row['day']} ({row['method']} {row['statistic']:.3g}, threshold {row['threshold']})",
            links,
            "label a sample of that day's traffic (iteration/labeling_queue) and evaluate it as a scenario",
            None,
            None,
            None,
            context.max_eval_instances,
            context.max_eval_instances * context.num_train_trials,
        ),
    )


def items_from_trends(trends: pd.DataFrame | None, context: PlanContext, links: str) -> list[PlanItem]:
    """Change points found by the trend detector (monitoring/trends)."""
    return _column_items(
        trends,
        ["series", "label", "value", "change_point"],
        lambda f: f["change_point"].astype(bool),
        lambda row: PlanItem(
            "trend change",
            "*",
            False,
            f"{row['series']} changed at {row['label']} (value {row['value']:.4g})",
            links,
            f"find what changed at {row['label']}: compare the suites or days on either side (monitoring/eval_drift)",
            None,
            None,
            None,
            0,
            0,
        ),
    )


def items_from_feedback(ab_tests: pd.DataFrame | None, context: PlanContext, links: str) -> list[PlanItem]:
    """Guardrail harm found by the production experiments (feedback/ab_tests)."""
    return _column_items(
        ab_tests,
        ["experiment", "metric", "role", "variant", "estimate", "call"],
        lambda f: (f["role"] == "guardrail") & (f["call"] == "harm"),
        lambda row: PlanItem(
            "production feedback",
            str(row["variant"]),
            False,
            f"experiment {row['experiment']}: {row['variant']} harms guardrail {row['metric']} ({row['estimate']:+.3g})",
            links,
            "turn the harmed requests into a scenario (feedback/scenario) and evaluate the variant on it",
            None,
            None,
            None,
            context.max_eval_instances,
            context.max_eval_instances * context.num_train_trials,
        ),
    )
