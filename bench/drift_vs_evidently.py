"""Drift of one million traffic rows over ten features: our `dataset_drift` side by side with
Evidently's `DataDriftPreset` (told the column types, and inferring its own) and a plain per-column
scipy loop, on the same data in one run; then the new cases (low-cardinality integers, nullable
integers, booleans with missing values, all-missing columns) with Evidently's own types.

A reference of 100,000 rows and a current set of 1,000,000 rows of LLM-traffic features (token
counts, latency, refusal and PII flags, model, language, …) are generated from a fixed seed, with
drift injected in half of the features, and written to Parquet once; every side reads those same
files. Each side runs in a fresh interpreter per repeat (repeats interleaved), reports its own
timings and peak memory (`_evidently_side.run_child`), and the per-feature tests, statistics and
verdicts are compared. Evidently runs in the benchmark's own virtualenv (default
`.governance/bench/venv-evidently`, created on first use from `bench/evidently-requirements.txt`;
the only network access, at install time); if it does not install, the reason is recorded and the
comparison is with the scipy loop alone. Usage:

    .venv/bin/python bench/drift_vs_evidently.py [--rows 1000000] [--reference-rows 100000] [--repeats 3]

Results go to `bench/results/drift_vs_evidently.json`. The script exits 1 if the sides disagree on
a test or a verdict (the features are printed), and otherwise 0 whether or not the speed and
memory targets are met; it prints which are.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats
from scipy.spatial import distance

from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.monitoring.drift import DatasetDrift, dataset_drift, feature_drift

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import _evidently_side as side  # noqa: E402  (the child protocol, shared with the Evidently side)
import ingest_vs_summarize as ivs  # noqa: E402  (run_measured, tail, Target, machine, print_targets)

DEFAULT_RESULTS = BENCH_DIR / "results" / "drift_vs_evidently.json"
REQUIREMENTS = BENCH_DIR / "evidently-requirements.txt"
EVIDENTLY_SIDE = BENCH_DIR / "_evidently_side.py"
DEFAULT_VENV = ivs.PROJECT_ROOT / ".governance" / "bench" / "venv-evidently"
"""Git-ignored (`.governance/`), like the rest of the project's local state."""

CURRENT_ROWS = 1_000_000
REFERENCE_ROWS = 100_000
"""Above Evidently's 1,000: the distances (Wasserstein, Jensen–Shannon), as for a real reference profile."""
SMALL_REFERENCE_MAX = 1000
SEED = 0
REPEATS = 3
MIN_SPEEDUP = 15.0
MAX_PEAK_RSS_MIB = 600.0
SIDES = ("evidently", "evidently_inferred", "scipy_loop", "ours")
LABELS = {
    "evidently": "Evidently DataDriftPreset, types given",
    "evidently_inferred": "Evidently DataDriftPreset, its own types",
    "scipy_loop": "per-column scipy loop",
    "ours": "ours (dataset_drift)",
}
CASE_SIZES = {"small": (600, 300), "large": (5000, 4000)}
"""The new cases at two sizes: a reference under Evidently's 1,000 rows (p-value tests) and above (distances)."""

MODELS = ("llama-3.1-8b-instruct", "mistral-7b-instruct", "gpt-4o-mini", "claude-3-haiku")
LANGUAGES = ("en", "es", "fr", "de", "zh")
SEGMENTS = ("free", "pro", "enterprise")


@dataclass(frozen=True)
class Feature:
    """One generated feature: its kind (as Evidently's `Dataset` infers it, ours too, and as Evidently
    is told in the "types given" mode) and the drift injected."""

    name: str
    kind: str
    dtype: str
    reference: str
    current: str
    drift_expected: bool


