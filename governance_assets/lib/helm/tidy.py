"""HELM run folders into the tidy tables `helm/runs`, `helm/run_stats`, `helm/instance_stats`
and `helm/predictions`, re-parsing only the runs whose files changed since the last build."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate, chain, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from governance_assets.lib.core.warehouse import (
    CachedTable,
    Piece,
    RowPacker,
    TableWriter,
    Warehouse,
    pack_rows,
    unpack_rows,
)
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
READ_BYTES = 8 << 20
"""The most bytes of HELM files read into one batch (unless one run's file is larger): a batch of
large runs holds no more than one of small runs."""


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

    Rows of `previous` (the last catalogue) whose run files are unchanged are reused. Folders
    are catalogued `READ_BATCH` at a time, each batch going to Arrow at once."""
    try:
        batches = ho.run_folder_batches(suite_dir, READ_BATCH)
    except ho.HelmOutputError as error:
        return RunCatalogue(RUNS_SCHEMA.empty_table(), [], [str(error)])
    suite_errors: list[str] = []
    try:
        listed = ho.runs_listed_in_summary(suite_dir)
    except ho.HelmOutputError as error:
        suite_errors.append(str(error))
        listed = None
    reusable = None
    if previous is not None and previous.schema.equals(RUNS_SCHEMA):
        previous = previous.combine_chunks()  # once: a take from chunks first joins them, at every batch
        reusable = (previous, previous["run_name"].combine_chunks())
    catalogued = [_catalogue_batch(suite, batch, reusable) for batch in batches]
    table = pa.concat_tables(catalogued) if catalogued else RUNS_SCHEMA.empty_table()
    if not table.num_rows:
        suite_errors.append(f"{suite_dir}: suite {suite!r} has no run folders")
    names = table["run_name"]
    listed_names = pa.array(listed or (), pa.string())
    listed_flags = pc.is_in(names, value_set=listed_names) if listed is not None else pa.nulls(len(names), pa.bool_())
    names = names.combine_chunks()
    table = table.set_column(
        RUNS_SCHEMA.get_field_index("listed_in_summary"), RUNS_SCHEMA.field("listed_in_summary"), listed_flags
    )
    missing = sorted(listed_names.filter(pc.invert(pc.is_in(listed_names, value_set=names))).to_pylist())
    pa.default_memory_pool().release_unused()
    return RunCatalogue(table, missing, suite_errors)


def _catalogue_batch(
    suite: str, folders: Sequence[ho.RunFolder], previous: tuple[pa.Table, pa.Array] | None
) -> pa.Table:
    """The catalogue rows of `folders`, in their order: the previous catalogue's row (`previous`:
    the table and its run names) of a complete run whose files and folder are unchanged, else a
    row read from the folder."""
    previous_rows: list[dict[str, Any] | None] = [None] * len(folders)
    found_rows: list[int | None] = [None] * len(folders)
    if previous is not None:
        names = pa.array([run.run_name for run in folders], pa.string())
        found = pc.index_in(names, value_set=previous[1])
        previous_rows = previous[0].select(["status", "fingerprint", "path"]).take(found).to_pylist()
        found_rows = found.to_pylist()
    reused: list[int] = []  # rows of `previous`
    rows: list[dict[str, Any]] = []
    order: list[int] = []  # per folder: its row in `reused`, then `rows`, counted together
    for run, before, found_row in zip(folders, previous_rows, found_rows, strict=True):
        if (
            before is not None
            and found_row is not None
            and before["status"] == "complete"
            and run.complete
            and before["fingerprint"] == run.fingerprint
            and before["path"] == run.location
        ):
            order.append(-1 - len(reused))
            reused.append(found_row)
            continue
        order.append(len(rows))
        rows.append(_catalogue_row(suite, run))
    table = pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)
    if not reused or previous is None:
        return table
    kept = previous[0].take(pa.array(reused, pa.int64())).cast(RUNS_SCHEMA)
    positions = [-1 - index if index < 0 else len(reused) + index for index in order]
    return pa.concat_tables([kept, table]).take(pa.array(positions, pa.int64()))


def _catalogue_row(suite: str, run: ho.RunFolder) -> dict[str, Any]:
    """A run folder's catalogue row, read from its `run_spec.json` when the run is complete."""
    row: dict[str, Any] = {
        "suite": suite,
        "run_name": run.run_name,
        "missing_files": list(run.missing_files),
        "path": run.location,
    }
    if run.refusal is not None:
        return row | {"status": "invalid", "error": run.refusal}
    if not run.complete:
        return row | {"status": "incomplete", "error": f"{run.location}: missing {', '.join(run.missing_files)}"}
    try:
        spec = ho.read_run_spec(run.path)
    except ho.HelmOutputError as error:
        return row | {"status": "invalid", "error": str(error)}
    return row | {
        "status": "complete",
        "model": spec.model,
        "model_deployment": spec.model_deployment,
        "scenario": spec.scenario,
        "scenario_class": spec.scenario_class,
        "groups": list(spec.groups),
        "max_eval_instances": spec.adapter_spec.get("max_eval_instances"),
        "run_spec_hash": content_hash(spec.raw),
        "fingerprint": run.fingerprint,
    }


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


