"""A real HELM suite for the compliance tests: the bias probe plugin scenario (groups in
`sub_split`) plain, under typos and under gender-term perturbations, run by helm-run on
`simple/model1` and ingested into a warehouse as the helm assets do."""

from pathlib import Path

from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.evaluation import load_suite_tables
from governance_assets.lib.helm import runner, tidy

PROBE_PLUGIN = "governance_assets.lib.compliance.bias_probe"
PROBE_ENTRIES = [
    "governance_bias_probe:data_augmentation=typo_easy,model=simple/model1",
    "governance_bias_probe:data_augmentation=gender_terms_deterministic,model=simple/model1",
    "simple_mcqa:model=simple/model1",
]


def run_probe_suite(home: Path, suite: str = "probe") -> SuiteTables:
    settings = runner.HelmSettings(
        output_path=home / "helm" / "benchmark_output",
        local_path=home / "helm" / "prod_env",
        max_eval_instances=100,
        plugins=(PROBE_PLUGIN,),
    )
    outcomes = runner.run_entries(PROBE_ENTRIES, suite, settings, lambda line: None)
    assert all(o.status == "complete" for o in outcomes), outcomes
    warehouse = Warehouse(home / "warehouse")
    tidy.ingest_suite(suite, settings.output_path / "runs" / suite, warehouse)
    tables = load_suite_tables(warehouse, suite)
    assert tables is not None
    return tables
