"""Atomic writes: no temporary file outlives its writer's next run (real killed processes)."""

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from governance_assets.lib.core.storage import write_parquet_atomic

WRITER = """
import os, signal, sys, time
from pathlib import Path
from governance_assets.lib.core.storage import atomic_path

with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half a Parquet file")
    print("writing", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
"""


def _writer(path: Path, fate: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), fate], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "writing\n"
    return process


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_and_a_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "run_stats" / "v1.parquet"
    killed = _writer(target, "die")
    assert killed.wait(timeout=60) == -signal.SIGKILL
    (dead_tmp,) = target.parent.glob(".v1.parquet.*.tmp")
    live = _writer(target, "sleep")
    try:
        live_tmp = set(target.parent.glob(".v1.parquet.*.tmp")) - {dead_tmp}
        assert len(live_tmp) == 1
        write_parquet_atomic(target, pa.table({"x": [1, 2]}))
        assert pq.read_table(target)["x"].to_pylist() == [1, 2]
        assert not dead_tmp.exists()  # its writer is dead
        assert all(path.exists() for path in live_tmp)  # still being written
        assert set(target.parent.glob(".*.tmp")) == live_tmp  # ours was renamed into place
    finally:
        live.kill()
        live.wait()
    write_parquet_atomic(target, pa.table({"x": [3]}))
    assert list(target.parent.glob(".*.tmp")) == []
    assert sorted(path.name for path in target.parent.iterdir()) == ["v1.parquet"]


def test_another_files_temporaries_are_left_alone(tmp_path: Path) -> None:
    other = tmp_path / ".v10.parquet.1-0.abc.tmp"  # pid 1 with another start time: a dead writer of v10
    other.write_bytes(b"")
    write_parquet_atomic(tmp_path / "v1.parquet", pa.table({"x": [1]}))
    assert other.exists()
