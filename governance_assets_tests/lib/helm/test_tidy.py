"""Reading real HELM suites (0.5.x safety suite with runs.json; MMLU suite without) into tidy tables."""

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.helm import tidy
from governance_assets_tests.conftest import MMLU_ROOT, SAFETY_ROOT, copy_suite


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


def test_safety_suite_means_equal_helm_summary_exactly(warehouse: Warehouse) -> None:
    suite_dir = SAFETY_ROOT / "runs" / "v3"
    result = tidy.ingest_suite("v3", suite_dir, warehouse)
    assert result.catalogue.table.num_rows == 36
    assert all(not build.errors for build in result.builds.values())
    run_stats = warehouse.read(tidy.RUN_STATS.key, "v3")
    assert run_stats is not None and result.builds[tidy.RUN_STATS.key].rows == run_stats.num_rows
    compared, mismatches = tidy.compare_with_summary(suite_dir, run_stats)
    # runs.json was written by HELM's own helm-summarize: 36 runs × 51 stats, every one equal.
    helm_stats = sum(len(run["stats"]) for run in json.loads((suite_dir / "runs.json").read_text()))
    assert compared == helm_stats == run_stats.num_rows
    assert mismatches == []


def test_summary_comparison_detects_a_changed_mean(warehouse: Warehouse) -> None:
    suite_dir = SAFETY_ROOT / "runs" / "v3"
    tidy.ingest_suite("v3", suite_dir, warehouse)
    frame = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "v3"))
    frame.loc[(frame["metric"] == "bbq_accuracy") & frame["perturbation"].isna(), "mean"] += 0.5
    _, mismatches = tidy.compare_with_summary(suite_dir, tidy.pa.Table.from_pandas(frame))
    assert mismatches and all("bbq_accuracy" in m for m in mismatches)


def test_summary_comparison_detects_a_missing_run_and_a_conflicting_duplicate(warehouse: Warehouse) -> None:
    suite_dir = SAFETY_ROOT / "runs" / "v3"
    tidy.ingest_suite("v3", suite_dir, warehouse)
    frame = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "v3"))
    dropped = sorted(frame["run_name"].unique())[0]
    _, missing = tidy.compare_with_summary(suite_dir, tidy.pa.Table.from_pandas(frame[frame["run_name"] != dropped]))
    assert missing == [f"{dropped}: in runs.json but missing from run_stats"]
    duplicate = pd.concat([frame, frame.iloc[[0]].assign(mean=frame["mean"].iloc[0] + 1)])
    _, doubled = tidy.compare_with_summary(suite_dir, tidy.pa.Table.from_pandas(duplicate))
    assert len(doubled) == 2 and "appears twice in run_stats" in doubled[0]


def test_mmlu_suite_without_runs_json(warehouse: Warehouse) -> None:
    suite_dir = MMLU_ROOT / "runs" / "v1"
    result = tidy.ingest_suite("v1", suite_dir, warehouse)
    runs = result.catalogue.table.to_pandas()
    assert len(runs) == 15 and set(runs["status"]) == {"complete"}
    # No runs.json, but helm-summarize's index lists 283 runs: 268 of them have no folder here.
    assert runs["listed_in_summary"].all()
    assert len(result.catalogue.listed_but_missing) == 283 - 15
    run_stats = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "v1"))
    assert list(run_stats.columns) == [
        "suite",
        "run_name",
        "model",
        "scenario",
        "metric",
        "split",
        "sub_split",
        "perturbation",
        "count",
        "sum",
        "mean",
        "stddev",
        "min",
        "max",
    ]
    # count == 0 stats (training_co2_cost …) carry no mean: null, never 0.
    empty = run_stats[run_stats["count"] == 0]
    assert len(empty) > 0 and empty["mean"].isna().all()
    # Perturbation variants are distinct rows: plain, robustness-worst, fairness-worst.
    variants = set(run_stats.loc[run_stats["metric"] == "exact_match", "perturbation"].fillna("plain"))
    assert variants == {"plain", "robustness,computed_on=worst", "fairness,computed_on=worst"}


