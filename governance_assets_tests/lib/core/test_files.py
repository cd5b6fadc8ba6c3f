"""Only regular files inside the output root are read, within a size limit, and nothing hangs."""

import os
import resource
from pathlib import Path

import pytest

from governance_assets.lib.core.files import UnreadableFileError, read_regular_file, regular_file_problem
from governance_assets.lib.helm.output import HelmOutputError, load_json


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "root" / "runs" / "v1" / "run"
    folder.mkdir(parents=True)
    return folder


def test_a_regular_file_is_read(run_dir: Path) -> None:
    (run_dir / "stats.json").write_text("[]")
    assert read_regular_file(run_dir / "stats.json") == b"[]"
    assert regular_file_problem(run_dir / "stats.json") is None


def test_a_symlink_to_a_file_outside_the_root_is_refused(run_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": "outside-the-root"}')
    (run_dir / "stats.json").symlink_to(outside)
    with pytest.raises(HelmOutputError, match=r"stats\.json: is a symbolic link"):
        load_json(run_dir / "stats.json")
    assert "symbolic link" in str(regular_file_problem(run_dir / "stats.json"))


def test_a_run_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stats.json").write_text("[]")
    suite = tmp_path / "root" / "runs" / "v1"
    suite.mkdir(parents=True)
    (suite / "run").symlink_to(outside)
    with pytest.raises(HelmOutputError, match=r"its folder run is a symbolic link"):
        load_json(suite / "run" / "stats.json")
    assert "symbolic link" in str(regular_file_problem(suite / "run" / "stats.json"))


def test_a_fifo_is_refused_without_blocking(run_dir: Path) -> None:
    fifo = run_dir / "per_instance_stats.json"
    os.mkfifo(fifo)  # no writer: a plain open() would block forever
    with pytest.raises(HelmOutputError, match=r"is a FIFO, not a regular file"):
        load_json(fifo)
    assert "FIFO" in str(regular_file_problem(fifo))


@pytest.mark.timeout(60)
def test_dev_zero_is_refused_without_reading_it() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UnreadableFileError, match=r"is a device, not a regular file"):
        read_regular_file(Path("/dev/zero"))
    with pytest.raises(HelmOutputError, match=r"is a device"):
        load_json(Path("/dev/zero"))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: nothing was read


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(run_dir: Path) -> None:
    big = run_dir / "scenario_state.json"
    with big.open("wb") as file:
        file.truncate(8 * 1024**3)  # sparse: 8 GiB long, nothing on disk
    with pytest.raises(HelmOutputError, match=r"is 8,589,934,592 bytes, over the limit of 4,294,967,296 bytes"):
        load_json(big)
    (run_dir / "small.json").write_bytes(b"[1, 2, 3]")
    with pytest.raises(UnreadableFileError, match=r"over the limit of 4 bytes"):
        read_regular_file(run_dir / "small.json", max_bytes=4)


def test_a_folder_and_a_missing_file_give_clear_errors(run_dir: Path) -> None:
    (run_dir / "stats.json").mkdir()
    with pytest.raises(HelmOutputError, match=r"is a folder, not a regular file"):
        load_json(run_dir / "stats.json")
    with pytest.raises(HelmOutputError, match=r"file is missing"):
        load_json(run_dir / "run_spec.json")
