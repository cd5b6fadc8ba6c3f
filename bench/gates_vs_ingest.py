"""Every gate of the default policy on a 1,000-run suite with 100 instances per run, timed against
the cold ingestion of the same suite in the same benchmark run.

The suite is built by `ingest_vs_summarize.build_suite` (replicas of the real run folders under
`../shared/helm_runs/`, only ever read), then the instances inside each run are replicated under
new ids until every run has `--instances` eval instances. The ingestion runs in a fresh
interpreter (`ingest_vs_summarize`'s ingest child); the gates run in this process. Usage:

    .venv/bin/python bench/gates_vs_ingest.py [--runs 1000] [--instances 100] [--workdir DIR] [--shared DIR]

Results go to `bench/results/gates_vs_ingest.json`. The script exits 0 whether or not the
target is met; it prints whether it was.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from governance_assets.lib.core.policy import Gate, Policy, load_policy
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.evaluation import load_suite_tables, read_frame
from governance_assets.lib.gates.outcomes import GateResult
from governance_assets.lib.gates.registry import GateInputs, evaluate_gates
from governance_assets.lib.gates.regression import RegressionGate
from governance_assets.lib.helm import tidy

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import ingest_vs_summarize as ivs  # noqa: E402  (the suite builder and the measured ingest child)

DEFAULT_RESULTS = BENCH_DIR / "results" / "gates_vs_ingest.json"
SUITE = ivs.SUITE
"""The ingest child names the suite's partition `ivs.SUITE`."""
BASELINE_SUITE = "baseline"
FLIP_SHARE = 0.05
"""Share of the candidate's 0/1 values of the regression gates' metrics flipped in the baseline."""
FLIP_SEED = 0
MAX_GATES_INGEST_RATIO = 0.10
EXPANDED_FILES = ("scenario_state.json", "per_instance_stats.json")

Entry = dict[str, Any]
CopyKey = tuple[int, str]
"""(train_trial_index, original instance id)."""


def instance_copies(ids: Sequence[str], instances: int) -> dict[str, list[str]]:
    """Original id -> the ids of its copies (itself first, then `<id>-r1`, …), `instances` ids in
    all: with fewer `instances` than `ids`, the last originals get none."""
    copies: dict[str, list[str]] = {original: [] for original in ids}
    for k in range(instances):
        original, copy = ids[k % len(ids)], k // len(ids)
        copies[original].append(original if copy == 0 else f"{original}-r{copy}")
    return copies


def repeat_entries(
    entries: Sequence[Entry],
    copies: Mapping[CopyKey, list[str]],
    key: Callable[[Entry], CopyKey],
    renamed: Callable[[Entry, str], Entry],
) -> list[Entry]:
    """The entries of each copy round in their original order, round after round; an entry whose
    instance has no copies (e.g. one that is not in `request_states`) is kept once as it was."""
    rounds = max((len(ids) for ids in copies.values()), default=1)
    repeated = []
    for round_index in range(rounds):
        for entry in entries:
            ids = copies.get(key(entry), [key(entry)[1]])
            if round_index < len(ids):
                repeated.append(renamed(entry, ids[round_index]))
    return repeated


def expand_instances(run_dir: Path, instances: int) -> int:
    """Replicate the instances of `run_dir` in its `scenario_state.json` (`request_states`) and
    `per_instance_stats.json` until each train trial has `instances` distinct eval instances;
    return that count. The files are rewritten in place, so the replicas hard-linked to them
    see the new content. `stats.json` is left as it is."""
    state = json.loads((run_dir / "scenario_state.json").read_bytes())
    per_instance = json.loads((run_dir / "per_instance_stats.json").read_bytes())
    ids_by_trial: dict[int, list[str]] = {}
    for request_state in state["request_states"]:
        ids = ids_by_trial.setdefault(request_state.get("train_trial_index", 0), [])
        if request_state["instance"]["id"] not in ids:
            ids.append(request_state["instance"]["id"])
    by_trial = {trial: instance_copies(ids, instances) for trial, ids in ids_by_trial.items()}
    copies = {(trial, original): ids for trial, by_id in by_trial.items() for original, ids in by_id.items()}
    state["request_states"] = repeat_entries(
        state["request_states"],
        copies,
        lambda rs: (rs.get("train_trial_index", 0), rs["instance"]["id"]),
        lambda rs, new_id: {**rs, "instance": {**rs["instance"], "id": new_id}},
    )
    per_instance = repeat_entries(
        per_instance,
        copies,
        lambda entry: (entry.get("train_trial_index", 0), entry["instance_id"]),
        lambda entry, new_id: {**entry, "instance_id": new_id},
    )
    evaluated = max((sum(map(len, by_id.values())) for by_id in by_trial.values()), default=0)
    state["adapter_spec"]["max_eval_instances"] = evaluated
    for name, value in zip(EXPANDED_FILES, (state, per_instance), strict=True):
        with (run_dir / name).open("w", encoding="utf-8") as out:  # in place: keeps the hard links
            json.dump(value, out, indent=2)
    return evaluated


