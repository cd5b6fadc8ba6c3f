"""A/B test analysis with decisions that stay valid when the results are looked at every day.

Per experiment, over the requests assigned to it from its start date up to the analysed day:

- per variant: the metric's mean (a rate for 0/1 metrics) with a 95% interval (Wilson for rates,
  Student t for means; statsmodels);
- per challenger: the difference to the champion with its fixed-horizon Welch interval
  (statsmodels `CompareMeans`), shown for reading only;
- a sequential sample-ratio-mismatch test, valid however often it is looked at (Lindon and Malek,
  "Anytime-valid inference for multinomial count data", NeurIPS 2022): with the cumulative request
  counts x of the k variants, the intended split p0 and a Dirichlet(c p0) mixture over the split,

      BF = [Gamma(c) / Gamma(c + n)] prod_i Gamma(c p0_i + x_i) / Gamma(c p0_i)  /  prod_i p0_i^x_i

  (the Dirichlet-multinomial over the multinomial likelihood of the sequence) is a nonnegative
  martingale under the intended split, so its always-valid p-value, the running minimum of
  min(1, 1/BF) over the daily looks, stays below alpha with probability at most alpha (Ville). A
  fixed chi-square test looked at daily would raise false alarms far more often. c is the policy's
  `srm_prior_concentration` (10,000 by default, as in Lindon and Malek's `ssrm` package);
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

Guardrails: each (challenger, guardrail) pair has an always-valid p-value of harm, the mSPRT of the
difference shifted by the guardrail's tolerance, counted only on the harmful side; the pairs are
judged together by Holm's step-down procedure at alpha (statsmodels), so the chance that any
guardrail of an experiment shows harm falsely, however often it is looked at, is at most alpha
(each of the m pairs is judged at alpha/m or less; Ville's inequality and the union bound). The
guardrail rows' confidence sequences are shown at alpha/m, Holm's first step.

Outcome: `keep_champion` on a sample-ratio mismatch (the assignment is broken, no result can be
trusted) or when a guardrail shows harm beyond its tolerance (Holm); `ship_challenger` when the
primary metric improved significantly (always-valid p <= alpha, Bonferroni over the challengers);
`keep_champion` when it got significantly worse; else `keep_running`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats
from statsmodels.stats.multitest import multipletests
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


def harm_p_values(
    difference: ArrayLike, variance: ArrayLike, tau2: float, tolerance: float, higher_is_better: bool
) -> FloatArray:
    """Always-valid p-values of harm beyond `tolerance` along the last axis: the mSPRT of the
    difference shifted by the tolerance, counted only at looks where the shifted estimate is on the
    harmful side (elsewhere p = 1), running minimum. p <= a exactly when the (1 - a) confidence
    sequence lies wholly beyond the tolerance on the harmful side."""
    theta = np.asarray(difference, dtype=np.float64)
    shifted = theta + tolerance if higher_is_better else theta - tolerance
    harmful = shifted < 0 if higher_is_better else shifted > 0
    p = np.where(harmful, always_valid_p_values(shifted[..., None], np.asarray(variance)[..., None], tau2)[..., 0], 1.0)
    return np.asarray(np.minimum.accumulate(p, axis=-1), dtype=np.float64)


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure over a family of p-values (statsmodels): rejected, adjusted p."""
    if not p_values:
        return [], []
    rejected, adjusted, _, _ = multipletests(np.asarray(p_values, dtype=np.float64), alpha=alpha, method="holm")
    return [bool(r) for r in rejected], [float(a) for a in adjusted]


def srm_log_bayes_factors(counts: ArrayLike, shares: Sequence[float], concentration: float) -> FloatArray:
    """log BF of a Dirichlet(concentration * shares) mixture over the split against the intended
    split, for cumulative request counts (last axis: the variants)."""
    x = np.asarray(counts, dtype=np.float64)
    p0 = np.asarray(shares, dtype=np.float64) / float(sum(shares))
    prior = concentration * p0
    n = x.sum(axis=-1)
    mixture = special.gammaln(concentration) - special.gammaln(concentration + n)
    mixture = mixture + (special.gammaln(prior + x) - special.gammaln(prior)).sum(axis=-1)
    return np.asarray(mixture - special.xlogy(x, p0).sum(axis=-1), dtype=np.float64)


