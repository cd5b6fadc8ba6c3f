"""HELM run folders into the tidy tables `helm/runs`, `helm/run_stats`, `helm/instance_stats`
and `helm/predictions`, re-parsing only the runs whose files changed since the last build."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from governance_assets.lib.core.warehouse import CachedTable, Piece, TableWriter, Warehouse
from governance_assets.lib.helm import output as ho

RUNS_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("run_name", pa.string()),
        ("status", pa.string()),
        ("model", pa.string()),
        ("model_deployment", pa.string()),
        ("scenario", pa.string()),
        ("scenario_class", pa.string()),
        ("groups", pa.list_(pa.string())),
        ("max_eval_instances", pa.int64()),
        ("run_spec_hash", pa.string()),
        ("fingerprint", pa.string()),
        ("missing_files", pa.list_(pa.string())),
        ("listed_in_summary", pa.bool_()),
        ("error", pa.string()),
        ("path", pa.string()),
    ]
)
"""`status` is `complete`, `incomplete` (HELM files missing) or `invalid` (run_spec unreadable)."""

RUN_STATS_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("run_name", pa.string()),
        ("model", pa.string()),
        ("scenario", pa.string()),
        ("metric", pa.string()),
        ("split", pa.string()),
        ("sub_split", pa.string()),
        ("perturbation", pa.string()),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("mean", pa.float64()),
        ("stddev", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
    ]
)

INSTANCE_STATS_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("run_name", pa.string()),
        ("model", pa.string()),
        ("instance_id", pa.string()),
        ("train_trial_index", pa.int64()),
        ("perturbation", pa.string()),
        ("metric", pa.string()),
        ("split", pa.string()),
        ("sub_split", pa.string()),
        ("value", pa.float64()),
    ]
)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("run_name", pa.string()),
        ("model", pa.string()),
        ("instance_id", pa.string()),
        ("train_trial_index", pa.int64()),
        ("perturbation", pa.string()),
        ("split", pa.string()),
        ("sub_split", pa.string()),
        ("input", pa.string()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("references", pa.list_(pa.string())),
        ("correct_references", pa.list_(pa.string())),
        ("success", pa.bool_()),
        ("error", pa.string()),
    ]
)


READ_BATCH = 200
"""Runs catalogued, or read, converted and written, at a time: the ingestion holds one batch as
Python values, whatever the size of the suite."""


def content_hash(value: Any) -> str:
    """A stable SHA-256 of a JSON-able value (keys sorted)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class RunCatalogue:
    """The `helm/runs` table of one suite and what was wrong with it."""

    table: pa.Table
    listed_but_missing: list[str]
    """Runs named in `runs.json` that have no folder."""
    suite_errors: list[str]