def test_run_means_equal_the_mean_of_helm_per_instance_values(warehouse: Warehouse) -> None:
    """Independent reference: HELM's run-level exact_match is the mean of its per-instance values."""
    suite_dir = MMLU_ROOT / "runs" / "v1"
    tidy.ingest_suite("v1", suite_dir, warehouse)
    run_stats = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "v1"))
    plain = run_stats[(run_stats["metric"] == "exact_match") & run_stats["perturbation"].isna()]
    for run_name, split, mean in plain[["run_name", "split", "mean"]].itertuples(index=False):
        per_instance = json.loads((suite_dir / run_name / "per_instance_stats.json").read_text())
        values = [
            stat["sum"] / stat["count"]
            for entry in per_instance
            for stat in entry["stats"]
            if stat["name"] == {"name": "exact_match", "split": split}
        ]
        assert mean == pytest.approx(sum(values) / len(values), abs=1e-12)


def test_instance_stats_and_predictions_shapes(warehouse: Warehouse) -> None:
    tidy.ingest_suite("v1", MMLU_ROOT / "runs" / "v1", warehouse)
    instance_stats = pd.read_parquet(warehouse.path(tidy.INSTANCE_STATS.key, "v1"))
    assert list(instance_stats.columns)[:9] == [
        "suite",
        "run_name",
        "model",
        "instance_id",
        "train_trial_index",
        "perturbation",
        "metric",
        "split",
        "sub_split",
    ]
    assert instance_stats.groupby("run_name")["instance_id"].nunique().eq(20).all()
    predictions = pd.read_parquet(warehouse.path(tidy.PREDICTIONS.key, "v1"))
    assert len(predictions) == 15 * 20
    assert predictions["correct_references"].map(len).eq(1).all()  # MMLU: one correct answer
    assert predictions["prompt"].str.contains("Answer:").all()


def test_runs_json_listing_runs_without_folders(tmp_path: Path, warehouse: Warehouse) -> None:
    suite_dir = copy_suite(SAFETY_ROOT / "runs" / "v3", tmp_path / "out", "v3", runs=4)
    before = tidy.ingest_suite("v3", suite_dir, warehouse).catalogue.table
    assert before["listed_in_summary"].to_pylist() == [None] * 4
    (suite_dir / "runs.json").write_bytes((SAFETY_ROOT / "runs" / "v3" / "runs.json").read_bytes())
    result = tidy.ingest_suite("v3", suite_dir, warehouse)
    assert result.catalogue.table.num_rows == 4
    assert len(result.catalogue.listed_but_missing) == 32
    # The runs' rows are reused (their files did not change) with the summary's listing updated.
    assert result.catalogue.table["listed_in_summary"].to_pylist() == [True] * 4
    assert result.catalogue.table.drop_columns(["listed_in_summary"]).equals(before.drop_columns(["listed_in_summary"]))


def test_reingest_reparses_only_the_changed_run(tmp_path: Path, warehouse: Warehouse) -> None:
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=5)
    tidy.ingest_suite("v1", suite_dir, warehouse)
    unchanged = tidy.ingest_suite("v1", suite_dir, warehouse)
    assert all(len(b.parsed) == 0 and len(b.reused) == 5 for b in unchanged.builds.values())
    changed_run = sorted(p for p in suite_dir.iterdir() if p.is_dir())[2]
    stats = json.loads((changed_run / "stats.json").read_text())
    target = next(s for s in stats if s["name"] == {"name": "exact_match", "split": "test"})
    target["mean"] = target["sum"] = 0.123
    (changed_run / "stats.json").write_text(json.dumps(stats))
    again = tidy.ingest_suite("v1", suite_dir, warehouse)
    assert again.builds[tidy.RUN_STATS.key].parsed == [changed_run.name]
    assert len(again.builds[tidy.RUN_STATS.key].reused) == 4
    # Only stats.json changed: the tables read from the other files are not touched.
    for key in (tidy.INSTANCE_STATS.key, tidy.PREDICTIONS.key):
        assert again.builds[key].parsed == [] and len(again.builds[key].reused) == 5
    run_stats = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "v1"))
    row = run_stats[
        (run_stats["run_name"] == changed_run.name)
        & (run_stats["metric"] == "exact_match")
        & (run_stats["split"] == "test")
        & run_stats["perturbation"].isna()
    ]
    assert row["mean"].tolist() == [0.123]
    assert len(run_stats) == 5 * 162


