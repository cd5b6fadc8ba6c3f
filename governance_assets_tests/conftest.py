"""Shared fixtures: real HELM output, a temporary GOVERNANCE_HOME, a temporary Dagster instance."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from governance_assets.lib.core.policy import Policy
from governance_assets.lib.helm.runner import helm_environment

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_RUNS = PROJECT_ROOT.parent / "shared" / "helm_runs"
"""Real HELM outputs (Apache-2.0, see ../shared/helm_runs/README.md); read in place, never written."""
SAFETY_ROOT = SHARED_RUNS / "crfm_safety_v3"
MMLU_ROOT = SHARED_RUNS / "mmlu_llama3_v1"


@pytest.fixture(autouse=True)
def offline_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own GOVERNANCE_HOME and the variables that keep HELM offline."""
    home = tmp_path / "governance"
    monkeypatch.setenv("GOVERNANCE_HOME", str(home))
    monkeypatch.delenv("HELM_OUTPUT_ROOTS", raising=False)
    monkeypatch.delenv("GOVERNANCE_POLICY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in helm_environment().items():
        monkeypatch.setenv(key, value)
    return home


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def copy_suite(source_suite_dir: Path, destination_root: Path, suite: str, runs: int | None = None) -> Path:
    """Copy (part of) a real suite into `<destination_root>/runs/<suite>` so a test may change it."""
    target = destination_root / "runs" / suite
    target.mkdir(parents=True)
    run_dirs = sorted(p for p in source_suite_dir.iterdir() if p.is_dir() and p.name != "groups")
    for run_dir in run_dirs[:runs]:
        shutil.copytree(run_dir, target / run_dir.name, copy_function=shutil.copyfile)
    for name in ("runs.json", "run_specs.json"):
        if runs is None and (source_suite_dir / name).exists():
            shutil.copyfile(source_suite_dir / name, target / name)
    for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)  # the shared originals are read-only
    return target


def governance_defs(policy: Policy | None = None) -> list[object]:
    """The real code location's suite-partitioned assets and their checks, with the gates'
    verdicts asset (and its checks) built from `policy` (default: the policy loaded with the code
    location)."""
    from governance_assets.definitions import defs
    from governance_assets.defs.gates.assets import VERDICTS_KEY, build_verdicts_asset
    from governance_assets.defs.partitions import helm_suites
    from governance_assets.defs.resources import POLICY

    definitions = defs()
    verdicts = dg.AssetKey(list(VERDICTS_KEY))
    assets = [
        a
        for a in definitions.assets or []
        if isinstance(a, dg.AssetsDefinition) and a.partitions_def == helm_suites and verdicts not in a.keys
    ]
    keys = {key for asset in assets for key in asset.keys}
    other_checks = [c for c in definitions.asset_checks or [] if {k.asset_key for k in c.check_keys} <= keys]
    return [*assets, build_verdicts_asset(policy or POLICY), *other_checks]


def governance_resources(home: Path, roots: str = "") -> dict[str, object]:
    """Real resources pointed at a temporary GOVERNANCE_HOME."""
    from governance_assets.defs.resources import GovernanceState, HelmRunner, MlflowTracking

    state = GovernanceState(home=str(home), output_roots=roots)
    return {"state": state, "helm": HelmRunner(), "mlflow": MlflowTracking()}


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on, for tests of refused connections."""
    from governance_assets_tests.http_server import free_port

    return free_port()