FEATURES = (
    Feature("prompt_tokens", "numerical", "int64", "5 + lognormal(ln 32, 0.6), rounded", "× 1.03 (mild)", False),
    Feature("completion_tokens", "numerical", "int64", "1 + lognormal(ln 80, 0.7), rounded", "× 1.6", True),
    Feature(
        "latency_ms", "numerical", "float64", "(120 + 8·completion_tokens)·lognormal(0, 0.3)", "follows tokens", True
    ),
    Feature("ttft_ms", "numerical", "float64", "gamma(2, 60)", "unchanged", False),
    Feature("refusal", "categorical", "bool", "3% true", "15% true", True),
    Feature("pii_flag", "categorical", "int8", "0/1, 1.0% ones", "1.2% ones", False),
    Feature("model", "categorical", "string", f"{len(MODELS)} models, 40/30/20/10%", "unchanged", False),
    Feature("language", "categorical", "string", "en 85%, es/fr 5%, de 4%, zh 1%", "en 45%, es 25%, zh 15%", True),
    Feature("user_segment", "categorical", "string", "free/pro/enterprise 60/30/10%", "55/33/12%", False),
    Feature(
        "feedback",
        "numerical",
        "float64",
        "70% missing, else +1 (80%) or -1 (2 values: categorical tests)",
        "+1 60%",
        True,
    ),
)


def traffic_features(rng: np.random.Generator, rows: int, drifted: bool) -> pd.DataFrame:
    """`rows` rows of the `FEATURES`, drawn as the current set (`drifted`) or the reference."""
    prompt = 5 + np.rint(rng.lognormal(np.log(32.0), 0.6, rows) * (1.03 if drifted else 1.0)).astype(np.int64)
    completion = 1 + np.rint(rng.lognormal(np.log(80.0), 0.7, rows) * (1.6 if drifted else 1.0)).astype(np.int64)
    latency = np.round((120.0 + 8.0 * completion) * rng.lognormal(0.0, 0.3, rows), 3)
    feedback = np.where(rng.random(rows) < (0.6 if drifted else 0.8), 1.0, -1.0)
    languages = (0.45, 0.25, 0.10, 0.05, 0.15) if drifted else (0.85, 0.05, 0.05, 0.04, 0.01)
    frame = pd.DataFrame({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": latency,
        "ttft_ms": np.round(rng.gamma(2.0, 60.0, rows), 3),
        "refusal": rng.random(rows) < (0.15 if drifted else 0.03),
        "pii_flag": (rng.random(rows) < (0.012 if drifted else 0.010)).astype(np.int8),
        "model": rng.choice(np.array(MODELS, dtype=object), rows, p=(0.4, 0.3, 0.2, 0.1)),
        "language": rng.choice(np.array(LANGUAGES, dtype=object), rows, p=languages),
        "user_segment": rng.choice(np.array(SEGMENTS, dtype=object), rows, p=(0.55, 0.33, 0.12) if drifted else (0.6, 0.3, 0.1)),
        "feedback": np.where(rng.random(rows) < 0.3, feedback, np.nan),
    })  # fmt: skip
    return frame[[feature.name for feature in FEATURES]]


def write_data(data_dir: Path, reference_rows: int, current_rows: int, seed: int) -> dict[str, Any]:
    """Generate both frames (seeded), write them and the declared kinds to `data_dir`; describe them."""
    reference_rng, current_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    data_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, rng, rows, drifted in (
        ("reference", reference_rng, reference_rows, False),
        ("current", current_rng, current_rows, True),
    ):
        frame = traffic_features(rng, rows, drifted)
        path = data_dir / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="snappy")
        sizes[name] = path.stat().st_size
    kinds = {feature.name: feature.kind for feature in FEATURES}
    (data_dir / "features.json").write_text(json.dumps(kinds, indent=2), "utf-8")
    return {
        "seed": seed,
        "rows": {"reference": reference_rows, "current": current_rows},
        "parquet_bytes": sizes,
        "features": [asdict(feature) for feature in FEATURES],
    }


# --- the new cases --------------------------------------------------------------------------------


def case_frame(rng: np.random.Generator, rows: int, drifted: bool) -> pd.DataFrame:
    """Columns whose type Evidently's `Dataset` decides in ways a column-type table misses."""
    return pd.DataFrame({
        "stars": rng.integers(1, 7 if drifted else 9, rows),  # 6-8 distinct integers: categorical
        "retries": pd.Series(rng.integers(0, 3, rows), dtype="Int64").mask(rng.random(rows) < 0.2),  # nullable
        "thumbs_up": pd.Series(rng.random(rows) < (0.5 if drifted else 0.7), dtype=object).mask(rng.random(rows) < 0.3),
        "nothing": pd.Series([None] * rows, dtype=object),  # all missing, object
        "nothing_float": np.full(rows, np.nan),  # all missing, float
        "latency_ms": np.round(rng.lognormal(np.log(300.0), 0.4, rows) * (1.15 if drifted else 1.0), 3),
    })  # fmt: skip