def test_incremental_rebuild_equals_a_cold_build(tmp_path: Path, warehouse: Warehouse) -> None:
    """Reused rows are stitched back in run order: after changes, removals and additions the
    tables are exactly what ingesting the suite from scratch gives."""
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=6)
    runs = sorted(p for p in suite_dir.iterdir() if p.is_dir())
    held_back = tmp_path / runs[4].name
    runs[4].rename(held_back)
    tidy.ingest_suite("v1", suite_dir, warehouse)
    held_back.rename(runs[4])  # a run added in the middle
    for changed in (runs[1], runs[5]):  # one run changed in every table, one in run_stats only
        for name in ("stats.json", "per_instance_stats.json", "scenario_state.json")[: 3 if changed == runs[1] else 1]:
            data = (changed / name).read_bytes()
            (changed / name).unlink()
            (changed / name).write_bytes(data.replace(b'"mean": 1.0', b'"mean": 0.5', 1))
    shutil.rmtree(runs[3])  # a run removed
    incremental = tidy.ingest_suite("v1", suite_dir, warehouse)
    assert incremental.builds[tidy.PREDICTIONS.key].parsed == [runs[1].name, runs[4].name]
    assert incremental.builds[tidy.RUN_STATS.key].parsed == [runs[1].name, runs[4].name, runs[5].name]
    cold = Warehouse(tmp_path / "cold")
    assert tidy.ingest_suite("v1", suite_dir, cold).catalogue.table.equals(incremental.catalogue.table)
    for spec in tidy.TIDY_TABLES:
        rebuilt, scratch = warehouse.read(spec.key, "v1"), cold.read(spec.key, "v1")
        assert rebuilt is not None and scratch is not None
        assert rebuilt.num_rows > 0
        assert rebuilt.replace_schema_metadata(None).equals(scratch.replace_schema_metadata(None)), spec.key
        # Built with dictionary-encoded run columns, stored and read back with the published types.
        assert rebuilt.schema.equals(spec.schema) and warehouse.read_cached(spec.key, "v1").equals(rebuilt)  # type: ignore[union-attr]


