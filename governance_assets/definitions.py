"""The code location: everything under `defs/`, loaded by convention."""

import atexit
import functools
import gc
from pathlib import Path

import dagster as dg

# At exit, what the process still holds (the code location, MLflow, Great Expectations, Presidio:
# about 700,000 objects after a run) is left to the OS instead of being collected object by object:
# Python's last garbage collection took 3 s of an `evaluate_suite` run, and up to 15 s under load.
# Nothing is lost: streams and log handlers are flushed by their own exit handlers and by Python.
atexit.register(gc.freeze)


@dg.definitions
def defs() -> dg.Definitions:
    return _loaded()


@functools.cache
def _loaded() -> dg.Definitions:
    """The definitions, built once per process (`dagster job execute` asks for them six times)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