def catalogue_runs(suite: str, suite_dir: Path, previous: pa.Table | None = None) -> RunCatalogue:
    """One row per run folder: completeness, model and scenario from `run_spec.json`.

    Rows of `previous` (the last catalogue) whose run files are unchanged are reused."""
    try:
        folders = ho.list_run_folders(suite_dir)
    except ho.HelmOutputError as error:
        return RunCatalogue(RUNS_SCHEMA.empty_table(), [], [str(error)])
    suite_errors: list[str] = []
    try:
        listed = ho.runs_listed_in_summary(suite_dir)
    except ho.HelmOutputError as error:
        suite_errors.append(str(error))
        listed = None
    listed_names = set(listed or ())
    if not folders:
        suite_errors.append(f"{suite_dir}: suite {suite!r} has no run folders")
    known: dict[str, int] = {}  # run name -> its row in `previous`, reused while its files are unchanged
    stored: dict[str, list[Any]] = {}
    if previous is not None and previous.schema.equals(RUNS_SCHEMA):
        stored = previous.select(["run_name", "status", "fingerprint", "path"]).to_pydict()
        known = {name: index for index, name in enumerate(stored["run_name"]) if stored["status"][index] == "complete"}
    reused: list[int] = []
    rows: list[dict[str, Any]] = []
    converted: list[pa.Table] = []  # `rows` as Arrow, a batch at a time: a few Python rows are held
    order: list[tuple[bool, int]] = []  # per folder: (reused?, its index in `reused` or the new rows)
    for run in folders:
        if len(rows) == READ_BATCH:
            converted.append(pa.Table.from_pylist(rows, schema=RUNS_SCHEMA))
            rows = []
        index = known.get(run.run_name)
        if (
            index is not None
            and run.complete
            and stored["fingerprint"][index] == run.fingerprint
            and stored["path"][index] == run.location
        ):
            order.append((True, len(reused)))
            reused.append(index)
            continue
        row: dict[str, Any] = {
            "suite": suite,
            "run_name": run.run_name,
            "missing_files": list(run.missing_files),
            "path": run.location,
        }
        order.append((False, READ_BATCH * len(converted) + len(rows)))
        rows.append(row)
        if run.refusal is not None:
            row.update(status="invalid", error=run.refusal)
            continue
        if not run.complete:
            row["status"] = "incomplete"
            row["error"] = f"{run.location}: missing {', '.join(run.missing_files)}"
            continue
        try:
            spec = ho.read_run_spec(run.path)
        except ho.HelmOutputError as error:
            row.update(status="invalid", error=str(error))
            continue
        row.update(
            status="complete",
            model=spec.model,
            model_deployment=spec.model_deployment,
            scenario=spec.scenario,
            scenario_class=spec.scenario_class,
            groups=list(spec.groups),
            max_eval_instances=spec.adapter_spec.get("max_eval_instances"),
            run_spec_hash=content_hash(spec.raw),
            fingerprint=run.fingerprint,
        )
    kept = (
        previous.take(pa.array(reused, pa.int64())).cast(RUNS_SCHEMA)
        if previous is not None
        else RUNS_SCHEMA.empty_table()
    )
    table = pa.concat_tables([kept, *converted, pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)])
    if reused:  # else the rows are in folder order already
        positions = [index if was_reused else len(reused) + index for was_reused, index in order]
        table = table.take(pa.array(positions, pa.int64()))
    listed_flags = [None if listed is None else name in listed_names for name in table["run_name"].to_pylist()]
    table = table.set_column(
        RUNS_SCHEMA.get_field_index("listed_in_summary"),
        RUNS_SCHEMA.field("listed_in_summary"),
        pa.array(listed_flags, pa.bool_()),
    )
    missing = sorted(listed_names - {run.run_name for run in folders})
    pa.default_memory_pool().release_unused()
    return RunCatalogue(table, missing, suite_errors)


@dataclass(frozen=True)
class TidyTable:
    """How one tidy table is read from a run folder."""

    key: tuple[str, ...]
    schema: pa.Schema
    source_file: str
    read_columns: Callable[[Path, bool], ho.RunFile]
    run_columns: tuple[str, ...]
    """Columns taken from the run (suite, run_name, …) before the row's own fields."""
    repeated_columns: tuple[str, ...]
    """The row's own string columns with few distinct values (metric, split, …)."""

    @property
    def encoded_columns(self) -> tuple[str, ...]:
        return self.run_columns + self.repeated_columns

    @property
    def build_schema(self) -> pa.Schema:
        """`schema` as tables are built in memory and cached: the run's columns and the
        repeated ones dictionary-encoded (Parquet stores them as plain strings)."""
        schema = self.schema
        for name in self.encoded_columns:
            index = schema.get_field_index(name)
            schema = schema.set(index, schema.field(index).with_type(pa.dictionary(pa.int32(), pa.string())))
        return schema

    def as_built(self, table: pa.Table) -> pa.Table | None:
        """`table` (e.g. read from Parquet) with `build_schema`; None when its columns differ
        (written by an older version of the table)."""
        if not table.schema.equals(self.schema) and not table.schema.equals(self.build_schema):
            return None
        for name in self.encoded_columns:
            column = table[name]
            if not pa.types.is_dictionary(column.type):
                table = table.set_column(table.schema.get_field_index(name), name, pc.dictionary_encode(column))
        return table


