"""The whole `evaluate_suite` job through Dagster against `helm-summarize` on a 1,000-run
historical suite, and `evaluate_suite` on the demo plan against one bare `helm-run` of the same
entries. (The ingestion's peak memory on 1,000 and 10,000 runs is `ingest_vs_summarize.py --memory`.)

Each measured step is its own process (its wall time includes interpreter start-up and imports;
peak RSS is `ru_maxrss` from `os.wait4`). The two sides of a comparison alternate, one after the
other, their order swapped at each repeat, and the load average is recorded before each process:
the machine is shared, and only figures measured under the same load compare. The job is started with Dagster's own CLI,
`dagster job execute -m governance_assets.definitions -j evaluate_suite`, on a fresh Dagster
instance, GOVERNANCE_HOME and MLflow store, so it includes everything a materialisation does:
loading the code location, the catalogue, the three tidy tables, the MLflow record of every run,
every check, the gates, lineage and the reproducibility report. Usage:

    .venv/bin/python bench/suite_vs_summarize.py [--runs 1000] [--repeats 3]

Offline. Results go to `bench/results/suite_vs_summarize.json`; the script exits 0 once the
measurements are made, whether or not the targets are met, and prints which are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import ingest_vs_summarize as ivs  # noqa: E402  (the suite builder, helm-summarize and the ingest child)

from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS  # noqa: E402
from governance_assets.defs.resources import HelmRunner  # noqa: E402
from governance_assets.lib.core.policy import load_policy  # noqa: E402
from governance_assets.lib.helm.runner import helm_environment  # noqa: E402

DEFAULT_RESULTS = BENCH_DIR / "results" / "suite_vs_summarize.json"
DEMO_SUITE = "demo"
MIN_SUMMARIZE_RATIO = 1.0
MAX_DEMO_RATIO = 4.0


def governance_env(workdir: Path, label: str, roots: Path | None) -> dict[str, str]:
    """A fresh Dagster instance with the project's `dagster.yaml` (as `cli` sets it up), GOVERNANCE_HOME
    (its own MLflow store) and output roots, offline."""
    dagster_home = workdir / label / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(ivs.PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if key not in {"GOVERNANCE_POLICY", "MLFLOW_TRACKING_URI"}}
    return env | {
        "DAGSTER_HOME": str(dagster_home),
        "GOVERNANCE_HOME": str(workdir / label / "governance"),
        "HELM_OUTPUT_ROOTS": str(roots) if roots else "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
    }


def prepare(env: Mapping[str, str], suite: str) -> None:
    """Not timed: add the suite's partition (what the discovery sensor or the schedule does) and
    create the Dagster and MLflow stores (their schema migrations are a one-off install step)."""
    code = (
        "import dagster as dg, sys\n"
        "from governance_assets.defs.resources import GovernanceState, MlflowTracking\n"
        "with dg.DagsterInstance.get() as instance:\n"
        "    instance.add_dynamic_partitions('helm_suites', [sys.argv[1]])\n"
        "MlflowTracking().recorder(GovernanceState(), 'helm-evaluations')\n"
    )
    subprocess.run([sys.executable, "-c", code, suite], env=dict(env), check=True, cwd=ivs.PROJECT_ROOT)


def materialise(workdir: Path, label: str, env: Mapping[str, str], suite: str, tags: Mapping[str, str]) -> ivs.Measured:
    """`evaluate_suite` for one suite through Dagster's CLI, timed from process start."""
    command = [
        str(Path(sys.executable).with_name("dagster")),
        "job",
        "execute",
        "-m",
        "governance_assets.definitions",
        "-j",
        "evaluate_suite",
        "--tags",
        json.dumps({"dagster/partition": suite, **tags}),
    ]
    return ivs.run_measured(command, workdir / f"{label}.log", env, ivs.PROJECT_ROOT)


