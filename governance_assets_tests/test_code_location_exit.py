"""A process that loaded the code location leaves its objects to the OS at exit (no last garbage
collection over them) and still loses nothing it wrote."""

import subprocess
import sys
from pathlib import Path

CHILD = """
import atexit, gc, logging, sys
from governance_assets import definitions
definitions.defs()
logger = logging.getLogger("exit-test")
logger.addHandler(logging.FileHandler(sys.argv[1]))
logger.warning("last log line")
atexit._run_exitfuncs()  # what exit runs first; the log handler stays open (closed again at exit)
print(gc.get_freeze_count())
sys.stdout.write("last output line")  # no newline: still buffered when the process exits
"""


def test_exit_freezes_the_objects_and_flushes_what_was_written(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    done = subprocess.run([sys.executable, "-c", CHILD, str(log)], capture_output=True, text=True, check=True)
    frozen, last_line = done.stdout.split("\n")
    assert int(frozen) > 100_000  # the code location's objects, out of the last collection
    assert last_line == "last output line"
    assert log.read_text() == "last log line\n"