def sequential_srm_p_values(counts: ArrayLike, shares: Sequence[float], concentration: float) -> FloatArray:
    """Always-valid sample-ratio-mismatch p-values along the looks (the second-to-last axis of
    cumulative counts; the last axis: the variants): the running minimum of min(1, 1/BF)."""
    log_bf = srm_log_bayes_factors(counts, shares, concentration)
    p = np.exp(-np.maximum(log_bf, 0.0))
    return np.asarray(np.minimum.accumulate(p, axis=-1), dtype=np.float64)


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


def _split_p_value(units: pd.DataFrame, plan: Experiment, concentration: float) -> tuple[list[int], float]:
    """The variants' request counts and the sequential SRM p-value over the daily looks."""
    names = [v.name for v in plan.variants]
    daily = pd.crosstab(units["day"], units["variant"]).reindex(columns=names, fill_value=0).sort_index()
    cumulative = daily.cumsum().to_numpy(np.float64)
    counts = [int(c) for c in cumulative[-1]] if len(cumulative) else [0] * len(names)
    if not len(cumulative):
        return counts, 1.0
    p = sequential_srm_p_values(cumulative, [v.share for v in plan.variants], concentration)
    return counts, float(p[-1])


def _variant_rows(plan: Experiment, metric: str, role: str, values: dict[str, FloatArray]) -> list[dict[str, Any]]:
    binary = METRICS[metric].binary
    rows = []
    for variant in plan.variants:
        low, high = _variant_interval(values[variant.name], binary)
        n = int(values[variant.name].size)
        rows.append(
            {
                "experiment": plan.name,
                "metric": metric,
                "role": role,
                "variant": variant.name,
                "versus": None,
                "n": n,
                "estimate": float(values[variant.name].mean()) if n else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "cs_low": float("nan"),
                "cs_high": float("nan"),
                "p_value": float("nan"),
                "always_valid_p": float("nan"),
                "adjusted_p": float("nan"),
                "call": "",
            }
        )
    return rows


@dataclass
class _Comparison:
    """A challenger against the champion on one metric, over the daily looks."""

    metric: str
    role: str
    challenger: str
    estimate: float
    fixed_p: float
    ci: tuple[float, float]
    cs: tuple[float, float]
    valid_p: float
    n: int
    tolerance: float


def _compare(
    plan: Experiment,
    units: pd.DataFrame,
    values: dict[str, FloatArray],
    metric: str,
    role: str,
    challenger: str,
    tau2: float,
    alpha: float,
    tolerance: float,
) -> _Comparison:
    champion = plan.variants[0].name
    differences, variances = _looks(units, metric, champion, challenger)
    if role == "primary":
        p_seq = always_valid_p_values(differences, variances, tau2)
    else:
        p_seq = harm_p_values(differences, variances, tau2, tolerance, METRICS[metric].higher_is_better)
    cs_low, cs_high = confidence_sequence(differences, variances, tau2, alpha)
    estimate = float(differences[-1]) if differences.size else float("nan")
    variance = float(variances[-1]) if variances.size else float("nan")
    return _Comparison(
        metric=metric,
        role=role,
        challenger=challenger,
        estimate=estimate,
        fixed_p=float(2 * stats.norm.sf(abs(estimate) / np.sqrt(variance))) if variance > 0 else float("nan"),
        ci=_welch_interval(values[champion], values[challenger]),
        cs=(float(cs_low[-1]), float(cs_high[-1])) if cs_low.size else (-np.inf, np.inf),
        valid_p=float(p_seq[-1]) if p_seq.size else 1.0,
        n=int(values[challenger].size + values[champion].size),
        tolerance=tolerance,
    )