@pytest.mark.parametrize(("limit", "value"), [("READ_BATCH", 2), ("READ_BYTES", 150_000)])
def test_runs_read_a_batch_at_a_time_make_the_same_tables(
    limit: str, value: int, tmp_path: Path, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory is bounded by reading a few runs (or bytes of their files) at a time; the tables,
    errors and versions are those of reading every run at once (a truncated file in one batch,
    the others intact). These MMLU runs' stats.json are about 55 kB, scenario_state.json 70 kB
    and per_instance_stats.json 150 kB: 150 kB makes batches of two runs, or of one too large."""
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=7)
    bad = sorted(p for p in suite_dir.iterdir() if p.is_dir())[2]
    (bad / "per_instance_stats.json").write_text('[{"instance_id": "id1", "stats": [{"name": ')
    at_once = Warehouse(tmp_path / "at_once")
    reference = tidy.ingest_suite("v1", suite_dir, at_once)
    monkeypatch.setattr(tidy, limit, value)
    batches: list[list[int]] = []  # the file sizes of each batch read
    convert = tidy._convert

    def recording(spec: tidy.TidyTable, pending: tidy.Pending, errors: dict[str, str]) -> Any:
        batches.append([(Path(run["path"]) / spec.source_file).stat().st_size for run, _ in pending])
        return convert(spec, pending, errors)

    monkeypatch.setattr(tidy, "_convert", recording)
    batched = tidy.ingest_suite("v1", suite_dir, warehouse)
    for spec in tidy.TIDY_TABLES:
        ours, theirs = batched.builds[spec.key], reference.builds[spec.key]
        assert (ours.parsed, ours.errors, ours.digests) == (theirs.parsed, theirs.errors, theirs.digests)
        assert len(ours.parsed) == 7 - (spec is tidy.INSTANCE_STATS)
        table, expected = warehouse.read(spec.key, "v1"), at_once.read(spec.key, "v1")
        assert table is not None and expected is not None and table.num_rows > 0
        assert table.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None)), spec.key
        assert warehouse.read_cached(spec.key, "v1").equals(table)  # type: ignore[union-attr]
    assert sum(map(len, batches)) == 3 * 7 - 1 and max(map(len, batches)) == 2
    if limit == "READ_BYTES":
        assert all(len(sizes) == 1 or sum(sizes) <= value for sizes in batches)
        assert any(len(sizes) == 1 and sizes[0] > value for sizes in batches)


def test_a_removed_run_leaves_the_tables_and_nothing_is_read_again(tmp_path: Path, warehouse: Warehouse) -> None:
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=4)
    tidy.ingest_suite("v1", suite_dir, warehouse)
    removed = sorted(p for p in suite_dir.iterdir() if p.is_dir())[1]
    shutil.rmtree(removed)
    result = tidy.ingest_suite("v1", suite_dir, warehouse)
    for spec in tidy.TIDY_TABLES:
        build = result.builds[spec.key]
        assert build.parsed == [] and len(build.reused) == 3
        table = warehouse.read(spec.key, "v1")
        assert table is not None and removed.name not in set(table["run_name"].to_pylist())
        assert len(set(table["run_name"].to_pylist())) == 3


def test_a_table_without_rows_is_rebuilt_incrementally(tmp_path: Path, warehouse: Warehouse) -> None:
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=3)
    runs = sorted(p for p in suite_dir.iterdir() if p.is_dir())
    for run in runs:
        (run / "per_instance_stats.json").write_text("[]")
    tidy.ingest_suite("v1", suite_dir, warehouse)
    (runs[1] / "per_instance_stats.json").unlink()
    (runs[1] / "per_instance_stats.json").write_text("[]")  # re-run, still without per-instance stats
    shutil.rmtree(warehouse.root / ".arrow_cache")  # safe to delete: the Parquet files are read instead
    build = tidy.ingest_suite("v1", suite_dir, warehouse).builds[tidy.INSTANCE_STATS.key]
    assert build.parsed == [runs[1].name] and len(build.reused) == 2 and build.rows == 0
    assert warehouse.read_cached(tidy.INSTANCE_STATS.key, "v1").schema.equals(tidy.INSTANCE_STATS.schema)  # type: ignore[union-attr]


def test_a_table_stored_by_an_older_schema_is_rebuilt_from_every_run(tmp_path: Path, warehouse: Warehouse) -> None:
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=3)
    tidy.ingest_suite("v1", suite_dir, warehouse)
    stored = warehouse.read(tidy.RUN_STATS.key, "v1")
    assert stored is not None
    older = stored.drop_columns(["stddev"])  # as a version without the column wrote it, manifest and all
    footer = warehouse.read_footer(tidy.RUN_STATS.key, "v1")
    assert footer is not None and tidy.MANIFEST in footer.packed
    with warehouse.writer(tidy.RUN_STATS.key, "v1", older.schema) as writer:
        writer.write(older)
        writer.annotations, writer.packed_annotations = footer.annotations, footer.packed
    changed = sorted(p for p in suite_dir.iterdir() if p.is_dir())[0] / "stats.json"
    changed.write_bytes(changed.read_bytes())
    build = tidy.ingest_suite("v1", suite_dir, warehouse).builds[tidy.RUN_STATS.key]
    assert len(build.parsed) == 3 and build.reused == []
    assert (
        warehouse.read(tidy.RUN_STATS.key, "v1")
        .replace_schema_metadata(None)
        .equals(stored.replace_schema_metadata(None))
    )  # type: ignore[union-attr]


def test_data_versions_follow_content_not_timestamps(tmp_path: Path, warehouse: Warehouse) -> None:
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=3)

    def versions() -> dict[str, str]:
        result = tidy.ingest_suite("v1", suite_dir, warehouse)
        runs = result.catalogue.table
        found = {"helm/runs": tidy.data_version(runs)}
        for spec in tidy.TIDY_TABLES:
            build = result.builds[spec.key]
            found["/".join(spec.key)] = tidy.data_version(runs, spec, build.digests, build.errors)
        return found

    first = versions()
    run = sorted(p for p in suite_dir.iterdir() if p.is_dir())[1]
    stats = run / "stats.json"
    stats.write_bytes(stats.read_bytes())  # rewritten, same content: HELM re-ran identically
    touched = versions()
    assert touched == first
    stats.write_text(stats.read_text().replace('"mean": 4.0', '"mean": 4.5', 1))
    changed = versions()
    assert changed["helm/run_stats"] != first["helm/run_stats"]
    assert {k: v for k, v in changed.items() if k != "helm/run_stats"} == {
        k: v for k, v in first.items() if k != "helm/run_stats"
    }