def run_outcome(env: Mapping[str, str]) -> dict[str, Any]:
    """What the run did, read from its Dagster instance: status, steps, checks, materialisations."""
    code = """
import json, dagster as dg
with dg.DagsterInstance.get() as instance:
    [run] = instance.get_runs(limit=1)
    events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
    steps_failed = sorted({e.step_key for e in events if e.is_step_failure})
    checks = [e.event_specific_data for e in events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION]
    print(json.dumps({
        "status": run.status.value,
        "steps_succeeded": len({e.step_key for e in events if e.is_step_success}),
        "steps_failed": steps_failed,
        "assets_materialised": sorted({e.asset_key.to_user_string() for e in events if e.is_step_materialization}),
        "checks": len(checks),
        "checks_failed": sorted(f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed),
    }))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(env), check=True, capture_output=True, text=True, cwd=ivs.PROJECT_ROOT
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def mlflow_runs(env: Mapping[str, str], experiment: str) -> int:
    """How many finished MLflow runs the experiment holds."""
    code = """
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow/mlflow.db")
experiment = client.get_experiment_by_name(sys.argv[2])
runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=50000)
print(len(runs))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, env["GOVERNANCE_HOME"], experiment],
        env=dict(env),
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def timings(measured: Sequence[tuple[ivs.Measured, float]]) -> dict[str, Any]:
    """The median wall time of repeated processes, every one of them with the load average before it,
    and the largest peak RSS."""
    return {
        "seconds": statistics.median(m.seconds for m, _ in measured),
        "all_seconds": [m.seconds for m, _ in measured],
        "load_before": [load for _, load in measured],
        "peak_rss_mib": max(m.peak_rss_mib for m, _ in measured),
    }


def load_average() -> float:
    """The machine's one-minute load average."""
    return os.getloadavg()[0]


def alternating(repeats: int, first: Callable[[int], Any], second: Callable[[int], Any]) -> None:
    """`first(i)` and `second(i)` for each repeat, the first one first at even repeats, last at odd ones."""
    for repeat in range(repeats):
        for side in (first, second) if repeat % 2 == 0 else (second, first):
            side(repeat)


def whole_suite(workdir: Path, shared: Path, runs: int, repeats: int) -> dict[str, Any]:
    """helm-summarize and the whole evaluate_suite job on the same `runs`-run suite."""
    output_path = workdir / "benchmark_output"
    names = ivs.build_suite(shared, output_path / "runs" / ivs.SUITE, runs)
    specs = [json.loads((output_path / "runs" / ivs.SUITE / name / "run_spec.json").read_bytes()) for name in names]
    schema = ivs.merged_schema(workdir / "schema_bench.yaml", {g for spec in specs for g in spec["groups"]})
    local_path = ivs.local_model_metadata(workdir / "prod_env", {spec["adapter_spec"]["model"] for spec in specs})
    summarizes: list[tuple[ivs.Measured, float]] = []
    jobs: list[tuple[ivs.Measured, float]] = []
    outcomes = []

    def summarize(repeat: int) -> None:
        load = load_average()
        summarized = ivs.run_summarize(workdir, output_path, schema, local_path, names, f"helm_summarize_{repeat}")
        print(f"helm-summarize {repeat + 1}: {summarized.seconds:.1f} s (load {load:.1f})", flush=True)
        summarizes.append((summarized, load))

    def evaluate(repeat: int) -> None:
        env = governance_env(workdir, f"suite_{repeat}", output_path)
        prepare(env, ivs.SUITE)
        load = load_average()
        job = materialise(workdir, f"evaluate_suite_{repeat}", env, ivs.SUITE, {})
        outcome = run_outcome(env) | {"mlflow_runs": mlflow_runs(env, load_policy().mlflow.evaluation_experiment)}
        print(f"evaluate_suite {repeat + 1}: {job.seconds:.1f} s (load {load:.1f}), {outcome['status']}", flush=True)
        if outcome["mlflow_runs"] != runs or set(outcome["steps_failed"]) - {"gates__verdicts"}:
            print(f"  not every step ran: {outcome}\n{ivs.tail(job.log)}", flush=True)
        jobs.append((job, load))
        outcomes.append(outcome)

    # helm-summarize first: its runs.json is what the job's summary check compares with
    alternating(repeats, summarize, evaluate)
    summarize_times, job_times = timings(summarizes), timings(jobs)
    return {
        "runs": runs,
        "helm_summarize": summarize_times,
        "evaluate_suite": job_times | {"outcomes": outcomes},
        "ratio": summarize_times["seconds"] / job_times["seconds"],
        "ratios_by_repeat": [s.seconds / j.seconds for (s, _), (j, _) in zip(summarizes, jobs, strict=True)],
    }


