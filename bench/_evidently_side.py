"""The measured child processes of `drift_vs_evidently.py`, and its Evidently side.

This file runs in two interpreters. The project's imports it for `run_child`, which both of the
project-side children (our `dataset_drift` and the plain scipy loop) use. The benchmark's own
Evidently virtualenv runs it as a script: the Evidently side,

    <venv-evidently>/bin/python bench/_evidently_side.py --given|--inferred|--cases DATA_DIR RESULT_JSON

so at module level it imports only the standard library, numpy and pandas; Evidently is imported
inside the functions. `DATA_DIR` holds `reference.parquet`, `current.parquet` and
`features.json` (feature name -> "numerical" or "categorical"), all written by the parent.
``--given`` tells Evidently those column types; ``--inferred`` lets Evidently infer its own;
``--cases`` runs the new cases (`<size>-reference.parquet`, `<size>-current.parquet`) one column at
a time with Evidently's own types and writes its outcome per column (unmeasured).

Every child does the same: read both Parquet files (timed as loading), a warm-up on the first
`WARMUP_ROWS` rows of each (untimed: lazy imports and first-call costs), then `prepare` (timed on
its own: Evidently's `Dataset.from_pandas`, nothing for the others) and the drift computation
(timed: the figure that is compared), then the per-feature results are written as JSON. Memory is
read from `/proc/self/status` by the child itself: `VmHWM` before the measured steps (interpreter,
imports, data, warm-up), then reset through `/proc/self/clear_refs` so that the peak of each
measured step is known on its own; the process peak is the largest of them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

WARMUP_ROWS = 10_000
"""Rows of each frame in the untimed warm-up: enough for more than 1000 values in every column (feedback
is 70% missing), so that the warm-up chooses the same tests."""
NO_TRACKING_ENV = {"DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
"""Evidently's usage telemetry (`evidently.telemetry`, via iterative-telemetry) is off when
`DO_NOT_TRACK` is set; `ITERATIVE_DO_NOT_TRACK` switches off iterative-telemetry itself."""

Kinds = Mapping[str, str]
Features = dict[str, dict[str, Any]]
"""Feature -> {"method": Evidently's test id, "statistic": float, "drifted": bool, ...}."""
Summary = dict[str, Any]
"""{"features": Features, "drifted_share": float, "dataset_drifted": bool}."""
Prepare = Callable[[pd.DataFrame, pd.DataFrame, Kinds], Callable[[], Any]]
Extract = Callable[[Any], Summary]


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (`VmHWM`, `VmRSS`), in MiB."""
    for line in Path("/proc/self/status").read_text("ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset this process's `VmHWM` to its current RSS (Linux: `5` into clear_refs); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5", "ascii")
    except OSError:
        return False
    return True


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of `packages` (those installed)."""
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_child(side: str, data_dir: Path, result_path: Path, prepare: Prepare, extract: Extract) -> None:
    """Load the data, warm up, measure `prepare` and the drift computation, write the results as JSON."""
    start = time.perf_counter()
    reference = pd.read_parquet(data_dir / "reference.parquet")
    current = pd.read_parquet(data_dir / "current.parquet")
    load_seconds = time.perf_counter() - start
    kinds: dict[str, str] = json.loads((data_dir / "features.json").read_text("utf-8"))

    extract(prepare(reference.head(WARMUP_ROWS), current.head(WARMUP_ROWS), kinds)())
    peak_before = status_mib("VmHWM")

    resettable = reset_peak()
    start = time.perf_counter()
    compute = prepare(reference, current, kinds)
    prepare_seconds = time.perf_counter() - start
    peak_prepare = status_mib("VmHWM")

    reset_peak()
    rss_before_drift = status_mib("VmRSS")
    start = time.perf_counter()
    outcome = compute()
    drift_seconds = time.perf_counter() - start
    peak_drift = status_mib("VmHWM")
    start = time.perf_counter()
    summary = extract(outcome)
    extract_seconds = time.perf_counter() - start

    report = {
        "side": side,
        "rows": {"reference": len(reference), "current": len(current)},
        "load_seconds": load_seconds,
        "prepare_seconds": prepare_seconds,
        "drift_seconds": drift_seconds,
        "extract_seconds": extract_seconds,
        "memory_mib": {
            "peak_process": max(peak_before, peak_prepare, peak_drift),
            "peak_before_measured_steps": peak_before,
            "peak_prepare": peak_prepare if resettable else None,
            "rss_before_drift": rss_before_drift,
            "peak_drift": peak_drift if resettable else None,
            "peaks_per_step": resettable,
        },
        "python": platform.python_version(),
        "versions": versions(("evidently", "numpy", "pandas", "scipy", "pyarrow")),
        **summary,
    }
    result_path.write_text(json.dumps(report, indent=2), "utf-8")


def evidently_prepare(reference: pd.DataFrame, current: pd.DataFrame, kinds: Kinds) -> Callable[[], Any]:
    """Evidently `Dataset`s with the column types given (as ours infers them), and a run of the preset."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[name for name, kind in kinds.items() if kind == "numerical"],
        categorical_columns=[name for name, kind in kinds.items() if kind == "categorical"],
    )
    reference_data = Dataset.from_pandas(reference, data_definition=definition)
    current_data = Dataset.from_pandas(current, data_definition=definition)

    def run() -> Any:
        return Report([DataDriftPreset()], include_tests=True).run(current_data, reference_data)

    return run


def evidently_inferred_prepare(reference: pd.DataFrame, current: pd.DataFrame, kinds: Kinds) -> Callable[[], Any]:
    """Evidently `Dataset`s with the column types Evidently infers itself (no data definition)."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    reference_data, current_data = Dataset.from_pandas(reference), Dataset.from_pandas(current)

    def run() -> Any:
        return Report([DataDriftPreset()], include_tests=True).run(current_data, reference_data)

    return run


def evidently_cases(data_dir: Path, result_path: Path) -> None:
    """The new cases, one column at a time, each with Evidently's own column types: its type, test,
    statistic and verdict, "not tested" when its preset leaves the column out, or the error it raised."""
    from evidently import Dataset

    outcomes: dict[str, dict[str, Any]] = {}
    for case in sorted(data_dir.glob("*-reference.parquet")):
        size = case.name.removesuffix("-reference.parquet")
        reference = pd.read_parquet(case)
        current = pd.read_parquet(data_dir / f"{size}-current.parquet")
        for column in reference.columns:
            key = f"{size}/{column}"
            single_ref, single_cur = reference[[column]], current[[column]]
            column_type = Dataset.from_pandas(single_cur).data_definition.get_column_type(column).value
            try:
                summary = evidently_extract(evidently_inferred_prepare(single_ref, single_cur, {})())
            except Exception as error:  # recorded: Evidently's outcome on this case
                outcomes[key] = {"type": column_type, "error": f"{type(error).__name__}: {error}"[:300]}
                continue
            feature = summary["features"].get(column)
            outcomes[key] = {"type": column_type, "tested": feature is not None, **(feature or {})}
    result_path.write_text(json.dumps(outcomes, indent=2), "utf-8")


def evidently_extract(snapshot: Any) -> Summary:
    """Per column: Evidently's test id, drift score and verdict (its test's status); the dataset's share."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest

    test_ids = {test.display_name: test.name for test in vars(stattests).values() if isinstance(test, StatTest)}
    result = snapshot.dict()
    features: Features = {}
    share: float | None = None
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            features[config["column"]] = {
                "method": test_ids.get(config["method"], config["method"]),
                "method_name": config["method"],
                "statistic": float(metric["value"]),
                "threshold": config["threshold"],
            }
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    dataset_drifted = None
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith(":ValueDrift"):
            features[params["column"]]["drifted"] = test["status"] == "FAIL"
        elif params["type"].endswith(":DriftedColumnsCount"):
            dataset_drifted = test["status"] == "FAIL"  # the test is "share < drift_share"
    missing = [name for name, feature in features.items() if "drifted" not in feature]
    if missing or share is None or dataset_drifted is None:
        raise RuntimeError(f"incomplete Evidently snapshot: no verdict for {missing or 'the dataset'}")
    return {"features": features, "drifted_share": share, "dataset_drifted": dataset_drifted}


def main(argv: list[str]) -> int:
    modes = {"--given": "evidently", "--inferred": "evidently_inferred", "--cases": "cases"}
    if len(argv) != 3 or argv[0] not in modes:
        raise SystemExit("usage: _evidently_side.py --given|--inferred|--cases DATA_DIR RESULT_JSON")
    os.environ.update(NO_TRACKING_ENV)  # the parent sets them too; before Evidently is imported
    mode, data_dir, result_path = argv[0], Path(argv[1]), Path(argv[2])
    if mode == "--cases":
        evidently_cases(data_dir, result_path)
    else:
        prepare = evidently_prepare if mode == "--given" else evidently_inferred_prepare
        run_child(modes[mode], data_dir, result_path, prepare, evidently_extract)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
