"""Bad HELM input: a clear error naming the file and the reason, the other runs still ingested,
and no partial file left behind."""

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from governance_assets.lib.core.files import NO_LINKS
from governance_assets.lib.core.storage import UnsafePathError, safe_component, write_parquet_atomic
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.helm import output as helm_output
from governance_assets.lib.helm import tidy
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    return copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=4)


def _first_run(suite_dir: Path) -> Path:
    return sorted(p for p in suite_dir.iterdir() if p.is_dir())[0]


def _edit_stats(edit: Callable[[list[dict]], None]) -> Callable[[Path], None]:  # type: ignore[type-arg]
    def apply(run: Path) -> None:
        stats = json.loads((run / "stats.json").read_text())
        edit(stats)
        (run / "stats.json").write_text(json.dumps(stats))

    return apply


def _truncate(run: Path) -> None:
    data = (run / "stats.json").read_bytes()
    (run / "stats.json").write_bytes(data[: len(data) // 2])


def _nan_mean(run: Path) -> None:
    text = (run / "stats.json").read_text()
    (run / "stats.json").write_text(text.replace('"mean": 4.0', '"mean": NaN', 1))


def _infinite_mean(run: Path) -> None:
    text = (run / "stats.json").read_text()
    (run / "stats.json").write_text(text.replace('"mean": 4.0', '"mean": 1e999', 1))  # parses as Infinity


BAD_STATS = {
    "truncated JSON": (_truncate, "truncated JSON"),
    "invalid JSON": (lambda run: (run / "stats.json").write_text("{not json"), "invalid JSON"),
    "not a list": (lambda run: (run / "stats.json").write_text("{}"), "expected a JSON list"),
    "unknown key": (_edit_stats(lambda s: s[0].update(bogus=1)), "unknown keys ['bogus']"),
    "unknown name key": (
        _edit_stats(lambda s: s[0]["name"].update(shard=2)),
        "unknown keys in name ['shard']",
    ),
    "missing count": (_edit_stats(lambda s: s[0].pop("count")), "missing or invalid 'count'"),
    "null mean": (_edit_stats(lambda s: s[0].update(mean=None)), "'mean' is missing or null"),
    "NaN mean": (_nan_mean, "non-finite number NaN"),
    "infinite mean": (_infinite_mean, "'mean' is inf (not a finite number)"),
    "boolean mean": (_edit_stats(lambda s: s[0].update(mean=True)), "'mean' is not a number (True)"),
    "boolean count": (_edit_stats(lambda s: s[0].update(count=True)), "missing or invalid 'count' (True)"),
    "fractional count": (_edit_stats(lambda s: s[0].update(count=1.5)), "'count' is 1.5, not a whole number"),
    "string number": (_edit_stats(lambda s: s[0].update(max="4")), "'max' is not a number"),
    "missing name": (_edit_stats(lambda s: s[0].pop("name")), "missing or invalid 'name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATS))
def test_bad_stats_file_names_file_and_reason_and_rest_ingests(case: str, suite_dir: Path, tmp_path: Path) -> None:
    corrupt, reason = BAD_STATS[case]
    bad_run = _first_run(suite_dir)
    corrupt(bad_run)
    warehouse = Warehouse(tmp_path / "warehouse")
    result = tidy.ingest_suite("v1", suite_dir, warehouse)
    errors = result.builds[tidy.RUN_STATS.key].errors
    assert list(errors) == [bad_run.name]
    assert str(bad_run / "stats.json") in errors[bad_run.name] and reason in errors[bad_run.name]
    run_stats = pa.parquet.read_table(warehouse.path(tidy.RUN_STATS.key, "v1"))
    assert set(run_stats["run_name"].to_pylist()) == {p.name for p in suite_dir.iterdir() if p.is_dir()} - {
        bad_run.name
    }
    assert warehouse.read_annotation(tidy.RUN_STATS.key, "v1", "errors") == errors
    # The other tables read other files: they still hold the run.
    assert result.builds[tidy.INSTANCE_STATS.key].errors == {}
    assert not list(warehouse.root.rglob("*.tmp"))


@pytest.mark.parametrize(("value", "reason"), [("1e999", "'mean' is inf"), ("true", "'mean' is not a number")])
def test_impossible_instance_values_are_refused_with_the_file_and_instance(
    value: str, reason: str, tmp_path: Path
) -> None:
    run = _first_run(copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1", runs=1))
    path = run / "per_instance_stats.json"
    entries = json.loads(path.read_text())
    stat = entries[3]["stats"][0]
    marker = 987654.25
    stat["mean"] = marker
    path.write_text(json.dumps(entries).replace(str(marker), value, 1))
    with pytest.raises(helm_output.HelmOutputError) as error:
        helm_output.read_instance_stats(run)
    assert str(path) in str(error.value) and f"entry 3 ({entries[3]['instance_id']})" in str(error.value)
    assert reason in str(error.value)


def test_missing_required_file_marks_run_incomplete_and_never_ingests_it(suite_dir: Path, tmp_path: Path) -> None:
    bad_run = _first_run(suite_dir)
    (bad_run / "per_instance_stats.json").unlink()
    warehouse = Warehouse(tmp_path / "warehouse")
    result = tidy.ingest_suite("v1", suite_dir, warehouse)
    row = next(r for r in result.catalogue.table.to_pylist() if r["run_name"] == bad_run.name)
    assert row["status"] == "incomplete" and row["missing_files"] == ["per_instance_stats.json"]
    assert "missing per_instance_stats.json" in row["error"]
    for key, build in result.builds.items():
        table = warehouse.read(key, "v1")
        assert table is not None and bad_run.name not in table["run_name"].to_pylist() and len(build.parsed) == 3


def test_invalid_run_spec_is_named(suite_dir: Path, tmp_path: Path) -> None:
    bad_run = _first_run(suite_dir)
    spec = json.loads((bad_run / "run_spec.json").read_text())
    del spec["adapter_spec"]
    (bad_run / "run_spec.json").write_text(json.dumps(spec))
    result = tidy.ingest_suite("v1", suite_dir, Warehouse(tmp_path / "warehouse"))
    row = next(r for r in result.catalogue.table.to_pylist() if r["run_name"] == bad_run.name)
    assert row["status"] == "invalid"
    assert row["error"] == f"{bad_run / 'run_spec.json'}: missing required key 'adapter_spec'"


def test_bad_per_instance_and_scenario_state_files(suite_dir: Path, tmp_path: Path) -> None:
    runs = sorted(p for p in suite_dir.iterdir() if p.is_dir())
    (runs[0] / "per_instance_stats.json").write_text('[{"instance_id": "id1"}]')
    (runs[1] / "scenario_state.json").write_text('{"request_states": [{"instance": {}}]}')
    result = tidy.ingest_suite("v1", suite_dir, Warehouse(tmp_path / "warehouse"))
    assert "entry 0: needs 'instance_id' and 'stats'" in result.builds[tidy.INSTANCE_STATS.key].errors[runs[0].name]
    assert (
        "request_states[0]: missing instance or instance.id" in result.builds[tidy.PREDICTIONS.key].errors[runs[1].name]
    )


def test_empty_suite_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "out" / "runs" / "empty"
    empty.mkdir(parents=True)
    catalogue = tidy.catalogue_runs("empty", empty)
    assert catalogue.table.num_rows == 0
    assert catalogue.suite_errors == [f"{empty}: suite 'empty' has no run folders"]


def test_suite_in_two_roots_is_refused(tmp_path: Path) -> None:
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "a", "v1", runs=1)
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "b", "v1", runs=1)
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "b", "v2", runs=1)
    discovery = helm_output.discover_suites([tmp_path / "a", tmp_path / "b"])
    assert sorted(discovery.suites) == ["v2"]
    assert "found in more than one output root" in discovery.problems["v1"]
    assert str(tmp_path / "a" / "runs" / "v1") in discovery.problems["v1"]


@pytest.mark.parametrize("name", ["..", ".", "", "../escape", "/etc/passwd", "a/b", "a\\b", "~root", "x\x00y"])
def test_names_that_would_escape_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        safe_component(name, "suite name")
    with pytest.raises(UnsafePathError):
        Warehouse(tmp_path).path(("helm", "run_stats"), name)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    write_parquet_atomic(path, pa.table({"x": [1, 2]}))
    with pytest.raises(pa.ArrowInvalid):
        write_parquet_atomic(path, pa.table({"x": pa.array([object()], type=pa.int64())}))  # type: ignore[list-item]
    assert pa.parquet.read_table(path)["x"].to_pylist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def _outside_suite(tmp_path: Path) -> Path:
    """A real suite of two runs outside every output root, one of its stats marked."""
    outside = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "elsewhere", "v1", runs=2)
    stats = _first_run(outside) / "stats.json"
    stats.write_text(stats.read_text().replace('"mean": 4.0', '"mean": 4.25', 1))
    return outside


def test_a_suite_folder_linked_out_of_the_root_is_refused_by_discovery(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "linked").symlink_to(_outside_suite(tmp_path), target_is_directory=True)
    copy_suite(MMLU_ROOT / "runs" / "v1", root, "v2", runs=1)
    found = helm_output.discover_suites([root])
    assert sorted(found.suites) == ["v2"]
    assert found.problems["linked"] == f"{root / 'runs' / 'linked'}: the suite folder is a symbolic link {NO_LINKS}"


def test_a_runs_folder_linked_out_of_the_root_is_refused_by_discovery(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "runs").symlink_to(_outside_suite(tmp_path).parent, target_is_directory=True)
    found = helm_output.discover_suites([root])
    assert found.suites == {}
    assert found.problems == {"v1": f"{root / 'runs'}: the runs folder is a symbolic link {NO_LINKS}"}


def test_a_suite_folder_given_through_a_link_is_not_ingested(tmp_path: Path) -> None:
    linked = tmp_path / "root" / "runs" / "v1"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(_outside_suite(tmp_path), target_is_directory=True)
    result = tidy.ingest_suite("v1", linked, Warehouse(tmp_path / "warehouse"))
    assert result.catalogue.table.num_rows == 0
    assert result.catalogue.suite_errors == [f"{linked}: the suite folder is a symbolic link {NO_LINKS}"]
    assert all(build.rows == 0 for build in result.builds.values())


def test_a_run_folder_linked_out_of_the_suite_is_invalid_and_the_rest_ingests(suite_dir: Path, tmp_path: Path) -> None:
    outside_run = _first_run(_outside_suite(tmp_path))
    linked = suite_dir / "zz_linked_run"
    linked.symlink_to(outside_run, target_is_directory=True)
    result = tidy.ingest_suite("v1", suite_dir, Warehouse(tmp_path / "warehouse"))
    rows = {row["run_name"]: row for row in result.catalogue.table.to_pylist()}
    assert rows["zz_linked_run"]["status"] == "invalid"
    assert rows["zz_linked_run"]["error"] == f"{linked}: the run folder is a symbolic link {NO_LINKS}"
    assert [row["status"] for name, row in rows.items() if name != "zz_linked_run"] == ["complete"] * 4
    for build in result.builds.values():
        assert "zz_linked_run" not in build.parsed and len(build.parsed) == 4


@pytest.mark.timeout(60)
def test_a_fifo_or_device_in_place_of_a_folder_or_file_is_skipped_without_hanging(
    suite_dir: Path, tmp_path: Path
) -> None:
    import os

    os.mkfifo(suite_dir / "a_fifo_run")  # listed as a run folder it would be opened: it must not be
    (suite_dir / "runs.json").symlink_to("/dev/zero")
    run = _first_run(suite_dir)
    (run / "scenario_state.json").unlink()
    (run / "scenario_state.json").symlink_to("/dev/zero")
    result = tidy.ingest_suite("v1", suite_dir, Warehouse(tmp_path / "warehouse"))
    assert result.catalogue.suite_errors == [f"{suite_dir / 'runs.json'}: is a symbolic link {NO_LINKS}"]
    assert "a_fifo_run" not in result.catalogue.table["run_name"].to_pylist()
    assert result.builds[tidy.PREDICTIONS.key].errors == {
        run.name: f"{run / 'scenario_state.json'}: is a symbolic link {NO_LINKS}"
    }