def write_cases(case_dir: Path, seed: int) -> None:
    """The new cases at each of `CASE_SIZES` as `<size>-reference.parquet` and `<size>-current.parquet`."""
    case_dir.mkdir(parents=True, exist_ok=True)
    for size, (reference_rows, current_rows) in CASE_SIZES.items():
        rng = np.random.default_rng([seed, 7])
        for name, rows, drifted in (("reference", reference_rows, False), ("current", current_rows, True)):
            pq.write_table(
                pa.Table.from_pandas(case_frame(rng, rows, drifted), preserve_index=False),
                case_dir / f"{size}-{name}.parquet",
            )


def ours_cases(case_dir: Path) -> dict[str, dict[str, Any]]:
    """Our `dataset_drift` with its defaults on each case column alone (as Evidently is run)."""
    outcomes: dict[str, dict[str, Any]] = {}
    for size in CASE_SIZES:
        reference = pd.read_parquet(case_dir / f"{size}-reference.parquet")
        current = pd.read_parquet(case_dir / f"{size}-current.parquet")
        for column in reference.columns:
            [feature] = dataset_drift(reference[[column]], current[[column]]).features
            tested = feature.reference_size > 0 and feature.current_size > 0
            outcomes[f"{size}/{column}"] = {
                "tested": tested, "method": feature.method, "statistic": feature.statistic,
                "drifted": feature.drifted, "kind": feature.kind, "detail": feature.detail,
            }  # fmt: skip
    return outcomes