def demo_plan(workdir: Path, repeats: int) -> dict[str, Any]:
    """evaluate_suite on the demo plan (a suite the platform creates) beside one bare helm-run of
    the same entries, each with a cold HELM cache."""
    plan = load_policy().evaluation_plan
    entries = plan.run_entries_with_models()
    bares: list[tuple[ivs.Measured, float]] = []
    jobs: list[tuple[ivs.Measured, float]] = []
    outcomes = []

    def bare_helm_run(repeat: int) -> None:
        bare_dir = workdir / f"bare_{repeat}"
        command = [
            str(Path(sys.executable).with_name("helm-run")),
            "--run-entries", *entries,
            "--suite", DEMO_SUITE,
            "--max-eval-instances", str(plan.max_eval_instances),
            "--num-threads", "1",
            "--output-path", str(bare_dir / "benchmark_output"),
            "--local-path", str(bare_dir / "prod_env"),
            *(["--plugins", *HelmRunner().plugins] if HelmRunner().plugins else []),  # as the platform runs it
        ]  # fmt: skip
        bare_dir.mkdir()
        load = load_average()
        bare = ivs.run_measured(
            command, workdir / f"bare_helm_run_{repeat}.log", os.environ | helm_environment(), bare_dir
        )
        if bare.returncode != 0:
            raise SystemExit(f"bare helm-run failed:\n{ivs.tail(bare.log)}")
        print(f"demo {repeat + 1}: bare helm-run {bare.seconds:.1f} s (load {load:.1f})", flush=True)
        bares.append((bare, load))

    def evaluate(repeat: int) -> None:
        env = governance_env(workdir, f"demo_{repeat}", None)
        prepare(env, DEMO_SUITE)
        load = load_average()
        job = materialise(workdir, f"demo_evaluate_suite_{repeat}", env, DEMO_SUITE, PLANNED_SUITE_TAGS)
        outcome = run_outcome(env)
        print(f"demo {repeat + 1}: evaluate_suite {job.seconds:.1f} s (load {load:.1f}), {outcome['status']}")
        jobs.append((job, load))
        outcomes.append(outcome)

    alternating(repeats, bare_helm_run, evaluate)
    bare_times, job_times = timings(bares), timings(jobs)
    return {
        "entries": entries,
        "max_eval_instances": plan.max_eval_instances,
        "bare_helm_run": bare_times,
        "evaluate_suite": job_times | {"outcomes": outcomes},
        "ratio": job_times["seconds"] / bare_times["seconds"],
        "ratios_by_repeat": [j.seconds / b.seconds for (b, _), (j, _) in zip(bares, jobs, strict=True)],
    }


def targets(results: Mapping[str, Any]) -> list[ivs.Target]:
    """The two targets and whether they were met."""
    found = []
    if "whole_suite" in results:
        ratio = results["whole_suite"]["ratio"]
        complete = all(  # every run recorded; at most a blocking gate failed (on historical data)
            o["mlflow_runs"] == results["whole_suite"]["runs"] and set(o["steps_failed"]) <= {"gates__verdicts"}
            for o in results["whole_suite"]["evaluate_suite"]["outcomes"]
        )
        found.append(ivs.Target(
            f"helm-summarize / whole evaluate_suite ({results['whole_suite']['runs']} runs)", f">= {MIN_SUMMARIZE_RATIO:g}",
            ratio, "medians of process wall times; every step ran" if complete else "A STEP FAILED OR A RUN WAS NOT RECORDED",
            ratio >= MIN_SUMMARIZE_RATIO and complete,
        ))  # fmt: skip
    if "demo_plan" in results:
        ratio = results["demo_plan"]["ratio"]
        found.append(ivs.Target(
            "demo evaluate_suite / bare helm-run", f"<= {MAX_DEMO_RATIO:g}", ratio,
            "medians of process wall times, cold HELM caches", ratio <= MAX_DEMO_RATIO,
        ))  # fmt: skip
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the historical suite (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each side (default 3)")
    parser.add_argument("--parts", default="whole_suite,demo_plan", help="which parts to run")
    parser.add_argument("--shared", type=Path, default=ivs.DEFAULT_SHARED, help="the shared helm_runs folder")
    parser.add_argument("--workdir", type=Path, help="an empty or new folder, kept (default: temporary, removed)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bench_suite_vs_summarize_")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise SystemExit(f"--workdir {workdir} is not empty")
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": ivs.machine(),
        "versions": {package: metadata.version(package) for package in ("crfm-helm", "dagster", "mlflow")},
        "repeats": args.repeats,
    }
    try:
        if "whole_suite" in parts:
            results["whole_suite"] = whole_suite(workdir, args.shared.resolve(), args.runs, args.repeats)
        if "demo_plan" in parts:
            results["demo_plan"] = demo_plan(workdir, args.repeats)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir)
    results["targets"] = [asdict(target) for target in targets(results)]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print()
    ivs.print_targets(results["targets"], decimals=2)
    print(f"results written to {args.results}")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f} s in all)")
    sys.exit(code)
