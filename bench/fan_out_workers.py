"""Scale-out: a suite of real offline HELM runs fanned out on the team deployment's Celery
workers, with 1 and with 2 workers side by side (same plan, same machine, fresh state each round).

    .venv/bin/python bench/fan_out_workers.py               # 12 runs, 2 rounds of each (about 8 minutes)
    .venv/bin/python bench/fan_out_workers.py --entries 4 --rounds 1

Each round starts its own deployment (PostgreSQL, Redis, MLflow server, N workers) in a fresh
GOVERNANCE_HOME, times `helm_fan_out` for one new suite from launch to the last step, and stops
the deployment; the same entries then run as bare `helm-run` processes 1 and 2 at a time (the machine's
ceiling). The ratio is the 1-worker time over the 2-worker time (target 1.8 on 2 cores).
The CPU is shared with whatever else runs on the machine: the results file records the load.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest_vs_summarize as ivs

from governance_assets.deploy import jobs
from governance_assets.lib.core.policy import EvaluationPlan
from governance_assets.lib.deployment import services
from governance_assets.lib.helm.runner import HelmSettings, helm_environment, helm_run_command

ENTRIES = [
    "simple_short_answer_qa",
    "simple_mcqa",
    "simple_classification",
    "synthetic_reasoning:mode=pattern_match",
    "synthetic_reasoning:mode=variable_substitution",
    "synthetic_reasoning:mode=induction",
    "dyck_language:num_parenthesis_pairs=2",
    "dyck_language:num_parenthesis_pairs=3",
    "synthetic_reasoning_natural:difficulty=easy",
    "synthetic_reasoning_natural:difficulty=hard",
    "dyck_language:num_parenthesis_pairs=1",
    "dyck_language:num_parenthesis_pairs=4",
]
"""Offline run entries of HELM 0.5.16 that need no download (its debugging spec `simple1` left out), an even
number so that two workers can share them equally: with an odd count one worker runs one more."""
TARGET = 1.8
RESULTS = Path(__file__).resolve().parent / "results" / "fan_out_workers.json"


def _policy(folder: Path, entries: list[str], instances: int) -> Path:
    document = {
        "evaluation_plan": {"run_entries": entries, "models": ["simple/model1"], "max_eval_instances": instances},
        "scale_out": {"provider_concurrency": {"simple": len(entries)}},  # simple/model1 has no rate limit
    }
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(document), "utf-8")
    return path


def one_round(workers: int, entries: list[str], instances: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"bench-fan-out-{workers}-"))
    home.chmod(0o755)
    os.environ["GOVERNANCE_POLICY"] = str(_policy(home, entries, instances))
    ports = services.ServicePorts(services.free_port(), services.free_port(), services.free_port())
    deployment = services.start(services.Deployment(home, ports, workers), log=lambda _: None)
    saved = dict(os.environ)
    try:
        os.environ.update(services.team_environment(home))
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("helm_suites", ["bench"])
            load = os.getloadavg()[0]
            started = time.monotonic()
            result = jobs.run_fan_out(instance, "bench")
            seconds = time.monotonic() - started
        if not result.success:
            raise RuntimeError(f"helm_fan_out failed with {workers} worker(s); logs in {deployment.logs}")
        runs = list((home / "helm" / "benchmark_output" / "runs" / "bench").glob("*/stats.json"))
        return {"workers": workers, "seconds": round(seconds, 2), "runs": len(runs), "load_before": round(load, 2)}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        services.stop(home, log=lambda _: None)


def bare_round(parallel: int, entries: list[str], instances: int) -> dict[str, Any]:
    """The machine's own ceiling: the same entries as bare `helm-run` processes (one per entry, as the
    fan-out's steps run them), `parallel` at a time, with no Dagster, Celery or database around them."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-bare-{parallel}-"))
    settings = HelmSettings(
        output_path=folder / "benchmark_output", local_path=folder / "prod_env", max_eval_instances=instances
    )
    helm_run = str(Path(sys.executable).with_name("helm-run"))

    def run(entry: str) -> None:
        (with_model,) = EvaluationPlan(run_entries=[entry], models=["simple/model1"]).run_entries_with_models()
        command = [helm_run, *helm_run_command([with_model], "bench", settings)[1:]]
        subprocess.run(command, env=os.environ | helm_environment(), cwd=folder, capture_output=True, check=True)

    try:
        load = os.getloadavg()[0]
        started = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(run, entries))
        seconds = time.monotonic() - started
        runs = len(list((settings.output_path / "runs" / "bench").glob("*/stats.json")))
        return {"parallel": parallel, "seconds": round(seconds, 2), "runs": runs, "load_before": round(load, 2)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _median_ratio(rounds: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    one, two = (statistics.median(r["seconds"] for r in rounds if r[key] == n) for n in (1, 2))
    return one, two, one / two


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=len(ENTRIES))
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    entries = ENTRIES[: args.entries]
    rounds, bare = [], []
    for index in range(args.rounds):
        for workers in (1, 2) if index % 2 == 0 else (2, 1):  # alternate the order against drifting load
            for measured in (one_round(workers, entries, args.instances), bare_round(workers, entries, args.instances)):
                print(json.dumps(measured), flush=True)
                (rounds if "workers" in measured else bare).append(measured)
    one, two, ratio = _median_ratio(rounds, "workers")
    bare_one, bare_two, ceiling = _median_ratio(bare, "parallel")
    summary = {
        "what": f"helm_fan_out of {len(entries)} HELM runs (simple/model1, {args.instances} instances) on 1 vs 2 workers",
        "median_seconds": {"1_worker": one, "2_workers": two},
        "speedup_2_over_1": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET,
        "machine_ceiling": {
            "what": "the same entries as bare helm-run processes, 1 vs 2 at a time (no Dagster, Celery or database)",
            "median_seconds": {"1_at_a_time": bare_one, "2_at_a_time": bare_two},
            "speedup_2_over_1": round(ceiling, 3),
        },
        "rounds": rounds,
        "bare_rounds": bare,
        "machine": ivs.machine(),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=2), "utf-8")
    print(f"1 worker {one:.1f} s, 2 workers {two:.1f} s: {ratio:.2f}x (target {TARGET}x)")
    print(
        f"bare helm-run, 1 at a time {bare_one:.1f} s, 2 at a time {bare_two:.1f} s: {ceiling:.2f}x (the machine's ceiling)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