RUN_STATS = TidyTable(
    ("helm", "run_stats"),
    RUN_STATS_SCHEMA,
    "stats.json",
    ho.read_stats,
    ("suite", "run_name", "model", "scenario"),
    ("metric", "split", "sub_split", "perturbation"),
)
INSTANCE_STATS = TidyTable(
    ("helm", "instance_stats"),
    INSTANCE_STATS_SCHEMA,
    "per_instance_stats.json",
    ho.read_instance_stats,
    ("suite", "run_name", "model"),
    ("instance_id", "perturbation", "metric", "split", "sub_split"),
)
PREDICTIONS = TidyTable(
    ("helm", "predictions"),
    PREDICTIONS_SCHEMA,
    "scenario_state.json",
    ho.read_predictions,
    ("suite", "run_name", "model"),
    ("perturbation", "split", "sub_split"),
)
TIDY_TABLES = (RUN_STATS, INSTANCE_STATS, PREDICTIONS)


@dataclass
class TableBuild:
    """What building a table did: its rows and the runs read, reused or unreadable (the table,
    with the fingerprints it was built from, is in the warehouse)."""

    rows: int
    digests: dict[str, str] = field(default_factory=dict)
    """Run name -> content digest of the file the run was read from (its data version)."""
    errors: dict[str, str] = field(default_factory=dict)
    parsed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


Pending = list[tuple[dict[str, Any], ho.RunFile]]


def _to_table(spec: TidyTable, pending: Pending) -> pa.Table:
    """One Arrow table from the columns read from several runs (one conversion per column)."""
    own_fields = spec.schema.names[len(spec.run_columns) :]
    arrays = []
    for name in own_fields:
        array = pa.array(
            list(chain.from_iterable(file.columns[name] for _, file in pending)), spec.schema.field(name).type
        )
        arrays.append(pc.dictionary_encode(array) if name in spec.repeated_columns else array)
    rows_per_run = [len(file.columns[own_fields[0]]) for _, file in pending]
    run_index = pa.array(np.repeat(np.arange(len(pending), dtype=np.int32), rows_per_run))
    constants = []
    for name in spec.run_columns:
        per_run = pc.dictionary_encode(pa.array([run[name] for run, _ in pending], pa.string()))
        constants.append(pa.DictionaryArray.from_arrays(per_run.indices.take(run_index), per_run.dictionary))
    return pa.Table.from_arrays(constants + arrays, schema=spec.build_schema)


def _convert(spec: TidyTable, pending: Pending, errors: dict[str, str]) -> tuple[pa.Table, Pending]:
    """Convert all runs at once; if Arrow refuses a value, find the runs at fault, name the
    bad value through the strict reader, and convert the rest."""
    try:
        return _to_table(spec, pending), pending
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    survivors = []
    for run, file in pending:
        try:
            _to_table(spec, [(run, file)])
            survivors.append((run, file))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            folder = Path(run["path"])
            try:
                spec.read_columns(folder, True)
                errors[run["run_name"]] = str(
                    ho.HelmOutputError(folder / spec.source_file, f"unexpected value: {error}")
                )
            except ho.HelmOutputError as explained:
                errors[run["run_name"]] = str(explained)
    return _to_table(spec, survivors), survivors


Stretches = dict[str, list[tuple[int, int]]]


def _run_stretches(table: pa.Table) -> Stretches:
    """Where each run's rows sit in `table` (built: `run_name` dictionary-encoded): the
    (offset, length) of each contiguous stretch."""
    stretches: Stretches = {}
    offset = 0
    for chunk in table["run_name"].chunks:
        if not len(chunk):
            continue
        runs = pc.run_end_encode(chunk.indices)
        ends = runs.run_ends.to_numpy()
        starts = np.concatenate([[0], ends[:-1]])
        names = chunk.dictionary.take(runs.values).to_pylist()
        for name, start, end in zip(names, starts.tolist(), ends.tolist(), strict=True):
            stretches.setdefault(name, []).append((offset + start, end - start))
        offset += len(chunk)
    return stretches