MANIFEST = "manifest"
"""The packed footer annotation of a tidy table: one row per run in it (`MANIFEST_SCHEMA`)."""
MANIFEST_SCHEMA = pa.schema(
    [
        ("run_name", pa.string()),
        ("fingerprint", pa.string()),
        ("digest", pa.string()),
        ("parsed", pa.bool_()),
    ]
)
"""`fingerprint`: the run's `source_fingerprints`, which decide whether it is read again;
`digest`: content digest of the file it was read from (its data version); `parsed`: read from
that file by the build that wrote the table (else its rows were copied from the table before)."""


@dataclass(frozen=True)
class TableBuild:
    """What building a table did: its rows, the runs in it (packed: a few bytes per run) and the
    runs left out as unreadable (the table itself is in the warehouse)."""

    rows: int
    manifest: pa.Buffer
    """The table's `MANIFEST` rows, as stored in its footer."""
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> pa.Table:
        """The `MANIFEST` rows (unpacked)."""
        return unpack_rows(self.manifest)

    @property
    def parsed(self) -> list[str]:
        """The runs read from their files, in run order."""
        runs = self.runs
        names: list[str] = runs["run_name"].filter(runs["parsed"]).to_pylist()
        return names

    @property
    def reused(self) -> list[str]:
        """The runs whose rows were copied from the table before, in run order."""
        runs = self.runs
        names: list[str] = runs["run_name"].filter(pc.invert(runs["parsed"])).to_pylist()
        return names

    @property
    def digests(self) -> dict[str, str]:
        """Run name -> content digest of the file the run was read from (its data version)."""
        runs = self.runs
        return dict(zip(runs["run_name"].to_pylist(), runs["digest"].to_pylist(), strict=True))


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
    """The `columns` of the complete runs of a `helm/runs` table (copying nothing when every run
    is complete)."""
    selected = runs.select([*dict.fromkeys(["status", *columns])])
    complete = pc.equal(runs["status"], "complete")
    return selected if pc.sum(complete).as_py() == runs.num_rows else selected.filter(complete)


def source_fingerprints(fingerprints: pa.ChunkedArray | pa.Array, spec: TidyTable) -> pa.ChunkedArray | pa.Array:
    """The part of complete runs' `fingerprint`s (`helm/runs`) that decides whether a run is
    re-read for `spec`'s table: that of `run_spec.json` and of `spec`'s source file."""
    files = pc.split_pattern(fingerprints, "|")  # one part per file, in REQUIRED_RUN_FILES order
    parts = [pc.list_element(files, ho.REQUIRED_RUN_FILES.index(name)) for name in ("run_spec.json", spec.source_file)]
    return pc.binary_join_element_wise(*parts, "|")


def _windows(reused: np.ndarray, sizes: np.ndarray) -> Iterator[tuple[int, int]]:
    """Consecutive stretches of runs, each with at most `READ_BATCH` runs to read and, unless
    one run alone is larger, at most `READ_BYTES` of their files (`sizes`)."""
    bounds, count, size = [0], 0, 0
    for index in np.flatnonzero(~reused).tolist():
        if count and (count == READ_BATCH or size + sizes[index] > READ_BYTES):
            bounds.append(index)
            count = size = 0
        count += 1
        size += sizes[index]
    return pairwise([*bounds, len(reused)])