def build_expanded_suite(shared: Path, suite_dir: Path, runs: int, instances: int) -> list[str]:
    """`ivs.build_suite`, then each source run's instances replicated (once, in replica 0's files,
    which the other replicas hard-link) and each run spec's `max_eval_instances` set to match."""
    names = ivs.build_suite(shared, suite_dir, runs)
    first = ivs.replica_name("", 0)
    evaluated = {
        name.removesuffix(first): expand_instances(suite_dir / name, instances)
        for name in names
        if name.endswith(first)
    }
    for name in names:
        path = suite_dir / name / "run_spec.json"
        spec = json.loads(path.read_bytes())
        spec["adapter_spec"]["max_eval_instances"] = evaluated[name.rsplit(",replica=", 1)[0]]
        path.write_text(json.dumps(spec, indent=2), "utf-8")
    return names


def regression_metrics(policy: Policy, metrics: pd.Series) -> list[str]:
    """The metric names in `metrics` that some regression gate of `policy` judges."""
    patterns = [p for gate in policy.gates if isinstance(gate, RegressionGate) for p in gate.metrics]
    return sorted(m for m in metrics.unique() if any(fnmatchcase(m, p) for p in patterns))


def flipped_baseline(instance_stats: pd.DataFrame, metrics: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """The candidate's instance stats as suite `BASELINE_SUITE`, with `FLIP_SHARE` of the 0/1
    values of `metrics` flipped (seeded); also how many were flipped."""
    baseline = instance_stats.copy()
    binary = (baseline["metric"].isin(metrics) & baseline["value"].isin([0.0, 1.0])).to_numpy()
    flip = binary & (np.random.default_rng(FLIP_SEED).random(len(baseline)) < FLIP_SHARE)
    baseline.loc[flip, "value"] = 1.0 - baseline.loc[flip, "value"]
    baseline["suite"] = BASELINE_SUITE
    return baseline, int(flip.sum())


def read_tables(warehouse: Warehouse) -> tuple[SuiteTables, list[tuple[str, pd.DataFrame]], dict[str, float]]:
    """The suite's tables and the baseline's instance stats, read as the gate checks read them
    (`load_suite_tables`, `read_frame`), with the seconds each read took."""
    start = time.perf_counter()
    tables = load_suite_tables(warehouse, SUITE)
    if tables is None:
        raise SystemExit(f"{warehouse.path(tidy.RUNS_KEY, SUITE)} is missing: the ingest did not run")
    seconds = {f"suite {SUITE}": time.perf_counter() - start}
    start = time.perf_counter()
    baselines = [(BASELINE_SUITE, read_frame(warehouse, tidy.INSTANCE_STATS, BASELINE_SUITE))]
    seconds[f"helm/instance_stats {BASELINE_SUITE}"] = time.perf_counter() - start
    return tables, baselines, seconds


def timed_gates(
    gates: Sequence[Gate], tables: SuiteTables, baselines: Sequence[tuple[str, pd.DataFrame]], policy: Policy
) -> tuple[list[GateResult], float]:
    """`evaluate_gates` on `gates` and the seconds it took."""
    start = time.perf_counter()
    results = evaluate_gates(gates, GateInputs(tables, baselines, policy.regression))
    return results[1:], time.perf_counter() - start  # without the ingestion gate every suite gets


def import_great_expectations() -> float:
    """Import Great Expectations (and the gates' module that uses it); the seconds it took."""
    start = time.perf_counter()
    importlib.import_module("great_expectations")
    importlib.import_module("governance_assets.lib.gates.data_quality")
    return time.perf_counter() - start


def profile_gates(
    gates: Sequence[Gate], tables: SuiteTables, baselines: Sequence[tuple[str, pd.DataFrame]], policy: Policy
) -> None:
    """Print where an extra, unmeasured evaluation of every gate spends its time."""
    profiler = cProfile.Profile()
    profiler.runcall(evaluate_gates, gates, GateInputs(tables, baselines, policy.regression))
    print("\nprofile of one more evaluation of every gate (cumulative time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumtime").print_stats(35)


def benchmark(shared: Path, workdir: Path, runs: int, instances: int, profile: bool) -> dict[str, Any]:
    """Build the suite, ingest it cold, evaluate the default policy's gates on it; the figures."""
    if os.environ.get("GOVERNANCE_POLICY"):
        raise SystemExit("unset GOVERNANCE_POLICY: this benchmark measures the default policy")
    policy = load_policy()  # first: a policy that does not load stops the benchmark before the slow steps
    suite_dir = workdir / "benchmark_output" / "runs" / SUITE
    warehouse = Warehouse(workdir / "warehouse")

    start = time.perf_counter()
    names = build_expanded_suite(shared, suite_dir, runs, instances)
    print(f"built {len(names)} runs × {instances} instances in {time.perf_counter() - start:.1f} s", flush=True)

    cold, report = ivs.measure_ingest("cold_ingest", workdir, suite_dir, warehouse.root)
    ivs.check_counts("cold ingest", report, runs, parsed=dict.fromkeys(ivs.TABLES, runs))
    ingest_seconds = report["ingest_suite_seconds"]
    print(f"cold ingest: {ingest_seconds:.2f} s in ingest_suite ({cold.seconds:.2f} s process)", flush=True)

    candidate = pd.read_parquet(warehouse.path(tidy.INSTANCE_STATS.key, SUITE))
    flipped_metrics = regression_metrics(policy, candidate["metric"])
    baseline, flipped = flipped_baseline(candidate, flipped_metrics)
    warehouse.write(
        tidy.INSTANCE_STATS.key,
        BASELINE_SUITE,
        pa.Table.from_pandas(baseline, schema=tidy.INSTANCE_STATS_SCHEMA, preserve_index=False),
        cache=True,  # stored as an ingested suite's table is
    )
    del candidate, baseline

    ge_import_seconds = import_great_expectations()
    tables, baselines, read_seconds = read_tables(warehouse)
    results, gates_seconds = timed_gates(policy.gates, tables, baselines, policy)
    reading_seconds = sum(read_seconds.values())
    print(f"gates: {gates_seconds:.2f} s (+ {reading_seconds:.2f} s reading the tables)", flush=True)
    per_gate = []
    for gate, result in zip(policy.gates, results, strict=True):
        _, seconds = timed_gates([gate], tables, baselines, policy)
        per_gate.append({
            "gate": gate.name, "kind": gate.kind, "blocking": gate.blocking, "seconds_alone": seconds,
            "outcome": result.outcome, "actual": result.actual, "evidence_rows": len(result.rows),
        })  # fmt: skip
    if profile:
        profile_gates(policy.gates, tables, baselines, policy)

    instances_seen = tables.predictions[tables.predictions["perturbation"].isna()].groupby("run_name")["instance_id"]
    counts = instances_seen.nunique()
    with_reading = gates_seconds + reading_seconds
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": ivs.machine(),
        "versions": {
            package: metadata.version(package)
            for package in ("crfm-helm", "pandas", "pyarrow", "numpy", "scipy", "great-expectations")
        },
        "suite": SUITE,
        "runs": runs,
        "source_runs": len({name.rsplit(",replica=", 1)[0] for name in names}),
        "instances_per_run": instances,
        "eval_instances_per_run_seen": {"min": int(counts.min()), "max": int(counts.max())},
        "rows": {
            "helm/runs": len(tables.runs),
            "helm/run_stats": len(tables.run_stats),
            "helm/instance_stats": len(tables.instance_stats),
            "helm/predictions": len(tables.predictions),
            f"helm/instance_stats {BASELINE_SUITE}": len(baselines[0][1]),
        },
        "baseline": {
            "suite": BASELINE_SUITE,
            "how": f"the candidate's instance_stats with {FLIP_SHARE:.0%} of the 0/1 values of the regression "
            f"gates' metrics flipped (seed {FLIP_SEED}), stored as its own Parquet partition",
            "metrics": flipped_metrics,
            "flipped_values": flipped,
        },
        "cold_ingest": {
            "ingest_suite_seconds": ingest_seconds,
            "process_seconds": cold.seconds,
            "peak_rss_mib": cold.peak_rss_mib,
        },
        "great_expectations_import_seconds": ge_import_seconds,
        "read_tables_seconds": read_seconds,
        "gates_seconds": gates_seconds,
        "gates_with_reading_seconds": with_reading,
        "ratio_gates_only": gates_seconds / ingest_seconds,
        "ratio_gates_with_reading": with_reading / ingest_seconds,
        "target": {
            "rule": f"gates incl. reading the tables / cold ingest < {MAX_GATES_INGEST_RATIO:g}",
            "basis": "ingest_suite() seconds in a fresh interpreter; gates after importing Great Expectations",
            "met": with_reading / ingest_seconds < MAX_GATES_INGEST_RATIO,
            "met_gates_only": gates_seconds / ingest_seconds < MAX_GATES_INGEST_RATIO,
        },
        "per_gate": per_gate,
        "per_gate_note": "each gate evaluated alone after the full evaluation; regression gates are judged "
        "jointly in a full evaluation (one multiple-comparison correction across them)",
    }


