"""One machine of a team deployment, as the run worker of an `evaluate_suite` run launched by the
daemon runs it there: its own GOVERNANCE_HOME, the deployment's Dagster instance (DAGSTER_HOME) and
GOVERNANCE_SHARED_ROOT from the environment, the code location loaded in this process.

`python -m governance_assets_tests.deployment.machine [--planned] SUITE ASSET_KEY...` materialises
those assets of the suite's evaluation in one run (`--planned`: a run that creates the suite, as the
schedule's) and exits 1 if it failed."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.deploy import jobs


def evaluate(suite: str, keys: list[str], planned: bool) -> int:
    with dg.DagsterInstance.get() as instance:
        result = jobs.evaluate_suite().execute_in_process(
            instance=instance,
            partition_key=suite,
            asset_selection=[dg.AssetKey.from_user_string(key) for key in keys],
            tags=PLANNED_SUITE_TAGS if planned else None,
            raise_on_error=False,
        )
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            print(f"{event.step_key}: {event.step_failure_data.error}", file=sys.stderr)
    return 0 if result.success else 1


def on_machine(home: Path, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """This module run in a process of its own with `home` as GOVERNANCE_HOME (and `environment`)."""
    return subprocess.run(
        [sys.executable, "-m", "governance_assets_tests.deployment.machine", *arguments],
        env={**os.environ, **environment, "GOVERNANCE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--planned", action="store_true")
    parser.add_argument("suite")
    parser.add_argument("keys", nargs="+")
    arguments = parser.parse_args()
    sys.exit(evaluate(arguments.suite, arguments.keys, arguments.planned))