def _comparison_row(plan: Experiment, c: _Comparison, adjusted_p: float, call: str) -> dict[str, Any]:
    return {
        "experiment": plan.name,
        "metric": c.metric,
        "role": c.role,
        "variant": c.challenger,
        "versus": plan.variants[0].name,
        "n": c.n,
        "estimate": c.estimate,
        "ci_low": c.ci[0],
        "ci_high": c.ci[1],
        "cs_low": c.cs[0],
        "cs_high": c.cs[1],
        "p_value": c.fixed_p,
        "always_valid_p": c.valid_p,
        "adjusted_p": adjusted_p,
        "call": call,
    }


def analyse_experiment(
    plan: Experiment, units: pd.DataFrame, srm_alpha: float, srm_concentration: float
) -> ExperimentResult:
    """Judge `plan` on `units`: one row per request assigned to it, with `day` (YYYY-MM-DD),
    `variant` and one column per metric (NaN where a request has no value, e.g. no rating);
    the first variant is the champion."""
    champion, *challengers = (v.name for v in plan.variants)
    counts, srm_p = _split_p_value(units, plan, srm_concentration)
    srm = srm_p < srm_alpha
    reasons: list[str] = []
    if srm:
        split = ", ".join(f"{v.name} {c}" for v, c in zip(plan.variants, counts, strict=True))
        reasons.append(f"sample ratio mismatch: {split} against the intended split (sequential p={srm_p:.2g})")
    alpha = plan.alpha / max(1, len(challengers))
    guardrail_alpha = plan.alpha / max(1, len(challengers) * len(plan.guardrails))
    rows: list[dict[str, Any]] = []
    primary_calls: list[str] = []
    guardrails: list[_Comparison] = []
    metrics = [(plan.primary_metric, "primary", plan.minimum_detectable_effect, 0.0)] + [
        (g.metric, "guardrail", g.minimum_detectable_effect, g.tolerance) for g in plan.guardrails
    ]
    for metric, role, effect, tolerance in metrics:
        values = {
            v.name: units.loc[units["variant"] == v.name, metric].dropna().to_numpy(np.float64) for v in plan.variants
        }
        rows += _variant_rows(plan, metric, role, values)
        level = alpha if role == "primary" else guardrail_alpha
        compared = [_compare(plan, units, values, metric, role, c, effect**2, level, tolerance) for c in challengers]
        if role == "guardrail":
            guardrails += compared
            continue
        for c in compared:
            better = c.estimate > 0 if METRICS[metric].higher_is_better else c.estimate < 0
            call = ("better" if better else "worse") if c.valid_p <= alpha else "undecided"
            primary_calls.append(call)
            if call != "undecided":
                reasons.append(
                    f"{c.challenger} {call} than {champion} on {metric}: {c.estimate:+.4g} "
                    f"(always-valid p={c.valid_p:.3g} <= {alpha:.3g}, CS [{c.cs[0]:.4g}, {c.cs[1]:.4g}])"
                )
            else:
                reasons.append(
                    f"{c.challenger} vs {champion} on {metric}: {c.estimate:+.4g}, not yet decided "
                    f"(always-valid p={c.valid_p:.3g} > {alpha:.3g})"
                )
            rows.append(_comparison_row(plan, c, min(1.0, c.valid_p * len(challengers)), call))
    harm, adjusted = holm([c.valid_p for c in guardrails], plan.alpha)
    harmed: list[str] = []
    for c, harmful, adjusted_p in zip(guardrails, harm, adjusted, strict=True):
        if harmful:
            harmed.append(f"{c.challenger}:{c.metric}")
            reasons.append(
                f"guardrail {c.metric} harmed by {c.challenger}: {c.estimate:+.4g} beyond the tolerance "
                f"{c.tolerance:g} (always-valid p={c.valid_p:.3g}, Holm-adjusted {adjusted_p:.3g} <= "
                f"{plan.alpha:g} over {len(guardrails)} guardrail comparisons)"
            )
        rows.append(_comparison_row(plan, c, adjusted_p, "harm" if harmful else "no harm shown"))
    order = {metric: i for i, (metric, *_) in enumerate(metrics)}
    rows.sort(key=lambda row: order[row["metric"]])  # stable: each metric's variants, then its comparisons
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
