"""The warehouse's Arrow cache: segments, incremental rewrites, compaction and falling back to Parquet."""

import itertools
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from governance_assets.lib.core.warehouse import (
    MAX_CACHE_SEGMENTS,
    CachedTable,
    Piece,
    RowPacker,
    Warehouse,
    pack_rows,
    unpack_rows,
)

KEY = ("helm", "run_stats")
SCHEMA = pa.schema([("run_name", pa.string()), ("value", pa.int64())])


def rows_of(run: str, count: int, start: int = 0) -> pa.Table:
    return pa.table({"run_name": [run] * count, "value": list(range(start, start + count))}, schema=SCHEMA)


def segment_files(warehouse: Warehouse) -> dict[str, int]:
    folder = warehouse.root / ".arrow_cache" / "helm" / "run_stats" / "s"
    return {path.name: ipc.open_file(pa.memory_map(str(path))).read_all().num_rows for path in folder.glob("*.arrow")}


def cached(warehouse: Warehouse) -> CachedTable:
    found = warehouse.read_cache(KEY, "s")
    assert found is not None
    return found


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


def test_a_rebuild_writes_only_its_new_rows_to_the_cache(warehouse: Warehouse) -> None:
    first = pa.concat_tables([rows_of("a", 3), rows_of("b", 4), rows_of("c", 5)])
    warehouse.write(KEY, "s", first, {"manifest": {"a": "1"}}, cache=True)
    assert list(segment_files(warehouse).values()) == [12]
    previous = cached(warehouse)
    assert previous.table.equals(first)

    new_b = rows_of("b", 2, start=100)
    pieces: list[Piece] = [(previous.table, 0, 3), (new_b, 0, 2), (previous.table, 7, 5)]
    warehouse.write_rebuilt(KEY, "s", pieces, previous, {"manifest": {"a": "2"}})

    expected = pa.concat_tables([rows_of("a", 3), new_b, rows_of("c", 5)])
    assert sorted(segment_files(warehouse).values()) == [2, 12]  # the old segment is reused, not rewritten
    assert cached(warehouse).table.equals(expected)
    assert warehouse.read(KEY, "s").equals(expected)  # type: ignore[union-attr]
    assert warehouse.read_annotation(KEY, "s", "manifest") == {"a": "2"}
    footer = warehouse.read_footer(KEY, "s")
    assert footer is not None and footer.rows == 10 and footer.annotations == {"manifest": {"a": "2"}}
    assert warehouse.read_footer(KEY, "never_written") is None


def test_random_rebuilds_match_a_plain_model_and_compaction_bounds_the_segments(warehouse: Warehouse) -> None:
    """Each round replaces, drops or adds whole runs; the cache must always hold exactly the
    table, with at most MAX_CACHE_SEGMENTS segments and no more dead rows than live ones."""
    generator = random.Random(7)
    model = {f"run{index:02d}": rows_of(f"run{index:02d}", generator.randint(0, 6), index * 100) for index in range(30)}
    warehouse.write(KEY, "s", pa.concat_tables(model.values()), cache=True)
    segment_counts = []
    for round_number in range(40):
        previous = cached(warehouse)
        stretches: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, table in model.items():
            stretches[name] = (offset, table.num_rows)
            offset += table.num_rows
        for name in generator.sample(sorted(model), 3):
            model[name] = rows_of(name, generator.randint(0, 6), 10_000 + round_number)
        if generator.random() < 0.3:
            model.pop(generator.choice(sorted(model)))
        if generator.random() < 0.3:
            model[f"new{round_number}"] = rows_of(f"new{round_number}", 2, round_number)
        pieces: list[Piece] = []
        for name in sorted(model):
            table = model[name]
            kept = stretches.get(name)
            if kept is not None and previous.table.slice(*kept).equals(table):
                pieces.append((previous.table, *kept))
            else:
                pieces.append((table, 0, table.num_rows))
        model = dict(sorted(model.items()))
        warehouse.write_rebuilt(KEY, "s", pieces, previous)
        expected = pa.concat_tables(model.values())
        current = cached(warehouse)
        assert current.table.equals(expected), round_number
        files = segment_files(warehouse)
        assert files == dict(current.segment_rows)
        assert len(files) <= MAX_CACHE_SEGMENTS
        assert sum(files.values()) <= 2 * max(expected.num_rows, 1)
        segment_counts.append(len(files))
    compactions = sum(after < before for before, after in itertools.pairwise(segment_counts))
    assert max(segment_counts) >= 4 and compactions >= 2, segment_counts


