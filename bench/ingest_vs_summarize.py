"""Cold ingestion of a 1,000-run HELM suite side by side with `helm-summarize` on the same suite,
then re-ingests after one run changed (a stats.json edited; a whole run re-run), several rounds each.

The suite is built by replicating the real run folders under `../shared/helm_runs/` (only ever
read). Each measured step runs in its own subprocess, so its wall time and peak RSS
(`ru_maxrss` from `os.wait4`; an ingest reports its own `VmHWM`; Linux) belong to that step alone. Usage:

    .venv/bin/python bench/ingest_vs_summarize.py [--runs 1000] [--repeats 3] [--rounds 9]
        [--workdir DIR] [--shared DIR]

Results go to `bench/results/ingest_vs_summarize.json`. Once the measurements are made the
script exits 0 whether or not the targets are met; it prints which are.

`--memory` measures instead the peak RSS of cold ingests of suites of each `--sizes` (default
1,000 and 10,000 runs), each in a fresh process, side by side (`bench/results/ingest_memory.json`):
memory must not grow with the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from governance_assets.lib.helm.output import perturbation_label
from governance_assets.lib.helm.runner import helm_environment

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
DEFAULT_SHARED = PROJECT_ROOT.parent / "shared" / "helm_runs"
DEFAULT_RESULTS = BENCH_DIR / "results" / "ingest_vs_summarize.json"

SUITE = "bench1000"
SOURCE_SUITES = ("crfm_safety_v3/runs/v3", "mmlu_llama3_v1/runs/v1")
SCHEMAS = ("schema_safety.yaml", "schema_mmlu.yaml")
"""Packaged HELM schemas that together cover the run groups of both source suites."""

SHARED_FILES = ("scenario.json", "scenario_state.json", "stats.json", "per_instance_stats.json")
"""Never rewritten by helm-summarize: the replicas of one source run share them (hard links)."""
COPIED_FILES = ("display_predictions.json", "display_requests.json", "instances.json")
"""Rewritten in place by helm-summarize (`open(path, "w")`), so each replica has its own copy."""
RUN_FILES = ("run_spec.json", *SHARED_FILES, *COPIED_FILES)

TABLES = ("helm/run_stats", "helm/instance_stats", "helm/predictions")
SPOT_CHECK_RUNS = 20
MIN_SPEEDUP = 10.0
MAX_PEAK_RSS_MIB = 1024.0
MAX_WARM_COLD_RATIO = 0.10
MEMORY_SIZES = (1000, 10000)
MAX_MEMORY_GROWTH = 1.10
"""The largest suite's peak ingestion RSS may be at most 10% over the smallest one's."""
DEFAULT_MEMORY_RESULTS = BENCH_DIR / "results" / "ingest_memory.json"


@dataclass(frozen=True)
class Measured:
    """One finished subprocess: its exit code, wall time, peak resident memory and log."""

    returncode: int
    seconds: float
    peak_rss_mib: float
    log: Path


@dataclass(frozen=True)
class Target:
    """One target and whether this measurement met it."""

    name: str
    rule: str
    actual: float
    basis: str
    """What `actual` was computed from."""
    met: bool


def replica_name(source: str, replica: int) -> str:
    """The run name of replica `replica` of source run `source`."""
    return f"{source},replica={replica:03d}"


def build_suite(shared: Path, suite_dir: Path, runs: int, copied: Sequence[str] = COPIED_FILES) -> list[str]:
    """Replicate the shared run folders into `suite_dir` until it holds `runs` runs; return their names.

    Each replica's `run_spec.json` is rewritten to its new name. Replica 0 copies the source
    files; later replicas hard-link the others to replica 0's (inside the work folder), except
    the `copied` ones (which helm-summarize rewrites in place)."""
    missing_suites = [relative for relative in SOURCE_SUITES if not (shared / relative).is_dir()]
    if missing_suites:
        raise SystemExit(f"{shared}: no {', '.join(missing_suites)} (see --shared)")
    sources = [
        run
        for relative in SOURCE_SUITES
        for run in sorted((shared / relative).iterdir())
        if (run / "run_spec.json").is_file()
    ]
    for source in sources:
        missing = [name for name in RUN_FILES if not (source / name).is_file()]
        if missing:
            raise SystemExit(f"{source}: missing {', '.join(missing)}")
    suite_dir.mkdir(parents=True)
    names = []
    for index in range(runs):
        source = sources[index % len(sources)]
        replica = index // len(sources)
        name = replica_name(source.name, replica)
        target = suite_dir / name
        target.mkdir()
        for file in RUN_FILES[1:]:
            if replica == 0 or file in copied:
                shutil.copyfile(source / file, target / file)
            else:
                os.link(suite_dir / replica_name(source.name, 0) / file, target / file)
        spec = json.loads((source / "run_spec.json").read_bytes())
        spec["name"] = name
        (target / "run_spec.json").write_text(json.dumps(spec, indent=2), "utf-8")
        names.append(name)
    return names


def merged_schema(path: Path, groups: set[str]) -> Path:
    """Write one HELM schema merging `SCHEMAS` (lists de-duplicated by name); check it covers `groups`."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for schema_name in SCHEMAS:
        text = resources.files("helm.benchmark.static").joinpath(schema_name).read_text("utf-8")
        for key, items in yaml.safe_load(text).items():
            if key == "adapter":  # deprecated in schema files; HELM derives it from AdapterSpec
                continue
            entries = merged.setdefault(key, [])
            known = {entry["name"] for entry in entries}
            entries.extend(item for item in items or () if item["name"] not in known)
    uncovered = groups - {group["name"] for group in merged["run_groups"]}
    if uncovered:
        raise SystemExit(f"schemas {SCHEMAS} do not define run groups {sorted(uncovered)}")
    path.write_text(yaml.safe_dump(merged, sort_keys=False), "utf-8")
    return path


