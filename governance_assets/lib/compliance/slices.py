"""Failure slices: where does a model fail? Every value of every instance feature (model,
scenario, split, sub-split, perturbation, correct reference, input-length bucket) is a slice,
compared with the rest of the instances of the same metric; slices with enough support are tested
(Fisher's exact test for 0/1 metrics, Mann–Whitney otherwise), corrected for the number of
slices, and ranked by the failures they explain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from governance_assets.lib.core.statistics import adjust_p_values

SLICE_FEATURES = ("model", "scenario", "split", "sub_split", "perturbation", "reference", "input_length")
COLUMNS = [
    "metric", "feature", "value", "support", "slice_mean", "rest_mean", "gap", "failures_explained",
    "test", "p_value", "p_adjusted", "significant", "same_instances_as",
]  # fmt: skip


def _length_buckets(lengths: pd.Series, buckets: int) -> pd.Series:  # type: ignore[type-arg]
    """Quantile buckets of input length in characters, labelled by their range."""
    if lengths.nunique() < 2:
        return pd.Series(["all"] * len(lengths), index=lengths.index)
    binned = pd.qcut(lengths, q=min(buckets, lengths.nunique()), duplicates="drop")
    return binned.map(lambda interval: f"{int(interval.left) + 1}-{int(interval.right)} chars").astype(str)


def slice_frame(
    outcomes: pd.DataFrame, predictions: pd.DataFrame, runs: pd.DataFrame, length_buckets: int = 4
) -> pd.DataFrame:
    """Per-instance values (from `fairness.instance_outcomes`) with their slice features."""
    keys = ["run_name", "instance_id", "variant"]
    first = pd.DataFrame(
        {
            "run_name": predictions["run_name"].astype(str),
            "instance_id": predictions["instance_id"].astype(str),
            "variant": predictions["perturbation"].astype(object).where(predictions["perturbation"].notna(), ""),
            "input_chars": predictions["input"].astype(str).str.len(),
            "reference": predictions["correct_references"].map(
                lambda refs: str(refs[0])[:40] if refs is not None and len(refs) else "(none)"
            ),
        }
    ).drop_duplicates(keys)
    scenarios = runs.set_index("run_name")["scenario"].astype(str)
    variant = outcomes["perturbation"].astype(object).where(outcomes["perturbation"].notna(), "")
    frame = outcomes.assign(variant=variant.astype(str)).merge(first, on=keys, how="left").drop(columns="variant")
    frame["scenario"] = frame["run_name"].map(scenarios).fillna("(unknown)")
    frame["perturbation"] = frame["perturbation"].fillna("none").map(lambda label: label.split(",", 1)[0])
    frame["sub_split"] = frame["sub_split"].fillna("(none)")
    frame["split"] = frame["split"].fillna("(none)")
    frame["reference"] = frame["reference"].fillna("(none)")
    frame["input_length"] = "(unknown)"
    known = frame["input_chars"].notna()
    frame.loc[known, "input_length"] = _length_buckets(frame.loc[known, "input_chars"], length_buckets)
    return frame


def _test(inside: np.ndarray, outside: np.ndarray) -> tuple[str, float]:  # type: ignore[type-arg]
    if np.isin(inside, (0, 1)).all() and np.isin(outside, (0, 1)).all():
        table = [[inside.sum(), len(inside) - inside.sum()], [outside.sum(), len(outside) - outside.sum()]]
        return "fisher_exact", float(stats.fisher_exact(table).pvalue)
    if np.ptp(np.concatenate([inside, outside])) == 0:
        return "mann_whitney", 1.0
    return "mann_whitney", float(stats.mannwhitneyu(inside, outside, alternative="two-sided").pvalue)


def rank_slices(
    frame: pd.DataFrame,
    min_support: int,
    alpha: float,
    correction: Literal["holm", "bh"] = "holm",
    features: Sequence[str] = SLICE_FEATURES,
    higher_is_better: bool = True,
) -> pd.DataFrame:
    """Every slice with at least `min_support` instances (and as many outside it) of each metric,
    tested against the rest; p-values adjusted over all slices tested; ranked significant first,
    then by failures explained (how many more failures than the rest's rate predicts)."""
    rows = []
    for metric, metric_frame in frame.groupby("metric", observed=True, sort=True):
        values = metric_frame["value"].to_numpy(dtype=float)
        for feature in features:
            levels = metric_frame[feature].astype(str).to_numpy()
            if len(set(levels)) < 2:
                continue
            for level in sorted(set(levels)):
                mask = levels == level
                if mask.sum() < min_support or (~mask).sum() < min_support:
                    continue
                inside, outside = values[mask], values[~mask]
                test, p_value = _test(inside, outside)
                gap = float(inside.mean() - outside.mean())
                shortfall = -gap if higher_is_better else gap
                rows.append([metric, feature, level, int(mask.sum()), float(inside.mean()), float(outside.mean()),
                             gap, shortfall * int(mask.sum()), test, p_value, hash(np.flatnonzero(mask).tobytes())])  # fmt: skip
    table = pd.DataFrame(rows, columns=[*COLUMNS[:-3], "members"])
    table["p_adjusted"] = adjust_p_values(table["p_value"].to_numpy(dtype=float), correction)
    table["significant"] = table["p_adjusted"] <= alpha
    ranked = table.sort_values(
        ["significant", "failures_explained", "p_value"], ascending=[False, False, True], ignore_index=True
    )
    return _merge_identical(ranked)


def _merge_identical(ranked: pd.DataFrame) -> pd.DataFrame:
    """Slices of one metric holding exactly the same instances (`sub_split=(none)` and a scenario
    without groups) are one slice: keep the best-ranked, name the others in `same_instances_as`."""
    first: dict[tuple[str, int], int] = {}
    aliases: dict[int, list[str]] = {}
    keep = []
    columns = zip(ranked["metric"], ranked["members"], ranked["feature"], ranked["value"], strict=True)
    for index, (metric, members, feature, value) in enumerate(columns):
        key = (str(metric), int(members))
        if key in first:
            aliases[first[key]].append(f"{feature}={value}")
            continue
        first[key] = index
        aliases[index] = []
        keep.append(index)
    merged = ranked.iloc[keep].drop(columns="members").reset_index(drop=True)
    merged["same_instances_as"] = [", ".join(aliases[i]) for i in keep]
    return merged
