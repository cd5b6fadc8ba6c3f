"""Landing one million JSON Lines traffic rows: what a `stage_traffic` run does (`stage_file`: digest,
read, validate, quarantine, split by UTC day, write the day files) side by side with `pyarrow.json.read_json` on the
same file (parse only, with its own type inference).

The file is generated once (`traffic_generator`, seeded, one JSON object per line, as a serving
system writes it); each side then runs in a fresh interpreter per repeat, the sides interleaved,
and the wall time of the measured step (after imports) and the process's peak RSS are compared.
Usage:

    .venv/bin/python bench/traffic_landing.py [--rows 1000000] [--repeats 3]

Results go to `bench/results/traffic_landing.json`. Targets: our median time at most 2x
pyarrow's, our peak RSS under 1 GiB. Exits 0 whether or not they are met (it prints which are);
exits 1 if the staged rows are not all the file's rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import _evidently_side as side_module  # noqa: E402  (status_mib: the process's own VmHWM)
import ingest_vs_summarize as ivs  # noqa: E402  (run_measured, machine, Target, print_targets)

DEFAULT_RESULTS = BENCH_DIR / "results" / "traffic_landing.json"
ROWS = 1_000_000
DAYS = 10
REPEATS = 3
MAX_RATIO = 2.0
MAX_PEAK_RSS_MIB = 1024.0
SIDES = ("pyarrow_read_json", "ours_stage")
LABELS = {"pyarrow_read_json": "pyarrow.json.read_json", "ours_stage": "ours: read + validate + stage"}


def write_file(path: Path, rows: int) -> dict[str, Any]:
    """`rows` rows of synthetic traffic over `DAYS` days as one JSON Lines file."""
    from governance_assets.lib.monitoring.traffic_generator import generate_traffic, write_landing_files

    first_day = datetime.now(UTC).date() - timedelta(days=DAYS + 1)
    frame = generate_traffic(first_day, DAYS, rows // DAYS, drift_day=None, seed=11)
    [written] = write_landing_files(frame, path.parent, "jsonl", per_day=False)
    written.rename(path)
    return {"rows": len(frame), "days": DAYS, "first_day": first_day.isoformat(), "bytes": path.stat().st_size}


def child(side: str, path: Path, workdir: Path, result: Path) -> None:
    """One measured step in this fresh process, timed after the imports; its figures as JSON."""
    import pyarrow as pa
    import pyarrow.json as pj

    pa.table({"warm_up": [0]})  # pyarrow imports pandas on its first table: not the step's cost
    if side == "pyarrow_read_json":
        start = time.perf_counter()
        table = pj.read_json(path)
        seconds, rows, quarantined = time.perf_counter() - start, table.num_rows, 0
    else:
        from governance_assets.lib.monitoring.traffic_intake import stage_file

        staging = workdir / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        start = time.perf_counter()
        staged, _ = stage_file(staging, path, date(2000, 1, 1), datetime.now(UTC).date())
        seconds, rows, quarantined = time.perf_counter() - start, staged.rows, staged.quarantined
    peak = side_module.status_mib("VmHWM")  # this process's own peak (ru_maxrss can carry the parent's over exec)
    result.write_text(
        json.dumps({"seconds": seconds, "rows": rows, "quarantined": quarantined, "peak_rss_mib": peak}), "utf-8"
    )


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    path = workdir / "traffic.jsonl"
    data = write_file(path, args.rows)
    print(f"wrote {data['rows']:,} rows, {data['bytes'] / 2**20:.0f} MiB", flush=True)
    env = {**os.environ}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES:
            result = workdir / f"{side}-{repeat}.json"
            log = workdir / f"{side}-{repeat}.log"
            command = [sys.executable, __file__, "--child", side, str(path), str(workdir), str(result)]
            measured = ivs.run_measured(command, log, env, ivs.PROJECT_ROOT)
            if measured.returncode != 0:
                raise SystemExit(f"{side} failed:\n{ivs.tail(log)}")
            figures = json.loads(result.read_text("utf-8")) | {"process_seconds": measured.seconds}
            runs[side].append(figures)
            print(f"repeat {repeat + 1} {side:<18} {figures['seconds']:6.2f} s  {figures['peak_rss_mib']:6.0f} MiB")
    sides = {
        side: {
            "seconds": statistics.median(r["seconds"] for r in figures),
            "seconds_each": [r["seconds"] for r in figures],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in figures),
            "rows": figures[0]["rows"],
            "quarantined": figures[0]["quarantined"],
        }
        for side, figures in runs.items()
    }
    ratio = sides["ours_stage"]["seconds"] / sides["pyarrow_read_json"]["seconds"]
    targets = [
        ivs.Target("time ours / pyarrow.json.read_json", f"<= {MAX_RATIO:g}", ratio, "medians", ratio <= MAX_RATIO),
        ivs.Target(
            "peak RSS of ours (MiB)",
            f"< {MAX_PEAK_RSS_MIB:g}",
            sides["ours_stage"]["peak_rss_mib"],
            "VmHWM of the whole measured process",
            sides["ours_stage"]["peak_rss_mib"] < MAX_PEAK_RSS_MIB,
        ),
    ]
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": ivs.machine() | {"load_average_1_5_15_min": os.getloadavg()},
        "data": data,
        "repeats": args.repeats,
        "method": "each side in a fresh process per repeat (interleaved), timed after its imports; median "
        "seconds, largest peak RSS (the child's own VmHWM) over the repeats",
        "sides": sides,
        "ratio_ours_over_pyarrow": ratio,
        "targets": [asdict(t) for t in targets],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        side, path, workdir, result = args.child
        child(side, Path(path), Path(workdir), Path(result))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench_traffic_landing_"))
    try:
        results = benchmark(args, workdir)
    finally:
        shutil.rmtree(workdir)
    args.results.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    for side in SIDES:
        figures = results["sides"][side]
        print(
            f"{LABELS[side]:<32} {figures['seconds']:6.2f} s  {figures['peak_rss_mib']:6.0f} MiB  "
            f"{figures['rows']:,} rows"
        )
    ivs.print_targets(results["targets"], decimals=2)
    staged = results["sides"]["ours_stage"]
    ok = staged["rows"] == results["data"]["rows"] and staged["quarantined"] == 0
    print(f"results written to {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