def local_model_metadata(local_path: Path, models: set[str]) -> Path:
    """Write HELM's `--local-path` folder with placeholder metadata for the `huggingface/` models.

    Without it helm-summarize resolves such a model through HELM's Hugging Face deployment
    generator, which loads the tokenizer from the hub and fails offline (even with
    HF_HUB_OFFLINE=1). The placeholder is what HELM itself uses for unknown models."""
    entries = [
        {
            "name": model,
            "display_name": model,
            "description": model,
            "creator_organization_name": "Unknown",
            "access": "open",
            "release_date": None,
            "tags": ["TEXT_MODEL_TAG", "FULL_FUNCTIONALITY_TEXT_MODEL_TAG"],
        }
        for model in sorted(models)
        if model.startswith("huggingface/")
    ]
    local_path.mkdir()
    (local_path / "model_metadata.yaml").write_text(yaml.safe_dump({"models": entries}), "utf-8")
    return local_path


def run_measured(command: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path) -> Measured:
    """Run `command` to completion with its output in `log`; time it and read its own peak RSS."""
    with log.open("wb") as out:
        start = time.perf_counter()
        with subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
        ) as process:
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(process.returncode, seconds, usage.ru_maxrss / 1024, log)  # ru_maxrss is KiB


def machine() -> dict[str, Any]:
    """What the benchmarks ran on, for their results files."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def tail(log: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    return "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-lines:])


def ingest_child(suite_dir: Path, warehouse_root: Path, result_path: Path) -> None:
    """The measured ingestion, run in its own process: ingest the suite, write counts as JSON."""
    import pyarrow as pa

    from governance_assets.lib.core.warehouse import Warehouse
    from governance_assets.lib.helm.tidy import ingest_suite

    pa.table({"warm_up": [0]})  # interpreter start-up: pyarrow imports pandas on its first table
    start = time.perf_counter()
    result = ingest_suite(SUITE, suite_dir, Warehouse(warehouse_root))
    seconds = time.perf_counter() - start
    statuses = result.catalogue.table["status"].to_pylist()
    report = {
        "ingest_suite_seconds": seconds,
        "own_peak_rss_mib": own_peak_rss_mib(),
        "runs": len(statuses),
        "complete": statuses.count("complete"),
        "suite_errors": result.catalogue.suite_errors,
        "tables": {
            "/".join(key): {
                "parsed": len(build.parsed),
                "reused": len(build.reused),
                "errors": len(build.errors),
                "rows": build.rows,
                "first_errors": dict(list(build.errors.items())[:3]),
            }
            for key, build in result.builds.items()
        },
    }
    result_path.write_text(json.dumps(report, indent=2), "utf-8")


def own_peak_rss_mib() -> float:
    """This process's peak RSS since it started its program (`VmHWM`, Linux). A child's `ru_maxrss`
    includes its parent's peak before the child's `exec` (Linux keeps it across the vfork and
    exec that start it), so a small ingest child of a large benchmark process reports its own."""
    status = Path("/proc/self/status").read_text("utf-8")
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def measure_ingest(label: str, workdir: Path, suite_dir: Path, warehouse: Path) -> tuple[Measured, dict[str, Any]]:
    """Run `ingest_child` in a fresh interpreter; stop if it crashed. Its peak RSS is the one it
    reports (`own_peak_rss_mib`)."""
    result_path = workdir / f"{label}.json"
    command = [
        sys.executable,
        __file__,
        "--ingest-child",
        str(suite_dir),
        str(warehouse),
        str(result_path),
    ]
    measured = run_measured(command, workdir / f"{label}.log", os.environ, PROJECT_ROOT)
    if measured.returncode != 0:
        raise SystemExit(f"{label} failed (exit {measured.returncode}):\n{tail(measured.log)}")
    report = json.loads(result_path.read_text("utf-8"))
    return replace(measured, peak_rss_mib=report["own_peak_rss_mib"]), report


def check_counts(label: str, report: Mapping[str, Any], runs: int, parsed: Mapping[str, int]) -> None:
    """Every run complete, and each table parsed `parsed[table]` runs and reused the rest without errors."""
    problems = [] if report["complete"] == runs else [f"{report['complete']} of {runs} runs complete"]
    problems += [f"suite error: {error}" for error in report["suite_errors"]]
    for table in TABLES:
        counts = report["tables"][table]
        expected = {"parsed": parsed[table], "reused": runs - parsed[table], "errors": 0}
        actual = {key: counts[key] for key in expected}
        if actual != expected:
            problems.append(f"{table}: {actual}, expected {expected}; {counts['first_errors']}")
    if problems:
        raise SystemExit(f"{label}: " + "; ".join(problems))


def summarize_env() -> dict[str, str]:
    """The environment that keeps helm-summarize offline (with the project's NLTK data)."""
    env = {**os.environ, **helm_environment()}
    punkt = Path(env["NLTK_DATA"]) / "tokenizers" / "punkt_tab" / "english"
    if not punkt.is_dir():
        raise SystemExit(f"{punkt} is missing: HELM would try to download punkt_tab")
    return env


def run_summarize(
    workdir: Path, output_path: Path, schema: Path, local_path: Path, names: Sequence[str], label: str
) -> Measured:
    """Run `helm-summarize` on the suite; stop unless it summarised every run."""
    command = [
        str(Path(sys.executable).with_name("helm-summarize")),
        "--suite",
        SUITE,
        "-o",
        str(output_path),
        "-n",
        "1",  # the default of 8 threads crashes in mako on Python 3.11
        "--schema-path",
        str(schema),
        "--local-path",
        str(local_path),
    ]
    measured = run_measured(command, workdir / f"{label}.log", summarize_env(), workdir)
    if measured.returncode != 0:
        raise SystemExit(f"helm-summarize failed (exit {measured.returncode}):\n{tail(measured.log)}")
    suite_dir = output_path / "runs" / SUITE
    missing = [name for name in ("runs.json", "summary.json", "groups") if not (suite_dir / name).exists()]
    if missing:
        raise SystemExit(f"helm-summarize exited 0 but did not write {missing} in {suite_dir}")
    runs_json = json.loads((suite_dir / "runs.json").read_bytes())
    summarised = {run["run_spec"]["name"] for run in runs_json}
    if summarised != set(names):
        raise SystemExit(f"helm-summarize summarised {len(summarised)} runs, expected {len(names)}")
    return measured


StatKey = tuple[str, str | None, str | None, str | None]


def compare_means(runs_json: Path, run_stats: Path, sample: Sequence[str]) -> dict[str, Any]:
    """Compare HELM's per-run means in `runs.json` with ours in `run_stats` for the `sample` runs."""
    theirs: dict[str, dict[StatKey, float | None]] = {name: {} for name in sample}
    for run in json.loads(runs_json.read_bytes()):
        if run["run_spec"]["name"] in theirs:
            theirs[run["run_spec"]["name"]] = {
                (
                    s["name"]["name"],
                    s["name"].get("split"),
                    s["name"].get("sub_split"),
                    perturbation_label(s["name"].get("perturbation")),
                ): s.get("mean")
                for s in run["stats"]
            }
    ours: dict[str, dict[StatKey, float | None]] = {name: {} for name in sample}
    for row in pq.read_table(run_stats, filters=[("run_name", "in", list(sample))]).to_pylist():
        key = (row["metric"], row["split"], row["sub_split"], row["perturbation"])
        ours[row["run_name"]][key] = row["mean"]
    compared, mismatches = 0, []
    for name in sample:
        for key in theirs[name].keys() | ours[name].keys():
            compared += 1
            helm, mine = theirs[name].get(key, "missing"), ours[name].get(key, "missing")
            if helm != mine:  # both come from the same JSON text: exact equality is expected
                mismatches.append(f"{name} {key}: runs.json {helm}, ours {mine}")
    return {
        "runs": len(sample),
        "values": compared,
        "mismatches": len(mismatches),
        "examples": mismatches[:5],
    }


def change_one_run(suite_dir: Path, name: str) -> tuple[str, float]:
    """Shift the first plain stat's mean in `name`'s stats.json, written as a new file so the
    replicas hard-linked to it keep theirs; return the metric and its new mean."""
    path = suite_dir / name / "stats.json"
    stats = json.loads(path.read_bytes())
    stat = next(s for s in stats if "mean" in s and "perturbation" not in s["name"])
    stat["mean"] += 0.125
    new = path.with_suffix(".new")
    new.write_text(json.dumps(stats, indent=2), "utf-8")
    new.replace(path)
    return stat["name"]["name"], stat["mean"]


def rewrite_run(suite_dir: Path, name: str) -> None:
    """What a HELM re-run of `name` does to its folder: every one of its files is written anew."""
    for path in sorted((suite_dir / name).iterdir()):
        data = path.read_bytes()
        path.unlink()  # break hard links shared with other replicas
        path.write_bytes(data)


def evaluate(results: Mapping[str, Any]) -> list[Target]:
    """The targets and whether they were met."""
    speedup = results["speedup"]
    rss = results["cold_ingest"]["peak_rss_mib"]
    warm_cold = results["warm_cold_ratio"]
    rerun_cold = results["rerun_cold_ratio"]
    basis = "medians of ingest_suite() times (interpreter start-up excluded)"
    return [
        Target(
            "speed-up (summarize / cold ingest)",
            f">= {MIN_SPEEDUP:g}",
            speedup,
            "medians of process wall times",
            speedup >= MIN_SPEEDUP,
        ),
        Target(
            "peak cold-ingest RSS (MiB)",
            f"< {MAX_PEAK_RSS_MIB:g}",
            rss,
            "largest VmHWM of the cold ingest processes (each its own)",
            rss < MAX_PEAK_RSS_MIB,
        ),
        Target(
            "re-run one run / cold ingest",
            f"<= {MAX_WARM_COLD_RATIO:g}",
            rerun_cold,
            f"{basis}; all files of one run rewritten",
            rerun_cold <= MAX_WARM_COLD_RATIO,
        ),
        Target(
            "1 stats.json changed / cold ingest",
            f"<= {MAX_WARM_COLD_RATIO:g}",
            warm_cold,
            basis,
            warm_cold <= MAX_WARM_COLD_RATIO,
        ),
    ]


def summary(measured: Sequence[tuple[Measured, Mapping[str, Any]]]) -> dict[str, Any]:
    """Median process and ingest_suite() seconds of repeated measurements, every value, largest peak RSS."""
    inside = [report["ingest_suite_seconds"] for _, report in measured]
    return {
        "seconds": statistics.median(m.seconds for m, _ in measured),
        "ingest_suite_seconds": statistics.median(inside),
        "all_ingest_suite_seconds": inside,
        "peak_rss_mib": max(m.peak_rss_mib for m, _ in measured),
    }


def benchmark(shared: Path, workdir: Path, runs: int, repeats: int, rounds: int) -> dict[str, Any]:
    """Build the suite, measure each step, check the results agree; return the figures."""
    output_path = workdir / "benchmark_output"
    suite_dir = output_path / "runs" / SUITE
    warehouse = workdir / "warehouse"
    run_stats = warehouse / "helm" / "run_stats" / f"{SUITE}.parquet"
    if runs // 3 + rounds > runs // 2:
        raise SystemExit(f"--rounds {rounds} needs at least {6 * rounds} runs (the rounds change different runs)")

    start = time.perf_counter()
    names = build_suite(shared, suite_dir, runs)
    specs = [json.loads((suite_dir / name / "run_spec.json").read_bytes()) for name in names]
    schema = merged_schema(workdir / "schema_bench.yaml", {g for spec in specs for g in spec["groups"]})
    local_path = local_model_metadata(workdir / "prod_env", {spec["adapter_spec"]["model"] for spec in specs})
    print(f"built {len(names)} runs in {suite_dir} ({time.perf_counter() - start:.1f} s)", flush=True)

    # helm-summarize first, so that every ingest sees the suite as HELM leaves it (with runs.json).
    summarizes = []
    for repeat in range(repeats):
        summarize = run_summarize(workdir, output_path, schema, local_path, names, f"helm_summarize_{repeat}")
        print(f"helm-summarize {repeat + 1}: {summarize.seconds:.1f} s", flush=True)
        summarizes.append(summarize)

    colds = []
    for repeat in range(repeats):  # each into an empty warehouse; the first one's is kept
        target = warehouse if repeat == 0 else workdir / f"warehouse_cold_{repeat}"
        cold, cold_report = measure_ingest(f"cold_ingest_{repeat}", workdir, suite_dir, target)
        check_counts("cold ingest", cold_report, runs, parsed=dict.fromkeys(TABLES, runs))
        print(f"cold ingest {repeat + 1}: {cold_report['ingest_suite_seconds']:.2f} s", flush=True)
        colds.append((cold, cold_report))
        if repeat:
            shutil.rmtree(target)
    agreement = compare_means(suite_dir / "runs.json", run_stats, names[:: max(1, runs // SPOT_CHECK_RUNS)])

    warms, reruns = [], []
    for round_number in range(rounds):
        changed = names[len(names) // 2 + round_number]
        metric, new_mean = change_one_run(suite_dir, changed)
        warm, warm_report = measure_ingest(f"warm_ingest_{round_number}", workdir, suite_dir, warehouse)
        # Only stats.json changed: only helm/run_stats re-reads the run.
        check_counts("warm ingest", warm_report, runs, parsed={table: int(table == TABLES[0]) for table in TABLES})
        stored = pq.read_table(run_stats, filters=[("run_name", "==", changed), ("metric", "==", metric)])
        if new_mean not in stored["mean"].to_pylist():
            raise SystemExit(f"warm ingest did not store the new mean {new_mean} of {metric} in {changed}")
        warms.append((warm, warm_report))

        rerun = names[len(names) // 3 + round_number]
        rewrite_run(suite_dir, rerun)
        rewritten, rewritten_report = measure_ingest(f"rerun_ingest_{round_number}", workdir, suite_dir, warehouse)
        check_counts("re-run ingest", rewritten_report, runs, parsed=dict.fromkeys(TABLES, 1))
        reruns.append((rewritten, rewritten_report))
        print(
            f"round {round_number + 1}: one stats.json changed {warm_report['ingest_suite_seconds']:.3f} s, "
            f"one run re-run {rewritten_report['ingest_suite_seconds']:.3f} s",
            flush=True,
        )

    cold_summary, warm_summary, rerun_summary = summary(colds), summary(warms), summary(reruns)
    cold_seconds = cold_summary["ingest_suite_seconds"]
    first_report = colds[0][1]
    cold_summary["rows"] = {table: first_report["tables"][table]["rows"] for table in TABLES}
    warm_summary["changed_runs"] = [names[len(names) // 2 + r] for r in range(rounds)]
    rerun_summary["changed_runs"] = [names[len(names) // 3 + r] for r in range(rounds)]
    results: dict[str, Any] = {
        **results_header(),
        "runs": runs,
        "source_runs": len({spec["name"].rsplit(",replica=", 1)[0] for spec in specs}),
        "repeats": repeats,
        "rounds": rounds,
        "helm_summarize": {
            "seconds": statistics.median(m.seconds for m in summarizes),
            "all_seconds": [m.seconds for m in summarizes],
            "peak_rss_mib": max(m.peak_rss_mib for m in summarizes),
        },
        "cold_ingest": cold_summary,
        "warm_ingest": warm_summary,
        "rerun_ingest": rerun_summary,
        "speedup": statistics.median(m.seconds for m in summarizes) / cold_summary["seconds"],
        "warm_cold_ratio": warm_summary["ingest_suite_seconds"] / cold_seconds,
        "warm_cold_ratios": [seconds / cold_seconds for seconds in warm_summary["all_ingest_suite_seconds"]],
        "warm_cold_ratio_process": warm_summary["seconds"] / cold_summary["seconds"],
        "rerun_cold_ratio": rerun_summary["ingest_suite_seconds"] / cold_seconds,
        "rerun_cold_ratios": [seconds / cold_seconds for seconds in rerun_summary["all_ingest_suite_seconds"]],
        "agreement_with_runs_json": agreement,
    }
    results["targets"] = [asdict(target) for target in evaluate(results)]
    return results


def results_header() -> dict[str, Any]:
    """What every results file of this script starts with: when, where (and how busy the machine was
    as the measurements ended), which versions, which suite."""
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {package: metadata.version(package) for package in ("crfm-helm", "pyarrow", "orjson")},
        "load_average_1_5_15_min": [round(load, 2) for load in os.getloadavg()],
        "suite": SUITE,
    }


def memory_benchmark(shared: Path, workdir: Path, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Cold ingests of a suite of each size in `sizes`, `repeats` times each in a fresh process
    (sizes alternating); return the peak RSS of each and the largest over the smallest."""
    suites = {}
    for size in sizes:
        start = time.perf_counter()
        suite_dir = workdir / f"suite_{size}" / "runs" / SUITE
        build_suite(shared, suite_dir, size, copied=())  # never summarised: every file hard-linked
        suites[size] = suite_dir
        print(f"built {size} runs in {suite_dir} ({time.perf_counter() - start:.1f} s)", flush=True)
    measured: dict[int, list[tuple[Measured, dict[str, Any]]]] = {size: [] for size in sizes}
    for repeat in range(repeats):
        for size in sizes if repeat % 2 == 0 else list(reversed(sizes)):
            warehouse = workdir / f"warehouse_{size}_{repeat}"
            cold, report = measure_ingest(f"memory_{size}_{repeat}", workdir, suites[size], warehouse)
            check_counts(f"cold ingest of {size} runs", report, size, parsed=dict.fromkeys(TABLES, size))
            print(
                f"{size} runs, ingest {repeat + 1}: peak RSS {cold.peak_rss_mib:.0f} MiB, "
                f"ingest_suite {report['ingest_suite_seconds']:.1f} s",
                flush=True,
            )
            measured[size].append((cold, report))
            shutil.rmtree(warehouse)
    by_size = {str(size): summary(measured[size]) | {"all_peak_rss_mib": [m.peak_rss_mib for m, _ in measured[size]]}
               for size in sizes}  # fmt: skip
    for size in sizes:
        by_size[str(size)]["rows"] = {table: measured[size][0][1]["tables"][table]["rows"] for table in TABLES}
    smallest, largest = by_size[str(min(sizes))], by_size[str(max(sizes))]
    growth = largest["peak_rss_mib"] / smallest["peak_rss_mib"]
    results: dict[str, Any] = {
        **results_header(),
        "repeats": repeats,
        "sizes": by_size,
        "peak_rss_growth": growth,
    }
    results["targets"] = [
        asdict(
            Target(
                f"peak RSS {max(sizes):,} runs / {min(sizes):,} runs",
                f"<= {MAX_MEMORY_GROWTH:g}",
                growth,
                "largest VmHWM of each size's cold ingest processes (each its own)",
                growth <= MAX_MEMORY_GROWTH,
            )
        )
    ]
    return results


def print_memory_report(results: Mapping[str, Any]) -> None:
    """Each size's peak RSS and ingestion time side by side, then the verdict."""
    print()
    for size, figures in results["sizes"].items():
        print(
            f"{int(size):>6,} runs: peak RSS {figures['peak_rss_mib']:6.0f} MiB "
            f"(all {', '.join(f'{v:.0f}' for v in figures['all_peak_rss_mib'])}), "
            f"ingest_suite {figures['ingest_suite_seconds']:.1f} s, rows {figures['rows']}"
        )
    print()
    print_targets(results["targets"], decimals=3)
    print()


def print_targets(targets: Sequence[Mapping[str, Any]], decimals: int) -> None:
    """One line per target: its figure, rule and verdict (the benchmarks' closing table)."""
    width = max(len(target["name"]) for target in targets)
    for target in targets:
        verdict = "met   " if target["met"] else "MISSED"
        figure = f"{target['name']:<{width}}  {target['actual']:8.{decimals}f}  target {target['rule']:<7}"
        print(f"{figure}  {verdict}  ({target['basis']})")


def print_report(results: Mapping[str, Any]) -> None:
    """A small table of the figures and the verdict on each target."""
    summarize = results["helm_summarize"]
    cold, warm = results["cold_ingest"], results["warm_ingest"]
    agreement = results["agreement_with_runs_json"]
    rerun = results["rerun_ingest"]

    def spread(ratios: Sequence[float]) -> str:
        return f"{min(ratios):.3f}–{max(ratios):.3f} of cold"

    rows = [
        ("runs", f"{results['runs']} ({results['source_runs']} real runs replicated)"),
        (
            f"helm-summarize -n 1 (median of {results['repeats']})",
            f"{summarize['seconds']:.2f} s, peak RSS {summarize['peak_rss_mib']:.0f} MiB",
        ),
        (
            f"cold ingest (median of {results['repeats']})",
            f"{cold['seconds']:.2f} s (ingest_suite {cold['ingest_suite_seconds']:.2f} s), "
            f"peak RSS {cold['peak_rss_mib']:.0f} MiB",
        ),
        (
            f"1 run re-run (median of {results['rounds']})",
            f"ingest_suite {rerun['ingest_suite_seconds']:.3f} s, rounds {spread(results['rerun_cold_ratios'])}",
        ),
        (
            f"1 stats.json changed (median of {results['rounds']})",
            f"ingest_suite {warm['ingest_suite_seconds']:.3f} s, rounds {spread(results['warm_cold_ratios'])}; "
            f"{results['warm_cold_ratio_process']:.3f} of cold by process time",
        ),
        (
            "means vs runs.json",
            f"{agreement['values']} values in {agreement['runs']} runs, {agreement['mismatches']} mismatches",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print()
    print_targets(results["targets"], decimals=3)
    if agreement["mismatches"]:
        print("mismatches, e.g.:", *agreement["examples"], sep="\n  ")
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (`--ingest-child` is internal: the measured ingestion process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the built suite (default 1000)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of helm-summarize and cold ingests, each side (default 3)"
    )
    parser.add_argument(
        "--rounds", type=int, default=9, help="rounds of one-run changes, each kind measured once per round (default 9)"
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help=f"the shared helm_runs folder (default {DEFAULT_SHARED})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="an empty or new folder to work in, kept afterwards (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--results", type=Path, help=f"where to write the JSON results (default {DEFAULT_RESULTS})")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="measure peak RSS of cold ingests of suites of each --sizes instead (default results file "
        f"{DEFAULT_MEMORY_RESULTS})",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(MEMORY_SIZES), help="suite sizes of --memory (default 1000 10000)"
    )
    parser.add_argument("--ingest-child", nargs=3, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ingest_child:
        ingest_child(*args.ingest_child)
        return 0
    if args.runs < 1 or args.repeats < 1 or args.rounds < 1:
        raise SystemExit("--runs, --repeats and --rounds must be at least 1")
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="bench_ingest_vs_summarize_"))
    elif args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty")
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.memory:
            results = memory_benchmark(args.shared.resolve(), workdir, sorted(set(args.sizes)), args.repeats)
        else:
            results = benchmark(args.shared.resolve(), workdir, args.runs, args.repeats, args.rounds)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir)
        else:
            print(f"work folder kept: {workdir}", flush=True)
    path = args.results or (DEFAULT_MEMORY_RESULTS if args.memory else DEFAULT_RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    (print_memory_report if args.memory else print_report)(results)
    print(f"results written to {path}")
    missed = [target["name"] for target in results["targets"] if not target["met"]]
    print("all targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