def print_report(results: Mapping[str, Any]) -> None:
    """A small table of the figures, the per-gate breakdown and the verdict."""
    rows, ingest = results["rows"], results["cold_ingest"]
    lines = [
        ("suite", f"{results['runs']} runs ({results['source_runs']} real runs replicated), "
                  f"{results['instances_per_run']} instances per run"),
        ("rows", ", ".join(f"{table} {count:,}" for table, count in rows.items())),
        ("cold ingest", f"{ingest['ingest_suite_seconds']:.2f} s in ingest_suite "
                        f"({ingest['process_seconds']:.2f} s process, peak RSS {ingest['peak_rss_mib']:.0f} MiB)"),
        ("great_expectations import", f"{results['great_expectations_import_seconds']:.2f} s (one-off, not counted)"),
        ("reading the tables", f"{sum(results['read_tables_seconds'].values()):.2f} s"),
        ("gates only", f"{results['gates_seconds']:.2f} s, ratio {results['ratio_gates_only']:.3f}"),
        ("gates incl. reading", f"{results['gates_with_reading_seconds']:.2f} s, "
                                f"ratio {results['ratio_gates_with_reading']:.3f}"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in lines)
    print()
    for label, value in lines:
        print(f"{label:<{width}}  {value}")
    gates = results["per_gate"]
    width = max(len(gate["gate"]) for gate in gates)
    print(f"\n{'gate':<{width}}  {'kind':<12}  {'alone':>7}  {'outcome':<7}  actual")
    for gate in gates:
        print(
            f"{gate['gate']:<{width}}  {gate['kind']:<12}  {gate['seconds_alone']:6.2f}s  "
            f"{gate['outcome']:<7}  {gate['actual']}"
        )
    target = results["target"]
    verdict = "met" if target["met"] else "MISSED"
    print(f"\ntarget {target['rule']}: {results['ratio_gates_with_reading']:.3f}, {verdict}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the built suite (default 1000)")
    parser.add_argument("--instances", type=int, default=100, help="eval instances per run (default 100)")
    parser.add_argument(
        "--workdir", type=Path, help="an empty or new folder to work in, kept (default: a temporary folder, removed)"
    )
    parser.add_argument(
        "--shared", type=Path, default=ivs.DEFAULT_SHARED, help=f"the shared helm_runs folder ({ivs.DEFAULT_SHARED})"
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where to write the JSON results")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one more gate evaluation")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runs < 1 or args.instances < 1:
        raise SystemExit("--runs and --instances must be at least 1")
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench_gates_vs_ingest_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = benchmark(args.shared.resolve(), workdir, args.runs, args.instances, args.profile)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir)
        else:
            print(f"work folder kept: {workdir}", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print_report(results)
    print(f"results written to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