def _parsed_stretches(spec: TidyTable, converted: Pending) -> Stretches:
    """Where each run's rows sit in the table `_to_table` made of `converted`."""
    counts = [len(file.columns[spec.schema.names[len(spec.run_columns)]]) for _, file in converted]
    offsets = list(accumulate(counts, initial=0))[:-1]
    return {
        run["run_name"]: [(offset, count)] for (run, _), offset, count in zip(converted, offsets, counts, strict=True)
    }


def _in_run_order(order: Sequence[str], located: Mapping[str, tuple[pa.Table, Stretches]]) -> list[Piece]:
    """The rows of each run in `order`, taken from the table `located` names for it, as pieces
    (adjacent rows of one table form one piece)."""
    pieces: list[Piece] = []
    for name in order:
        if name not in located:
            continue
        table, stretches = located[name]
        for offset, length in stretches.get(name, ()):
            if pieces and pieces[-1][0] is table and pieces[-1][1] + pieces[-1][2] == offset:
                pieces[-1] = (table, pieces[-1][1], pieces[-1][2] + length)
            else:
                pieces.append((table, offset, length))
    return pieces


def data_version(
    runs: pa.Table,
    spec: TidyTable | None = None,
    digests: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> str:
    """A content-based version. `helm/runs`: each run's status and run-spec hash; a tidy table:
    the run-spec hash and the digest of the file each run was read from, and the errors."""
    if spec is None:
        rows = sorted(
            (row["run_name"], row["status"], row["run_spec_hash"] or row["error"] or "")
            for row in runs.select(["run_name", "status", "run_spec_hash", "error"]).to_pylist()
        )
        return content_hash(rows)[:32]
    spec_hashes = dict(zip(runs["run_name"].to_pylist(), runs["run_spec_hash"].to_pylist(), strict=True))
    contents = {name: [spec_hashes.get(name), digest] for name, digest in (digests or {}).items()}
    return content_hash({"runs": contents, "errors": dict(errors or {})})[:32]


def _complete(runs: pa.Table, columns: Sequence[str]) -> pa.Table:
    """The `columns` of the complete runs of a `helm/runs` table (copying no other column)."""
    return runs.select([*dict.fromkeys(["status", *columns])]).filter(pc.equal(runs["status"], "complete"))


def source_fingerprints(runs: pa.Table, spec: TidyTable) -> dict[str, str]:
    """Each complete run's fingerprint of `run_spec.json` and `spec`'s source file: only those
    decide whether the run is re-read for that table."""
    complete = _complete(runs, ["run_name", "fingerprint"])
    found: dict[str, str] = {}
    for name, fingerprint in zip(complete["run_name"].to_pylist(), complete["fingerprint"].to_pylist(), strict=True):
        files = dict(part.split(":", 1) for part in fingerprint.split("|"))
        found[name] = f"run_spec.json:{files['run_spec.json']}|{spec.source_file}:{files[spec.source_file]}"
    return found


def build_table(
    spec: TidyTable,
    runs: pa.Table,
    writer: TableWriter,
    fingerprints: Mapping[str, str],
    previous: pa.Table | None = None,
    previous_manifest: dict[str, str] | None = None,
    previous_digests: dict[str, str] | None = None,
) -> TableBuild:
    """Build `spec`'s table for the complete runs in `runs` (a `helm/runs` table), in run order,
    into `writer` a batch at a time (READ_BATCH runs read, with the reused runs between them).

    Runs whose fingerprint (`source_fingerprints`) matches `previous_manifest` are copied from
    `previous` instead of re-read; a run whose files cannot be read is left out and named in
    `errors`."""
    previous_manifest = previous_manifest or {}
    build = TableBuild(rows=0)
    complete = _complete(runs, [*spec.run_columns, "path"])
    names = complete["run_name"].to_pylist()
    reused = {name for name in names if previous is not None and previous_manifest.get(name) == fingerprints[name]}
    previous_stretches = _run_stretches(previous) if reused and previous is not None else {}
    parsed_digests: dict[str, str] = {}
    window: list[str] = []  # run names in order, up to READ_BATCH of them to read
    to_read: list[int] = []

    def flush() -> None:
        pa.default_memory_pool().release_unused()  # the last batch's buffers, which Arrow's allocator keeps
        located: dict[str, tuple[pa.Table, Stretches]] = {}
        if previous is not None:
            located = {name: (previous, previous_stretches) for name in window if name in reused}
        pending: Pending = []
        for run in complete.take(pa.array(to_read, pa.int64())).to_pylist():
            try:
                pending.append((run, spec.read_columns(Path(run["path"]), False)))
            except ho.HelmOutputError as error:
                build.errors[run["run_name"]] = str(error)
        if pending:
            table, converted = _convert(spec, pending, build.errors)
            build.parsed += [run["run_name"] for run, _ in converted]
            located.update(
                dict.fromkeys((run["run_name"] for run, _ in converted), (table, _parsed_stretches(spec, converted)))
            )
            parsed_digests.update({run["run_name"]: file.digest for run, file in converted})
        for piece in _in_run_order(window, located):
            writer.write(*piece)
            build.rows += piece[2]
        window.clear()
        to_read.clear()

    for index, name in enumerate(names):
        window.append(name)
        if name in reused:
            build.reused.append(name)
        else:
            to_read.append(index)
            if len(to_read) == READ_BATCH:
                flush()
    flush()
    build.digests = {name: (previous_digests or {}).get(name, "") for name in build.reused} | {
        name: parsed_digests[name] for name in build.parsed
    }
    writer.annotations = {
        "manifest": {name: fingerprints[name] for name in build.reused + build.parsed},
        "digests": build.digests,
        "errors": build.errors,
    }
    return build


RUNS_KEY = ("helm", "runs")


def refresh_table(
    spec: TidyTable,
    suite: str,
    warehouse: Warehouse,
    runs: pa.Table | None = None,
) -> TableBuild:
    """Rebuild `spec`'s table of `suite` from the stored `helm/runs` table, re-reading only
    changed runs and writing as it reads; an unchanged suite is not rewritten. `runs` saves
    reading it again."""
    runs = runs if runs is not None else warehouse.read(RUNS_KEY, suite)
    if runs is None:
        raise FileNotFoundError(f"{warehouse.path(RUNS_KEY, suite)}: helm/runs of suite {suite!r} was never built")
    footer = warehouse.read_footer(spec.key, suite)
    annotations = footer.annotations if footer is not None else {}
    manifest: dict[str, str] = annotations.get("manifest") or {}
    digests: dict[str, str] = annotations.get("digests") or {}
    current = source_fingerprints(runs, spec)
    if footer is not None and manifest and manifest == current:
        return TableBuild(rows=footer.rows, digests=digests, reused=sorted(manifest))
    cached: CachedTable | None = warehouse.read_cache(spec.key, suite) if manifest else None
    stored = cached.table if cached is not None else warehouse.read(spec.key, suite) if manifest else None
    previous = spec.as_built(stored) if stored is not None else None  # None: an older version's columns
    if cached is not None and previous is not cached.table:
        cached = None  # its rows were re-encoded: they go to a new cache segment
    with warehouse.writer(spec.key, suite, spec.build_schema, cache=True, reused=cached) as writer:
        return build_table(spec, runs, writer, current, previous, manifest, digests)


def write_catalogue(warehouse: Warehouse, suite: str, catalogue: RunCatalogue, previous: pa.Table | None) -> None:
    """Store the `helm/runs` table, unless it is unchanged since `previous` (the stored one)."""
    annotations = {"listed_but_missing": catalogue.listed_but_missing}
    if (
        previous is not None
        and previous.equals(catalogue.table)
        and warehouse.read_annotations(RUNS_KEY, suite) == annotations
    ):
        return
    warehouse.write(RUNS_KEY, suite, catalogue.table, annotations, cache=True)


@dataclass(frozen=True)
class SuiteIngest:
    """Everything one suite's ingestion produced."""

    catalogue: RunCatalogue
    builds: dict[tuple[str, ...], TableBuild]


def ingest_suite(suite: str, suite_dir: Path, warehouse: Warehouse) -> SuiteIngest:
    """Catalogue a suite's runs and refresh all three tidy tables (what the helm assets do).

    The tables are read one after another (reading HELM's JSON holds the GIL), each written a
    batch at a time as it is read."""
    previous = warehouse.read_cached(RUNS_KEY, suite)
    catalogue = catalogue_runs(suite, suite_dir, previous)
    write_catalogue(warehouse, suite, catalogue, previous)
    builds = {spec.key: refresh_table(spec, suite, warehouse, catalogue.table) for spec in TIDY_TABLES}
    return SuiteIngest(catalogue, builds)


def mark_failed_runs(runs: pa.Table, failures: Sequence[tuple[str | None, str, str]]) -> pa.Table:
    """Record HELM failures `(run folder or None, run entry, error)` in a `helm/runs` table;
    a failure that left no folder gets a row named after its run entry."""
    rows = runs.to_pylist()
    by_name = {row["run_name"]: row for row in rows}
    suite = rows[0]["suite"] if rows else None
    for run_name, entry, error in failures:
        row = by_name.get(run_name or "")
        if row is None:
            row = {
                "suite": suite,
                "run_name": run_name or entry,
                "missing_files": list(ho.REQUIRED_RUN_FILES),
            }
            rows.append(row)
        row.update(status="failed", error=error)
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def compare_with_summary(suite_dir: Path, run_stats: pa.Table) -> tuple[int, list[str]]:
    """Compare our per-run means with the stats HELM's `helm-summarize` wrote to `runs.json`.

    Every run in `runs.json` must be in `run_stats` with every stat HELM summarised, each key
    (run, metric, split, sub-split, perturbation) must appear once in `run_stats`, and the means
    must be equal. Returns how many values were compared and a description of each disagreement;
    a suite without `runs.json` compares nothing."""
    path = suite_dir / "runs.json"
    if not path.exists():
        return 0, []
    ours: dict[tuple[Any, ...], float | None] = {}
    mismatches = []
    for row in run_stats.select(["run_name", "metric", "split", "sub_split", "perturbation", "mean"]).to_pylist():
        key = (row["run_name"], row["metric"], row["split"], row["sub_split"], row["perturbation"])
        if key in ours and ours[key] != row["mean"]:
            mismatches.append(f"{key[0]}: {key[1:]} appears twice in run_stats ({ours[key]} and {row['mean']})")
        elif key in ours:
            mismatches.append(f"{key[0]}: {key[1:]} appears twice in run_stats")
        ours[key] = row["mean"]
    runs_in_table = {key[0] for key in ours}
    compared = 0
    for run in ho.load_json(path):
        run_name = Path(run["run_path"]).name if run.get("run_path") else run["run_spec"]["name"]
        if run_name not in runs_in_table:
            mismatches.append(f"{run_name}: in runs.json but missing from run_stats")
            continue
        for index, stat in enumerate(run["stats"]):
            theirs = ho.parse_stat(stat, f"{run_name} stat {index}", path)
            key = (run_name, theirs.metric, theirs.split, theirs.sub_split, theirs.perturbation)
            compared += 1
            if key not in ours:
                mismatches.append(f"{run_name}: {key[1:]} is in runs.json but not in run_stats")
            elif ours[key] != theirs.mean:
                mismatches.append(f"{run_name}: {key[1:]} mean {ours[key]} != runs.json {theirs.mean}")
    return compared, mismatches