def compare_cases(ours: Mapping[str, Mapping[str, Any]], evidently: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Disagreements on the new cases: a column one side tests and the other not, another test or
    verdict, a statistic off by more than 1e-9 (relative). Where Evidently raises, ours must say "no data"."""
    found = []
    for key, mine in ours.items():
        theirs = evidently[key]
        if "error" in theirs:
            if mine["tested"]:
                found.append(f"{key}: Evidently raised ({theirs['error']}) but ours tested it")
        elif mine["tested"] != theirs["tested"]:
            found.append(f"{key}: tested by {'ours' if mine['tested'] else 'Evidently'} only")
        elif mine["tested"]:
            if (mine["method"], mine["drifted"]) != (theirs["method"], theirs["drifted"]):
                found.append(f"{key}: ours {mine['method']} drifted={mine['drifted']}, "
                             f"Evidently {theirs['method']} drifted={theirs['drifted']}")  # fmt: skip
            elif not math.isclose(mine["statistic"], theirs["statistic"], rel_tol=1e-9, abs_tol=1e-12):
                found.append(f"{key}: statistic {mine['statistic']!r} vs Evidently {theirs['statistic']!r}")
    return found


# --- the project-side children -------------------------------------------------------------------


def ours_prepare(reference: pd.DataFrame, current: pd.DataFrame, kinds: side.Kinds) -> Callable[[], DatasetDrift]:
    """Our `dataset_drift` with its defaults (kinds inferred, Evidently's tests, one thread per CPU)."""
    return lambda: dataset_drift(reference, current)


def ours_extract(drift: DatasetDrift) -> side.Summary:
    features = {
        f.feature: {"method": f.method, "statistic": f.statistic, "drifted": f.drifted, "kind": f.kind, "detail": f.detail}
        for f in drift.features
    }  # fmt: skip
    return {"features": features, "drifted_share": drift.drifted_share, "dataset_drifted": drift.drifted}


def finite(series: pd.Series) -> pd.Series:
    """`series` without NaN, None or ±inf, as Evidently cleans a column."""
    return series.replace([-np.inf, np.inf], np.nan).dropna()


def scipy_loop(reference: pd.DataFrame, current: pd.DataFrame, kinds: side.Kinds) -> side.Summary:
    """The straightforward version: per column, Evidently's default test for a reference above 1,000
    rows, with scipy's `wasserstein_distance` or `jensenshannon` over `np.histogram` / value counts."""
    features: side.Features = {}
    for name, kind in kinds.items():
        ref, cur = finite(reference[name]), finite(current[name])
        if len(ref) <= SMALL_REFERENCE_MAX:
            raise ValueError(f"{name}: the scipy loop implements the tests for references above {SMALL_REFERENCE_MAX}")
        if kind == "numerical" and pd.concat([ref, cur]).nunique() > 5:
            method = "wasserstein"
            statistic = stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
        else:
            method = "jensenshannon"
            if kind == "numerical" and ref.nunique() > 20:
                edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
                p, q = np.histogram(ref, edges)[0] / len(ref), np.histogram(cur, edges)[0] / len(cur)
            else:
                keys = pd.concat([ref, cur]).unique()
                p = ref.value_counts().reindex(keys, fill_value=0).to_numpy() / len(ref)
                q = cur.value_counts().reindex(keys, fill_value=0).to_numpy() / len(cur)
            statistic = float(distance.jensenshannon(p, q))
        features[name] = {"method": method, "statistic": float(statistic), "drifted": bool(statistic >= 0.1)}
    share = sum(f["drifted"] for f in features.values()) / len(features)
    return {"features": features, "drifted_share": share, "dataset_drifted": share >= 0.5}


def child(name: str, data_dir: Path, result_path: Path) -> None:
    """One measured project-side child: `ours` or `scipy_loop`."""
    if name == "ours":
        side.run_child(name, data_dir, result_path, ours_prepare, ours_extract)
    elif name == "scipy_loop":
        side.run_child(name, data_dir, result_path, lambda r, c, k: lambda: scipy_loop(r, c, k), lambda s: s)
    else:
        raise SystemExit(f"unknown child {name!r}")


# --- Evidently's virtualenv ----------------------------------------------------------------------


def install_error(log: Path) -> str:
    """The error lines at the end of an install log (pip's warnings left out), shortened."""
    lines = [line[:300] for line in ivs.tail(log, 40).splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("WARNING")]
    return "\n".join((errors or lines)[-6:])


def evidently_python(venv: Path, log: Path) -> tuple[Path | None, dict[str, Any]]:
    """The Python of the benchmark's Evidently virtualenv, created and installed from `REQUIREMENTS`
    when missing or out of date; None and why if that fails."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp, python = venv / f".installed-{digest}", venv / "bin" / "python"
    info: dict[str, Any] = {"venv": str(venv), "requirements": str(REQUIREMENTS.relative_to(ivs.PROJECT_ROOT))}
    if stamp.is_file() and python.is_file():
        return python, {**info, "status": "ready"}
    print(f"installing Evidently into {venv} (from {REQUIREMENTS.name}) …", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    start = time.perf_counter()
    steps = (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--no-input", "-r", str(REQUIREMENTS)],
        [str(python), "-c", "import evidently.presets; print(evidently.__version__)"],
    )
    with log.open("wb") as out:
        for step in steps:
            try:
                code = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            except OSError as error:
                code = -1
                out.write(f"{error}\n".encode())
            if code != 0:
                out.flush()
                why = f"`{' '.join(step[:4])} …` exited {code}: {install_error(log)}"
                return None, {**info, "status": "unavailable", "reason": why}
    stamp.touch()
    return python, {**info, "status": "installed", "install_seconds": time.perf_counter() - start}


def offline_prefix() -> tuple[list[str], str]:
    """`unshare --net` (a network namespace without interfaces: no network at all) if this machine
    allows it, and what the children's network is."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return [], "not isolated: no unshare"
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return [], f"not isolated: unshare --net refused ({probe.stderr.decode(errors='replace').strip()})"
    return [unshare, "--net"], "none: every child runs under unshare --net"


# --- measurement and comparison ------------------------------------------------------------------


def measure(commands: Mapping[str, list[str]], data_dir: Path, workdir: Path, repeats: int) -> dict[str, list[Any]]:
    """Each side `repeats` times, each time in a fresh process, the sides interleaved; their reports."""
    env = {**os.environ, **side.NO_TRACKING_ENV}
    reports: dict[str, list[Any]] = {name: [] for name in commands}
    for repeat in range(repeats):
        for name, command in commands.items():
            result_path = workdir / f"{name}-{repeat}.json"
            log = workdir / f"{name}-{repeat}.log"
            measured = ivs.run_measured([*command, str(data_dir), str(result_path)], log, env, ivs.PROJECT_ROOT)
            if measured.returncode != 0:
                raise SystemExit(f"{name} (repeat {repeat + 1}) failed (exit {measured.returncode}):\n{ivs.tail(log)}")
            report = json.loads(result_path.read_text("utf-8"))
            report["process_seconds"] = measured.seconds
            reports[name].append(report)
            print(
                f"repeat {repeat + 1}/{repeats} {name:<10} drift {report['drift_seconds']:7.2f} s, "
                f"peak {report['memory_mib']['peak_process']:6.0f} MiB",
                flush=True,
            )
    return reports


def summarize_side(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median times and the largest peaks over the repeats of one side."""
    memory = [report["memory_mib"] for report in reports]

    def largest(key: str) -> float | None:
        values = [m[key] for m in memory if m[key] is not None]
        return max(values) if values else None

    return {
        "drift_seconds": float(np.median([r["drift_seconds"] for r in reports])),
        "drift_seconds_each": [r["drift_seconds"] for r in reports],
        "load_seconds": float(np.median([r["load_seconds"] for r in reports])),
        "prepare_seconds": float(np.median([r["prepare_seconds"] for r in reports])),
        "extract_seconds": float(np.median([r["extract_seconds"] for r in reports])),
        "process_seconds": float(np.median([r["process_seconds"] for r in reports])),
        "peak_rss_mib": largest("peak_process"),
        "peak_rss_before_measured_steps_mib": largest("peak_before_measured_steps"),
        "rss_before_drift_mib": largest("rss_before_drift"),
        "peak_rss_drift_mib": largest("peak_drift"),
        "peak_rss_prepare_mib": largest("peak_prepare"),
        "versions": reports[0]["versions"],
        "drifted_share": reports[0]["drifted_share"],
        "dataset_drifted": reports[0]["dataset_drifted"],
        "features": reports[0]["features"],
    }


def unstable(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """Features whose test or verdict changed between repeats of one side (should be none)."""
    first = reports[0]["features"]
    return sorted({
        name for report in reports[1:] for name, feature in report["features"].items()
        if (feature["method"], feature["drifted"]) != (first[name]["method"], first[name]["drifted"])
    })  # fmt: skip


def compare(sides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per feature, ours against each other side: test, verdict, statistic; and the dataset verdict."""
    ours = sides["ours"]
    declared = {feature.name: feature.kind for feature in FEATURES}
    agreement: dict[str, Any] = {
        "kind_mismatches": sorted(n for n, f in ours["features"].items() if f["kind"] != declared[n]),
    }
    for other_name, other in sides.items():
        if other_name == "ours":
            continue
        methods, verdicts, diffs = [], [], {}
        for name, feature in ours["features"].items():
            theirs = other["features"].get(name)
            if theirs is None:
                methods.append(f"{name}: ours {feature['method']}, {other_name} did not test it")
                continue
            if feature["method"] != theirs["method"]:
                methods.append(f"{name}: ours {feature['method']}, {other_name} {theirs['method']}")
            if feature["drifted"] != theirs["drifted"]:
                verdicts.append(f"{name}: ours drifted={feature['drifted']}, {other_name} drifted={theirs['drifted']}")
            diffs[name] = abs(feature["statistic"] - theirs["statistic"])
        worst = max(diffs, key=lambda n: diffs[n])
        relative = {
            n: d / abs(other["features"][n]["statistic"]) for n, d in diffs.items() if other["features"][n]["statistic"]
        }
        agreement[other_name] = {
            "method_mismatches": methods,
            "verdict_mismatches": verdicts,
            "dataset_verdict_equal": ours["dataset_drifted"] == other["dataset_drifted"],
            "drifted_share_equal": math.isclose(ours["drifted_share"], other["drifted_share"]),
            "statistic_max_abs_diff": diffs[worst],
            "statistic_max_abs_diff_feature": worst,
            "statistic_max_rel_diff": max(relative.values(), default=0.0),
        }
    return agreement


def problems(agreement: Mapping[str, Any], unstable_features: Mapping[str, list[str]]) -> list[str]:
    """Every disagreement that makes the run fail: kinds, tests, verdicts, the dataset verdict."""
    found = [f"kind of {name} is not the declared one" for name in agreement["kind_mismatches"]]
    for other in SIDES:
        if other == "ours" or other not in agreement:
            continue
        found += [f"test differs from {LABELS[other]}: {m}" for m in agreement[other]["method_mismatches"]]
        found += [f"verdict differs from {LABELS[other]}: {m}" for m in agreement[other]["verdict_mismatches"]]
        if not agreement[other]["dataset_verdict_equal"] or not agreement[other]["drifted_share_equal"]:
            found.append(f"dataset drift differs from {LABELS[other]}")
    found += [
        f"{name}: verdicts changed between repeats: {feats}" for name, feats in unstable_features.items() if feats
    ]
    return found


def evaluate(results: Mapping[str, Any]) -> list[ivs.Target]:
    """The targets: speed-up over Evidently (if it ran), our peak memory, identical verdicts."""
    sides, targets = results["sides"], []
    if "evidently" in sides:
        speedup = results["ratios"]["evidently_over_ours"]
        targets.append(ivs.Target(
            "speed-up (Evidently / ours)", f">= {MIN_SPEEDUP:g}", speedup,
            f"median drift seconds of {results['repeats']} fresh processes each", speedup >= MIN_SPEEDUP,
        ))  # fmt: skip
    peak = sides["ours"]["peak_rss_mib"]
    targets.append(ivs.Target(
        "peak RSS of ours (MiB)", f"< {MAX_PEAK_RSS_MIB:g}", peak,
        "VmHWM of the whole process: interpreter, data, drift", peak < MAX_PEAK_RSS_MIB,
    ))  # fmt: skip
    disagreements = len(results["problems"])
    targets.append(ivs.Target(
        "disagreements (tests, verdicts)", "== 0", disagreements,
        "ours against " + " and ".join(LABELS[s] for s in sides if s != "ours"), disagreements == 0,
    ))  # fmt: skip
    return targets


def profile_ours(data_dir: Path) -> dict[str, float]:
    """Print a cProfile of one more, unmeasured `dataset_drift` on one thread (cProfile sees one
    thread only) and return the seconds of each feature alone."""
    reference = pd.read_parquet(data_dir / "reference.parquet")
    current = pd.read_parquet(data_dir / "current.parquet")
    profiler = cProfile.Profile()
    profiler.runcall(dataset_drift, reference, current, workers=1)
    print("\nprofile of one more dataset_drift, one thread (cumulative time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumtime").print_stats(30)
    seconds = {}
    for name in reference.columns:
        start = time.perf_counter()
        feature_drift(name, reference[name], current[name])
        seconds[name] = time.perf_counter() - start
    print("one feature at a time, one thread:", ", ".join(f"{n} {s:.3f} s" for n, s in seconds.items()))
    return seconds


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Set up Evidently, generate the data, measure every side, compare; the figures."""
    evidently: dict[str, Any]
    if args.no_evidently:
        python, evidently = None, {"status": "skipped", "reason": "--no-evidently"}
    else:
        python, evidently = evidently_python(args.evidently_venv.resolve(), workdir / "evidently-install.log")
    if python is None:
        print(f"Evidently is not measured: {evidently['reason']}", flush=True)

    start = time.perf_counter()
    data = write_data(workdir / "data", args.reference_rows, args.rows, args.seed)
    print(f"generated and wrote the data in {time.perf_counter() - start:.1f} s", flush=True)

    commands = {"ours": [sys.executable, __file__, "--child", "ours"]}
    commands["scipy_loop"] = [sys.executable, __file__, "--child", "scipy_loop"]
    if python is not None:
        commands["evidently"] = [str(python), str(EVIDENTLY_SIDE), "--given"]
        commands["evidently_inferred"] = [str(python), str(EVIDENTLY_SIDE), "--inferred"]
    prefix, network = offline_prefix()
    commands = {name: [*prefix, *commands[name]] for name in SIDES if name in commands}
    load_before = os.getloadavg()
    reports = measure(commands, workdir / "data", workdir, args.repeats)
    load_after = os.getloadavg()

    sides = {name: summarize_side(reports[name]) for name in commands}
    agreement = compare(sides)
    unstable_features = {name: unstable(reports[name]) for name in commands}
    ours_seconds = sides["ours"]["drift_seconds"]
    ratios = {f"{name}_over_ours": sides[name]["drift_seconds"] / ours_seconds for name in sides if name != "ours"}
    if "evidently" in sides:
        ratios["evidently_over_scipy_loop"] = sides["evidently"]["drift_seconds"] / sides["scipy_loop"]["drift_seconds"]
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": ivs.machine() | {"load_average_1_5_15_min": {"before": load_before, "after": load_after}},
        "versions": side.versions(("numpy", "pandas", "scipy", "pyarrow")),
        "evidently": evidently,
        "data": data,
        "repeats": args.repeats,
        "method": "each side in a fresh process per repeat (repeats interleaved); drift timed after reading the "
        "Parquet files, an untimed warm-up on their first rows and any preparation (Evidently's Dataset); median "
        "over repeats. Peak memory: the child's VmHWM (whole process), the largest over repeats",
        "network_at_run_time": network,
        "threads": {"ours": "one per CPU (dataset_drift default)", "scipy_loop": 1, "evidently": 1},
        "sides": sides,
        "ratios": ratios,
        "agreement": agreement,
        "unstable_verdicts": unstable_features,
    }
    results["problems"] = problems(agreement, unstable_features)
    write_cases(workdir / "cases", args.seed)
    cases: dict[str, Any] = {"ours": ours_cases(workdir / "cases")}
    if python is not None:
        evidently_cases = workdir / "cases-evidently.json"
        log = workdir / "cases-evidently.log"
        env = {**os.environ, **side.NO_TRACKING_ENV}
        command = [*prefix, str(python), str(EVIDENTLY_SIDE), "--cases", str(workdir / "cases"), str(evidently_cases)]
        if ivs.run_measured(command, log, env, ivs.PROJECT_ROOT).returncode != 0:
            raise SystemExit(f"Evidently on the new cases failed:\n{ivs.tail(log)}")
        cases["evidently_inferred"] = json.loads(evidently_cases.read_text("utf-8"))
        cases["problems"] = compare_cases(cases["ours"], cases["evidently_inferred"])
        results["problems"] += [f"new case: {problem}" for problem in cases["problems"]]
    results["cases"] = cases
    results["targets"] = [asdict(target) for target in evaluate(results)]
    if args.profile:
        results["profile_seconds_per_feature"] = profile_ours(workdir / "data")
    return results


def print_report(results: Mapping[str, Any]) -> None:
    """The side-by-side table, the per-feature comparison and the verdict on each target."""
    sides, data = results["sides"], results["data"]
    ours = sides["ours"]
    kinds = [f["kind"] for f in data["features"]]
    print(
        f"\ndata: reference {data['rows']['reference']:,} rows, current {data['rows']['current']:,} rows, "
        f"{len(kinds)} features ({kinds.count('numerical')} numerical, {kinds.count('categorical')} categorical), "
        f"seed {data['seed']}; median of {results['repeats']} fresh processes per side"
    )
    machine = results["machine"]
    load = machine["load_average_1_5_15_min"]
    print(
        f"{machine['cpus']} CPUs; load average (1 min) {load['before'][0]:.2f} before the measurements, "
        f"{load['after'][0]:.2f} after (other processes make the times noisy)"
    )
    if "evidently" not in sides:
        print(f"Evidently not measured: {results['evidently'].get('reason')}")
    names = [name for name in SIDES if name in sides]
    labels = {
        name: LABELS[name] + (f" {sides[name]['versions']['evidently']}" if name == "evidently" else "")
        for name in names
    }
    width = max(map(len, labels.values()))
    header = f"{'side':<{width}}  {'drift':>8}  {'× ours':>7}  {'loading':>8}  {'prepare':>8}  {'peak RSS':>9}"
    print(f"\n{header}\n{'-' * len(header)}")
    for name in names:
        figures = sides[name]
        print(
            f"{labels[name]:<{width}}  {figures['drift_seconds']:7.2f}s  "
            f"{figures['drift_seconds'] / ours['drift_seconds']:6.1f}×  {figures['load_seconds']:7.2f}s  "
            f"{figures['prepare_seconds']:7.2f}s  {figures['peak_rss_mib']:5.0f} MiB"
        )
    others = [name for name in SIDES if name in sides and name != "ours"]
    width = max(len(f.name) for f in FEATURES)
    columns = "  ".join(f"{'stat ' + name:>16}" for name in others)
    print(
        f"\n{'feature':<{width}}  {'kind':<11}  {'test':<13}  {'stat ours':>12}  {columns}  drifted (ours/{'/'.join(others)})"
    )
    for name, feature in ours["features"].items():
        theirs = [sides[o]["features"][name] for o in others]
        tests = {feature["method"], *(t["method"] for t in theirs)}
        test = feature["method"] if len(tests) == 1 else "/".join([feature["method"], *(t["method"] for t in theirs)])
        stats_text = "  ".join(f"{t['statistic']:16.6g}" for t in theirs)
        verdicts = "/".join("yes" if f["drifted"] else "no" for f in [feature, *theirs])
        print(
            f"{name:<{width}}  {feature['kind']:<11}  {test:<13}  {feature['statistic']:12.6g}  {stats_text}  {verdicts}"
        )
    shares = ", ".join(f"{LABELS[n]} {sides[n]['drifted_share']:.2f}" for n in SIDES if n in sides)
    print(f"drifted share: {shares}; dataset drifted (ours): {ours['dataset_drifted']}")
    for other in others:
        agreement = results["agreement"][other]
        print(
            f"ours vs {LABELS[other]}: statistics max abs diff {agreement['statistic_max_abs_diff']:.3g} "
            f"({agreement['statistic_max_abs_diff_feature']}), max rel diff {agreement['statistic_max_rel_diff']:.3g}"
        )
    print_cases(results["cases"])
    ratios = results["ratios"]
    if "evidently_over_scipy_loop" in ratios:
        print(f"Evidently / scipy loop: {ratios['evidently_over_scipy_loop']:.1f}×")
    print()
    ivs.print_targets(results["targets"], decimals=2)
    if results["problems"]:
        print("\nDISAGREEMENTS:", *results["problems"], sep="\n  ")
    print()


def print_cases(cases: Mapping[str, Any]) -> None:
    """The new cases: Evidently with its own types against ours with its defaults, column by column."""
    theirs_all = cases.get("evidently_inferred", {})
    print(f"\nnew cases (reference/current rows: {CASE_SIZES}), Evidently with its own types vs ours:")
    print(f"{'case':<20}  {'Evidently type':<14}  {'Evidently':<34}  ours")
    for key, mine in cases["ours"].items():
        theirs = theirs_all.get(key, {})
        if "error" in theirs:
            shown = "raises " + theirs["error"].split(":")[0]
        elif theirs.get("tested"):
            shown = f"{theirs['method']} {theirs['statistic']:.6g} {'drift' if theirs['drifted'] else 'no drift'}"
        else:
            shown = "not tested" if theirs else "(not run)"
        ours_shown = (
            f"{mine['method']} {mine['statistic']:.6g} {'drift' if mine['drifted'] else 'no drift'}"
            if mine["tested"]
            else mine["detail"].split(";")[0]
        )
        print(f"{key:<20}  {theirs.get('type', '-'):<14}  {shown:<34}  {ours_shown}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (`--child` is internal: a measured project-side process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=CURRENT_ROWS, help=f"current rows (default {CURRENT_ROWS:,})")
    parser.add_argument(
        "--reference-rows", type=int, default=REFERENCE_ROWS, help=f"reference rows (default {REFERENCE_ROWS:,})"
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"fresh processes per side (default {REPEATS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"data seed (default {SEED})")
    parser.add_argument(
        "--evidently-venv", type=Path, default=DEFAULT_VENV, help=f"Evidently's virtualenv (default {DEFAULT_VENV})"
    )
    parser.add_argument("--no-evidently", action="store_true", help="leave Evidently out (as if it did not install)")
    parser.add_argument(
        "--workdir", type=Path, help="an empty or new folder to work in, kept (default: a temporary folder, removed)"
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where to write the JSON results")
    parser.add_argument("--profile", action="store_true", help="also profile one more dataset_drift (one thread)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    if args.rows < 1 or args.repeats < 1:
        raise SystemExit("--rows and --repeats must be at least 1")
    if args.reference_rows <= max(SMALL_REFERENCE_MAX, side.WARMUP_ROWS):
        raise SystemExit(
            f"--reference-rows must be above {max(SMALL_REFERENCE_MAX, side.WARMUP_ROWS)}: the scipy loop implements "
            f"Evidently's tests for references above {SMALL_REFERENCE_MAX} rows (Wasserstein, Jensen–Shannon)"
        )
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_drift_vs_evidently_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = benchmark(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir)
        else:
            print(f"work folder kept: {workdir}", flush=True)
    write_text_atomic(args.results, json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"results written to {args.results}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
