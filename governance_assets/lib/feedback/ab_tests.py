"""A/B test analysis with decisions that stay valid when the results are looked at every day.

Per experiment, over the requests assigned to it from its start date up to the analysed day:

- per variant: the metric's mean (a rate for 0/1 metrics) with a 95% interval (Wilson for rates,
  Student t for means; statsmodels);
- per challenger: the difference to the champion with its fixed-horizon Welch interval
  (statsmodels `CompareMeans`), shown for reading only;
- a sample-ratio-mismatch test: Pearson's chi-square of the variants' request counts against the
  intended split (scipy);
- the decision statistic: the mixture sequential probability ratio test (mSPRT) with a normal
  mixture N(0, tau^2) over the difference (Johari, Koomen, Pekelis and Walsh, "Always valid
  inference", Operations Research 70(3), 2022; Robbins 1970). With the difference estimate
  theta and its variance V at a look,

      Lambda = sqrt(V / (V + tau^2)) * exp(theta^2 tau^2 / (2 V (V + tau^2)))

  the always-valid p-value is the running minimum of min(1, 1/Lambda) over the daily looks and the
  confidence sequence is theta +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))),
  intersected over the looks. Stopping the first day p <= alpha keeps the false-positive rate at
  most alpha however often one looks (Ville's inequality; with V estimated, asymptotically).
  tau is the experiment's minimum detectable effect.

Outcome: `keep_champion` on a sample-ratio mismatch (the assignment is broken, no result can be
trusted) or when a guardrail's confidence sequence shows harm beyond its tolerance; `ship_challenger`
when the primary metric improved significantly (always-valid p <= alpha, Bonferroni over the
challengers); `keep_champion` when it got significantly worse; else `keep_running`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from governance_assets.lib.core.policy import Experiment
from governance_assets.lib.feedback.metrics import METRICS

FloatArray = NDArray[np.float64]
Outcome = Literal["ship_challenger", "keep_champion", "keep_running"]
INTERVAL_LEVEL = 0.95


def msprt_likelihood_ratio(difference: ArrayLike, variance: ArrayLike, tau2: float) -> FloatArray:
    """The normal-mixture likelihood ratio Lambda of H1: theta ~ N(0, tau2) against H0: theta = 0,
    for an estimate `difference` ~ N(theta, `variance`); elementwise, in log space."""
    theta = np.asarray(difference, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    log_ratio = 0.5 * np.log(v / (v + tau2)) + theta**2 * tau2 / (2 * v * (v + tau2))
    return np.asarray(np.exp(np.minimum(log_ratio, 700.0)), dtype=np.float64)


def always_valid_p_values(difference: ArrayLike, variance: ArrayLike, tau2: float) -> FloatArray:
    """Always-valid p-values along the last axis (the looks, in time order): the running minimum of
    min(1, 1/Lambda). Looks with no variance yet (fewer than two requests a side) count as p = 1."""
    v = np.asarray(variance, dtype=np.float64)
    usable = np.isfinite(v) & (v > 0)
    safe_v = np.where(usable, v, 1.0)
    ratio = msprt_likelihood_ratio(np.where(usable, difference, 0.0), safe_v, tau2)
    p = np.where(usable, np.minimum(1.0, 1.0 / ratio), 1.0)
    return np.asarray(np.minimum.accumulate(p, axis=-1), dtype=np.float64)


def confidence_sequence(
    difference: ArrayLike, variance: ArrayLike, tau2: float, alpha: float
) -> tuple[FloatArray, FloatArray]:
    """The (1 - alpha) confidence sequence of the difference along the last axis, intersected
    over the looks (the running maximum of the lower bounds, minimum of the upper bounds)."""
    theta = np.asarray(difference, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    usable = np.isfinite(v) & (v > 0)
    safe_v = np.where(usable, v, 1.0)
    half = np.sqrt(safe_v * (safe_v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((safe_v + tau2) / safe_v)))
    lower = np.where(usable, theta - half, -np.inf)
    upper = np.where(usable, theta + half, np.inf)
    return (
        np.asarray(np.maximum.accumulate(lower, axis=-1), dtype=np.float64),
        np.asarray(np.minimum.accumulate(upper, axis=-1), dtype=np.float64),
    )


def sample_ratio_p_value(counts: Sequence[int], shares: Sequence[float]) -> float:
    """Pearson's chi-square test of the variants' request counts against the intended split."""
    total = float(sum(counts))
    if total == 0:
        return 1.0
    expected = np.asarray(shares, dtype=np.float64) / float(sum(shares)) * total
    return float(stats.chisquare(np.asarray(counts, dtype=np.float64), expected).pvalue)


@dataclass
class ExperimentResult:
    """One experiment judged on one day: the table rows and the outcome with its reasons."""

    experiment: str
    outcome: Outcome
    reasons: list[str]
    srm_p_value: float
    srm_mismatch: bool
    harmed_guardrails: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _variant_interval(values: FloatArray, binary: bool) -> tuple[float, float]:
    n = values.size
    if n == 0:
        return (float("nan"), float("nan"))
    if binary:
        low, high = proportion_confint(int(values.sum()), n, alpha=1 - INTERVAL_LEVEL, method="wilson")
        return float(low), float(high)
    if n < 2:
        return (float("nan"), float("nan"))
    low, high = DescrStatsW(values).tconfint_mean(alpha=1 - INTERVAL_LEVEL)
    return float(low), float(high)


def _welch_interval(champion: FloatArray, challenger: FloatArray) -> tuple[float, float]:
    if champion.size < 2 or challenger.size < 2:
        return (float("nan"), float("nan"))
    compare = CompareMeans(DescrStatsW(challenger), DescrStatsW(champion))
    low, high = compare.tconfint_diff(alpha=1 - INTERVAL_LEVEL, usevar="unequal")
    return float(low), float(high)


def _looks(units: pd.DataFrame, metric: str, champion: str, challenger: str) -> tuple[FloatArray, FloatArray]:
    """The difference challenger - champion and its variance after each day (cumulative)."""
    days = sorted(units["day"].unique())
    sums = units.dropna(subset=[metric]).groupby(["variant", "day"])[metric].agg(["count", "sum"])
    squares = units.dropna(subset=[metric]).assign(sq=lambda f: f[metric] ** 2).groupby(["variant", "day"])["sq"].sum()
    moments = sums.join(squares.rename("sumsq"))

    def cumulative(variant: str) -> tuple[FloatArray, FloatArray, FloatArray]:
        if variant in moments.index.get_level_values(0):
            frame = moments.loc[variant].reindex(days, fill_value=0.0)
        else:
            frame = pd.DataFrame({"count": 0.0, "sum": 0.0, "sumsq": 0.0}, index=days)
        n = frame["count"].cumsum().to_numpy(np.float64)
        s = frame["sum"].cumsum().to_numpy(np.float64)
        q = frame["sumsq"].cumsum().to_numpy(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = s / n
            var = (q - n * mean**2) / (n - 1)
        return n, mean, np.maximum(var, 0.0)

    n_a, mean_a, var_a = cumulative(champion)
    n_b, mean_b, var_b = cumulative(challenger)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where((n_a >= 2) & (n_b >= 2), var_a / n_a + var_b / n_b, np.nan)
    return mean_b - mean_a, variance


def _harmful(low: float, high: float, higher_is_better: bool, tolerance: float) -> bool:
    return high < -tolerance if higher_is_better else low > tolerance


def analyse_experiment(plan: Experiment, units: pd.DataFrame, srm_alpha: float) -> ExperimentResult:
    """Judge `plan` on `units`: one row per request assigned to it, with `day` (YYYY-MM-DD),
    `variant` and one column per metric (NaN where a request has no value, e.g. no rating);
    the first variant is the champion."""
    champion, *challengers = (v.name for v in plan.variants)
    counts = [int((units["variant"] == v.name).sum()) for v in plan.variants]
    srm_p = sample_ratio_p_value(counts, [v.share for v in plan.variants])
    srm = srm_p < srm_alpha
    alpha = plan.alpha / max(1, len(challengers))
    reasons: list[str] = []
    if srm:
        split = ", ".join(f"{v.name} {c}" for v, c in zip(plan.variants, counts, strict=True))
        reasons.append(f"sample ratio mismatch: {split} against the intended split (chi-square p={srm_p:.2g})")
    rows: list[dict[str, Any]] = []
    harmed: list[str] = []
    primary_calls: list[str] = []
    metrics = [(plan.primary_metric, "primary", plan.minimum_detectable_effect, 0.0)] + [
        (g.metric, "guardrail", g.minimum_detectable_effect, g.tolerance) for g in plan.guardrails
    ]
    for metric, role, effect, tolerance in metrics:
        spec = METRICS[metric]
        tau2 = effect**2
        values = {
            v.name: units.loc[units["variant"] == v.name, metric].dropna().to_numpy(np.float64) for v in plan.variants
        }
        for variant in plan.variants:
            low, high = _variant_interval(values[variant.name], spec.binary)
            rows.append(
                {
                    "experiment": plan.name,
                    "metric": metric,
                    "role": role,
                    "variant": variant.name,
                    "versus": None,
                    "n": int(values[variant.name].size),
                    "estimate": float(values[variant.name].mean()) if values[variant.name].size else float("nan"),
                    "ci_low": low,
                    "ci_high": high,
                    "cs_low": float("nan"),
                    "cs_high": float("nan"),
                    "p_value": float("nan"),
                    "always_valid_p": float("nan"),
                    "call": "",
                }
            )
        for challenger in challengers:
            differences, variances = _looks(units, metric, champion, challenger)
            p_seq = always_valid_p_values(differences, variances, tau2)
            cs_low, cs_high = confidence_sequence(differences, variances, tau2, alpha)
            low, high = _welch_interval(values[champion], values[challenger])
            estimate = float(differences[-1]) if differences.size else float("nan")
            variance = float(variances[-1]) if variances.size else float("nan")
            fixed_p = float(2 * stats.norm.sf(abs(estimate) / np.sqrt(variance))) if variance > 0 else float("nan")
            valid_p = float(p_seq[-1]) if p_seq.size else 1.0
            lo, hi = (float(cs_low[-1]), float(cs_high[-1])) if cs_low.size else (-np.inf, np.inf)
            better = estimate > 0 if spec.higher_is_better else estimate < 0
            if role == "primary":
                call = ("better" if better else "worse") if valid_p <= alpha else "undecided"
                primary_calls.append(call)
                if call != "undecided":
                    reasons.append(
                        f"{challenger} {call} than {champion} on {metric}: {estimate:+.4g} "
                        f"(always-valid p={valid_p:.3g} <= {alpha:.3g}, CS [{lo:.4g}, {hi:.4g}])"
                    )
                else:
                    reasons.append(
                        f"{challenger} vs {champion} on {metric}: {estimate:+.4g}, not yet decided "
                        f"(always-valid p={valid_p:.3g} > {alpha:.3g})"
                    )
            else:
                call = "harm" if _harmful(lo, hi, spec.higher_is_better, tolerance) else "no harm shown"
                if call == "harm":
                    harmed.append(f"{challenger}:{metric}")
                    reasons.append(
                        f"guardrail {metric} harmed by {challenger}: {estimate:+.4g}, CS [{lo:.4g}, {hi:.4g}] beyond "
                        f"the tolerance {tolerance:g}"
                    )
            rows.append(
                {
                    "experiment": plan.name,
                    "metric": metric,
                    "role": role,
                    "variant": challenger,
                    "versus": champion,
                    "n": int(values[challenger].size + values[champion].size),
                    "estimate": estimate,
                    "ci_low": low,
                    "ci_high": high,
                    "cs_low": lo,
                    "cs_high": hi,
                    "p_value": fixed_p,
                    "always_valid_p": valid_p,
                    "call": call,
                }
            )
    outcome: Outcome
    if srm or harmed:
        outcome = "keep_champion"
    elif "better" in primary_calls:
        outcome = "ship_challenger"
    elif primary_calls and all(call == "worse" for call in primary_calls):
        outcome = "keep_champion"
    else:
        outcome = "keep_running"
    return ExperimentResult(plan.name, outcome, reasons, srm_p, srm, harmed, rows)