def _file_sizes(sources: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The size of the source file named in each of `source_fingerprints`."""
    source = pc.list_element(pc.split_pattern(sources, "|"), 1)  # "<file>:<size>:<mtime>"
    sizes: np.ndarray = pc.cast(pc.list_element(pc.split_pattern(source, ":"), 1), pa.int64()).to_numpy(
        zero_copy_only=False
    )
    return sizes


def build_table(
    spec: TidyTable,
    runs: pa.Table,
    writer: TableWriter,
    previous: pa.Table | None = None,
    previous_manifest: pa.Table | None = None,
) -> TableBuild:
    """Build `spec`'s table for the complete runs in `runs` (a `helm/runs` table), in run order,
    into `writer` a batch at a time (`_windows`: the runs to read, with the reused runs between).

    Runs whose `source_fingerprints` match `previous_manifest` (the `MANIFEST` of `previous`) are
    copied from `previous` instead of re-read; a run whose files cannot be read is left out and
    named in `errors`. Nothing is held per run but the packed manifest."""
    complete = _complete(runs, [*spec.run_columns, "path", "fingerprint"])
    sources = source_fingerprints(complete["fingerprint"], spec)  # once: per batch, pyarrow keeps objects
    reused = np.zeros(complete.num_rows, dtype=bool)
    previous_stretches: Stretches = {}
    if previous is not None and previous_manifest is not None and complete.num_rows:
        found = pc.index_in(complete["run_name"], value_set=previous_manifest["run_name"].combine_chunks())
        matches = pc.equal(previous_manifest["fingerprint"].take(found), sources)
        reused = pc.fill_null(matches, False).to_numpy(zero_copy_only=False)
        previous_digests = previous_manifest["digest"].take(found)
        previous_stretches = _run_stretches(previous) if reused.any() else {}
    errors: dict[str, str] = {}
    manifest = RowPacker(MANIFEST_SCHEMA)
    rows = 0

    def flush(start: int, end: int) -> int:
        """Write the runs `start:end` (reading those not reused); the rows written. Its locals,
        a batch's values, are freed before the next batch is read."""
        pa.default_memory_pool().release_unused()  # the last batch's buffers, which Arrow's allocator keeps
        window = complete.slice(start, end - start)
        window_reused = reused[start:end]
        located: dict[str, tuple[pa.Table, Stretches]] = {}
        pending: Pending = []
        for run in window.filter(pa.array(~window_reused)).drop_columns(["status", "fingerprint"]).to_pylist():
            try:
                pending.append((run, spec.read_columns(Path(run["path"]), False)))
            except ho.HelmOutputError as error:
                errors[run["run_name"]] = str(error)
        parsed_digests: dict[str, str] = {}
        if pending:
            table, converted = _convert(spec, pending, errors)
            located = dict.fromkeys(
                (run["run_name"] for run, _ in converted), (table, _parsed_stretches(spec, converted))
            )
            parsed_digests = {run["run_name"]: file.digest for run, file in converted}
            del converted, pending  # the values read, in Arrow now
        names = window["run_name"].to_pylist()
        digests: list[str | None] = [None] * len(names)
        if previous is not None and window_reused.any():
            located |= {
                name: (previous, previous_stretches) for name, was in zip(names, window_reused, strict=True) if was
            }
            digests = previous_digests.slice(start, end - start).to_pylist()
        written = 0
        for piece in _in_run_order(names, located):
            writer.write(*piece)
            written += piece[2]
        kept = [index for index, name in enumerate(names) if window_reused[index] or name in parsed_digests]
        taken = pa.array(kept, pa.int64())
        manifest.append(
            pa.table(
                {
                    "run_name": window["run_name"].take(taken),
                    "fingerprint": sources.slice(start, end - start).take(taken),
                    "digest": [parsed_digests.get(names[index], digests[index]) for index in kept],
                    "parsed": [not window_reused[index] for index in kept],
                },
                schema=MANIFEST_SCHEMA,
            )
        )
        return written

    for start, end in _windows(reused, _file_sizes(sources)):
        rows += flush(start, end)
    packed = manifest.finish()
    writer.annotations = {"errors": errors}
    writer.packed_annotations = {MANIFEST: packed}
    return TableBuild(rows, packed, errors)


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
    packed = footer.packed.get(MANIFEST) if footer is not None else None
    manifest = unpack_rows(packed) if packed is not None else None
    if manifest is not None and not manifest.schema.equals(MANIFEST_SCHEMA):
        manifest = None  # written by another version: every run is read again
    if footer is not None and manifest is not None and manifest.num_rows and _unchanged(manifest, runs, spec):
        untouched = manifest.set_column(
            manifest.schema.get_field_index("parsed"), "parsed", pa.repeat(False, manifest.num_rows)
        )
        return TableBuild(footer.rows, pack_rows(untouched))
    cached: CachedTable | None = warehouse.read_cache(spec.key, suite) if manifest is not None else None
    stored = cached.table if cached is not None else warehouse.read(spec.key, suite) if manifest is not None else None
    previous = spec.as_built(stored) if stored is not None else None  # None: an older version's columns
    if cached is not None and previous is not cached.table:
        cached = None  # its rows were re-encoded: they go to a new cache segment
    with warehouse.writer(spec.key, suite, spec.build_schema, cache=True, reused=cached) as writer:
        return build_table(spec, runs, writer, previous, manifest)


def _unchanged(manifest: pa.Table, runs: pa.Table, spec: TidyTable) -> bool:
    """Whether the table's `manifest` names exactly the complete runs of `runs`, in their order,
    each with its current `source_fingerprints` (nothing to read again, nothing to drop)."""
    complete = _complete(runs, ["run_name", "fingerprint"])
    current = pa.table(
        {"run_name": complete["run_name"], "fingerprint": source_fingerprints(complete["fingerprint"], spec)}
    )
    return bool(current.equals(manifest.select(["run_name", "fingerprint"])))


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
    del previous
    stored = warehouse.read_cached(RUNS_KEY, suite)  # mapped: only the columns the tables read are paged in
    if stored is not None:
        catalogue = replace(catalogue, table=stored)
        pa.default_memory_pool().release_unused()
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
