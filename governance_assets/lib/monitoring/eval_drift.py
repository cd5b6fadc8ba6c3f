"""Evaluation drift: per-instance outcome flips of the same HELM run between two suites.

A provider can change the model behind a name without notice. Re-evaluating the same run (same
scenario, adapter settings and model name) in a later suite then gives other answers on the same
instances. For every run of a suite that an earlier suite also has (the most recent one), and for
every 0/1 metric named in the policy (unperturbed stats), instances are paired by instance id:
instances are the unit, so the train trials of one instance are averaged first (five trials of
100 instances are 100 pairs, not 500). `flipped_to_fail` counts instances worse now than before,
`flipped_to_pass` the reverse. Whether the flips are more than noise is, with one trial per
instance, the exact McNemar test (two-sided binomial test of the discordant pairs,
`statistics.mcnemar_exact`) and, with several, the two-sided paired t-test of the instance means
(`noninferiority.paired_t_test` at tolerance 0); either is corrected across all comparisons of the
suite with Holm or Benjamini–Hochberg.

A significant change of a run whose run spec is unchanged (same `run_spec_hash`) is a *silent
change*: nothing the team did explains it. When the run spec changed (other adapter settings, a
newer HELM), flips are expected and reported without being called silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from governance_assets.lib.core.noninferiority import paired_t_test
from governance_assets.lib.core.policy import EvalDriftSettings
from governance_assets.lib.core.statistics import adjust_p_values, is_binary, mcnemar_exact
from governance_assets.lib.helm.selection import choose_baselines, pattern_mask

PAIR_KEY = ["metric", "split", "sub_split", "instance_id"]
SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("baseline_suite", pa.string()),
        ("run_name", pa.string()),
        ("model", pa.string()),
        ("metric", pa.string()),
        ("split", pa.string()),
        ("n_paired", pa.int64()),
        ("trials", pa.int64()),
        ("test", pa.string()),
        ("flipped_to_fail", pa.int64()),
        ("flipped_to_pass", pa.int64()),
        ("baseline_mean", pa.float64()),
        ("candidate_mean", pa.float64()),
        ("p_value", pa.float64()),
        ("p_adjusted", pa.float64()),
        ("changed", pa.bool_()),
        ("same_run_spec", pa.bool_()),
        ("silent_change", pa.bool_()),
        ("flipped_instances", pa.list_(pa.string())),
    ]
)
"""The `monitoring/eval_drift` table: one row per compared (run, metric, split)."""
COLUMNS: list[str] = SCHEMA.names


def _outcomes(table: pd.DataFrame, patterns: Sequence[str], run_names: set[str]) -> pd.DataFrame:
    """Per instance of `run_names`' unperturbed rows whose metric matches a pattern: the mean of its
    train trials (`value`), how many there were (`trials`) and whether each was 0 or 1, with
    missing splits as ""."""
    rows = table[pattern_mask(table["metric"], patterns)]
    rows = rows[rows["run_name"].isin(run_names) & rows["perturbation"].isna()]
    rows = rows.fillna({"split": "", "sub_split": ""})[["run_name", "model", *PAIR_KEY, "value"]].dropna(
        subset=["value"]
    )
    rows = rows.assign(value=rows["value"].astype("float64"), zero_one=rows["value"].isin([0.0, 1.0]))
    grouped = rows.groupby(["run_name", "model", *PAIR_KEY], sort=False, observed=True)
    return grouped.agg(value=("value", "mean"), trials=("value", "size"), zero_one=("zero_one", "all")).reset_index()


def change_p_value(test: str, base: np.ndarray[Any, Any], cand: np.ndarray[Any, Any]) -> float:
    """Two-sided p-value of "no change" for paired instance values."""
    if test == "mcnemar_exact":
        return mcnemar_exact(base, cand).p_value
    result = paired_t_test(base, cand, tolerance=0.0, alpha=0.05)
    return min(1.0, 2.0 * min(result.p_exceeds, result.p_within))


def evaluation_flips(
    suite: str,
    instance_stats: pd.DataFrame,
    runs: pd.DataFrame,
    earlier: Sequence[tuple[str, pd.DataFrame, pd.DataFrame]],
    settings: EvalDriftSettings,
) -> list[dict[str, Any]]:
    """One row (`COLUMNS`) per (run, metric, split) that this suite and an earlier one both have.

    `earlier` holds (suite, instance stats, runs) from the most recent earlier suite to the oldest.
    Comparisons whose values are not all 0/1 are left out (flips need right/wrong outcomes)."""
    chosen = choose_baselines(
        [str(name) for name in instance_stats["run_name"].unique()],
        [(name, stats) for name, stats, _ in earlier],
        None,
    )
    spec_hashes = dict(zip(runs["run_name"], runs["run_spec_hash"], strict=True))
    pending: list[tuple[dict[str, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
    for baseline_suite, baseline_stats, baseline_runs in earlier:
        names = {name for name, picked in chosen.items() if picked == baseline_suite}
        if not names:
            continue
        baseline_hashes = dict(zip(baseline_runs["run_name"], baseline_runs["run_spec_hash"], strict=True))
        candidate = _outcomes(instance_stats, settings.metrics, names)
        baseline = _outcomes(baseline_stats, settings.metrics, names).drop(columns="model")
        paired = candidate.merge(baseline, on=["run_name", *PAIR_KEY], suffixes=("", "_baseline"))
        for (run_name, metric, split), group in paired.groupby(["run_name", "metric", "split"], sort=True):
            base, cand = group["value_baseline"].to_numpy(float), group["value"].to_numpy(float)
            if not (group["zero_one"].all() and group["zero_one_baseline"].all()):
                continue
            trials = int(max(group["trials"].max(), group["trials_baseline"].max()))
            flipped = group[base != cand]
            row = {
                "suite": suite,
                "baseline_suite": baseline_suite,
                "run_name": run_name,
                "model": str(group["model"].iloc[0]),
                "metric": metric,
                "split": split or None,
                "n_paired": len(group),
                "trials": trials,
                "test": "mcnemar_exact" if trials == 1 and is_binary(base) and is_binary(cand) else "paired_t",
                "flipped_to_fail": int(np.count_nonzero(cand < base)),
                "flipped_to_pass": int(np.count_nonzero(cand > base)),
                "baseline_mean": float(base.mean()),
                "candidate_mean": float(cand.mean()),
                "same_run_spec": spec_hashes.get(run_name) == baseline_hashes.get(run_name),
                "flipped_instances": sorted(str(i) for i in flipped["instance_id"]),
            }
            pending.append((row, base, cand))
    p_values = [change_p_value(row["test"], base, cand) for row, base, cand in pending]
    adjusted = adjust_p_values(p_values, settings.correction) if p_values else np.array([])
    rows = []
    for (row, _, _), p_value, p_adjusted in zip(pending, p_values, adjusted, strict=True):
        changed = bool(p_adjusted < settings.alpha)
        rows.append(
            row
            | {
                "p_value": p_value,
                "p_adjusted": float(p_adjusted),
                "changed": changed,
                "silent_change": changed and row["same_run_spec"],
            }
        )
    return [{column: row[column] for column in COLUMNS} for row in rows]