def test_locate_agrees_with_expanding_every_row() -> None:
    generator = random.Random(3)
    stretches = tuple(
        (f"seg{generator.randint(0, 3)}", generator.randint(0, 50), generator.randint(1, 9)) for _ in range(40)
    )
    rows = [(segment, offset + index) for segment, offset, length in stretches for index in range(length)]
    table = pa.table({"value": list(range(len(rows)))})
    located = CachedTable(table, stretches, {})
    for _ in range(200):
        offset = generator.randint(0, len(rows) - 1)
        length = generator.randint(0, len(rows) - offset)
        expanded = [
            (segment, start + index)
            for segment, start, count in located.locate(offset, length)
            for index in range(count)
        ]
        assert expanded == rows[offset : offset + length]


def test_an_empty_table_keeps_its_schema(warehouse: Warehouse) -> None:
    warehouse.write(KEY, "s", rows_of("a", 3), cache=True)
    previous = cached(warehouse)
    warehouse.write_rebuilt(KEY, "s", [(SCHEMA.empty_table(), 0, 0)], previous)
    empty = cached(warehouse).table
    assert empty.num_rows == 0 and empty.schema.equals(SCHEMA)
    assert list(segment_files(warehouse).values()) == [0]


def test_a_cache_that_does_not_belong_to_the_parquet_file_is_not_used(warehouse: Warehouse, tmp_path: Path) -> None:
    warehouse.write(KEY, "s", rows_of("a", 3), cache=True)
    folder = warehouse.root / ".arrow_cache" / "helm" / "run_stats" / "s"
    layout_path = folder / "layout.json"
    layout = layout_path.read_text()

    warehouse.write(KEY, "s", rows_of("b", 2))  # Parquet rewritten without the cache
    assert warehouse.read_cache(KEY, "s") is None
    assert warehouse.read_cached(KEY, "s").equals(rows_of("b", 2))  # type: ignore[union-attr]

    warehouse.write(KEY, "s", rows_of("c", 4), cache=True)
    assert cached(warehouse).table.equals(rows_of("c", 4))
    good = layout_path.read_text()
    broken = {
        "truncated layout": good[: len(good) // 2],
        "stale layout": layout,
        "segment outside the folder": json.dumps(
            {**json.loads(good), "segments": {"../../../s.parquet": 4}, "stretches": [["../../../s.parquet", 0, 4]]}
        ),
        "encoded column not in the segments": json.dumps({**json.loads(good), "encoded_columns": ["run_name"]}),
        "stretch past a segment's end": json.dumps(
            {**json.loads(good), "stretches": [[*json.loads(good)["segments"], 0, 99]]}
        ),
    }
    for reason, text in broken.items():
        layout_path.write_text(text)
        assert warehouse.read_cache(KEY, "s") is None, reason
        assert warehouse.read_cached(KEY, "s").equals(rows_of("c", 4)), reason  # type: ignore[union-attr]
    layout_path.write_text(good)
    next(folder.glob("*.arrow")).unlink()  # a segment removed under the layout
    assert warehouse.read_cache(KEY, "s") is None


def test_dictionary_columns_are_stored_as_plain_columns_with_the_annotations(warehouse: Warehouse) -> None:
    plain = pa.concat_tables([rows_of("a", 3), rows_of("b", 2)])
    encoded = plain.set_column(0, "run_name", pc.dictionary_encode(plain["run_name"]))
    warehouse.write(KEY, "s", encoded, {"manifest": {"a": "1"}}, cache=True)
    stored = pq.read_table(warehouse.path(KEY, "s"))
    assert stored.schema.equals(SCHEMA) and stored.replace_schema_metadata(None).equals(plain)
    assert warehouse.read_annotation(KEY, "s", "manifest") == {"a": "1"}
    assert pa.types.is_dictionary(cached(warehouse).table["run_name"].type)  # rebuilds get the encoding back
    assert cached(warehouse).table.schema.names == SCHEMA.names
    read = warehouse.read_cached(KEY, "s")  # readers get the decoded copy stored beside it
    assert read is not None and read.schema.equals(SCHEMA) and read.equals(plain)


def encoded_rows(run: str, count: int, start: int = 0) -> pa.Table:
    """`rows_of` with `run_name` dictionary-encoded on its own (as each batch of an ingestion is)."""
    table = rows_of(run, count, start)
    return table.set_column(0, "run_name", pc.dictionary_encode(table["run_name"]))


def test_a_table_written_piece_by_piece_is_one_table_and_one_segment(warehouse: Warehouse) -> None:
    """Each piece becomes row groups of the Parquet file as it is given; the cache holds one
    segment whose dictionary grew by deltas; both read back as the whole table."""
    pieces = [encoded_rows(run, 3 + index, index * 10) for index, run in enumerate(["a", "b", "a", "c"])]
    with warehouse.writer(KEY, "s", pieces[0].schema, cache=True) as writer:
        writer.annotations = {"manifest": {"a": "1"}}
        for piece in pieces:
            writer.write(piece)
    expected = pa.concat_tables([piece.cast(SCHEMA) for piece in pieces])
    assert warehouse.read(KEY, "s").equals(expected)  # type: ignore[union-attr]
    assert pq.ParquetFile(warehouse.path(KEY, "s")).metadata.num_row_groups == 4
    assert warehouse.read_annotation(KEY, "s", "manifest") == {"a": "1"}
    assert list(segment_files(warehouse).values()) == [expected.num_rows]
    [segment] = (warehouse.root / ".arrow_cache" / "helm" / "run_stats" / "s").glob("*.arrow")
    reader = ipc.open_file(pa.memory_map(str(segment)))
    reader.read_all()
    assert reader.stats.num_dictionary_deltas == 2  # "b", then "c": "a" was known already
    found = cached(warehouse).table
    assert found.cast(SCHEMA).equals(expected) and pa.types.is_dictionary(found["run_name"].type)
    assert found["run_name"].chunks[-1].dictionary.to_pylist() == ["a", "b", "c"]


def test_rows_packed_a_batch_at_a_time_go_to_the_footer_beside_the_annotations(warehouse: Warehouse) -> None:
    """Per-run bookkeeping is packed as it is made (zstd Arrow IPC) and read back from the footer
    as the rows appended; JSON annotations stay as they were."""
    rows = pa.table({"run_name": [f"run{i:04d}" for i in range(1000)], "digest": [f"{i:032x}" for i in range(1000)]})
    packer = RowPacker(rows.schema)
    for batch in (rows.slice(0, 500), rows.slice(500)):
        packer.append(batch)
    packed = packer.finish()
    assert packed.size < rows.nbytes / 2  # names and digests compress
    with warehouse.writer(KEY, "s", SCHEMA) as writer:
        writer.write(rows_of("a", 2))
        writer.annotations = {"errors": {"b": "unreadable"}}
        writer.packed_annotations = {"manifest": packed}
    footer = warehouse.read_footer(KEY, "s")
    assert footer is not None and footer.annotations == {"errors": {"b": "unreadable"}} and footer.rows == 2
    assert unpack_rows(footer.packed["manifest"]).equals(rows)
    assert unpack_rows(pack_rows(rows_of("a", 3))).equals(rows_of("a", 3))


def test_a_write_that_fails_midway_leaves_the_previous_table_and_no_file_behind(warehouse: Warehouse) -> None:
    warehouse.write(KEY, "s", rows_of("a", 3), {"manifest": {"a": "1"}}, cache=True)
    folder = warehouse.root / "helm" / "run_stats"
    before = sorted(path.name for path in warehouse.root.rglob("*"))
    with pytest.raises(RuntimeError, match="reading failed"), warehouse.writer(KEY, "s", SCHEMA, cache=True) as writer:
        writer.write(rows_of("b", 5))
        raise RuntimeError("reading failed")
    assert sorted(path.name for path in warehouse.root.rglob("*")) == before  # no temporary file, no segment
    assert warehouse.read(KEY, "s").equals(rows_of("a", 3))  # type: ignore[union-attr]
    assert cached(warehouse).table.equals(rows_of("a", 3)) and folder.is_dir()


def test_a_segment_left_half_written_by_a_killed_writer_is_removed_by_the_next_write(warehouse: Warehouse) -> None:
    warehouse.write(KEY, "s", rows_of("a", 3), cache=True)
    folder = warehouse.root / ".arrow_cache" / "helm" / "run_stats" / "s"
    dead = folder / f".{'0' * 32}.arrow.{2**22 + 1}-0.abc123.tmp"  # no process has this pid
    dead.write_bytes(b"half a segment")
    warehouse.write(KEY, "s", rows_of("b", 2), cache=True)
    assert not dead.exists()
    assert cached(warehouse).table.equals(rows_of("b", 2))
