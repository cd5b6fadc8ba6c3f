"""Designs that decide: variance components against their simulated truth, sizes against
statsmodels' power solver, and the cheapest design checked by simulating the gate's own test."""

import math

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from governance_assets.lib.core.noninferiority import paired_t_test
from governance_assets.lib.iteration.sample_size import (
    VarianceComponents,
    decidable_tolerance,
    designs_to_decide,
    evaluation_pool,
    instances_available,
    variance_components,
)


def test_variance_components_recover_the_simulated_truth() -> None:
    rng = np.random.default_rng(0)
    between_sd, within_sd = 0.3, 0.5
    drops = rng.normal(0, between_sd, (4000, 1)) + rng.normal(0, within_sd, (4000, 5))
    estimate = variance_components(drops)
    assert estimate.between == pytest.approx(between_sd**2, rel=0.05)
    assert estimate.within == pytest.approx(within_sd**2, rel=0.05)
    single = variance_components(drops[:, :1])
    assert single.within is None and single.between == pytest.approx(between_sd**2 + within_sd**2, rel=0.05)


def test_each_design_is_the_statsmodels_sample_size_for_its_spread() -> None:
    components = VarianceComponents(between=0.04, within=0.16, trials=5)
    designs = designs_to_decide(drop=0.0, components=components, tolerance=0.05, alpha=0.05, power=0.8)
    assert [d.model_calls for d in designs] == sorted(d.model_calls for d in designs)
    for design in designs:
        effect = 0.05 / math.sqrt(0.04 + 0.16 / design.trials)
        reference = TTestPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, alternative="larger")
        assert design.instances == math.ceil(reference)
        assert design.model_calls == design.instances * design.trials


def test_the_cheapest_design_decides_at_the_planned_power() -> None:
    """Simulate suites of the cheapest design with the assumed components: the gate's test shows
    the drop within tolerance in about `power` of them."""
    rng = np.random.default_rng(1)
    components = VarianceComponents(between=0.02, within=0.2, trials=3)
    design = designs_to_decide(0.0, components, tolerance=0.05, alpha=0.05, power=0.8)[0]
    decided = 0
    for _ in range(1000):
        effects = rng.normal(0, math.sqrt(components.between), design.instances)
        trial_noise = rng.normal(0, math.sqrt(components.within), (design.instances, design.trials))
        drops = (effects[:, None] + trial_noise).mean(axis=1)
        decided += paired_t_test(drops, np.zeros_like(drops), tolerance=0.05, alpha=0.05).p_within < 0.05
    assert decided / 1000 == pytest.approx(0.8, abs=0.04)


def test_one_trial_plans_instances_only() -> None:
    designs = designs_to_decide(0.01, VarianceComponents(0.1, None, 1), tolerance=0.05, alpha=0.05, power=0.8)
    assert [d.trials for d in designs] == [1]


def _helm_draw(train: int, pool: int, max_eval_instances: int) -> list[str]:
    """The ids HELM's own runner evaluates of a scenario with `train` train instances first and `pool`
    test instances (`with_instance_ids`, then `downsample_eval_instances`)."""
    from helm.benchmark.runner import downsample_eval_instances
    from helm.benchmark.scenarios.scenario import TEST_SPLIT, TRAIN_SPLIT, Input, Instance, with_instance_ids

    instances = [
        Instance(Input(text=str(i)), [], split=TRAIN_SPLIT if i < train else TEST_SPLIT) for i in range(train + pool)
    ]
    drawn = downsample_eval_instances(with_instance_ids(instances), max_eval_instances, ["valid", TEST_SPLIT])
    return [str(instance.id) for instance in drawn if instance.split == TEST_SPLIT]


@pytest.mark.parametrize(
    ("train", "pool", "max_eval"), [(5, 111, 20), (0, 1534, 10), (11, 79, 10), (3, 40, 40), (3, 12, 40)]
)
def test_the_evaluation_pool_is_the_one_helm_drew_the_ids_from(train: int, pool: int, max_eval: int) -> None:
    assert evaluation_pool(_helm_draw(train, pool, max_eval), max_eval) == pool


def test_simple_mcqa_pool_from_helms_own_scenario() -> None:
    """HELM's simple_mcqa (numbers 10..99, 21..99 in test) drawn by HELM's runner at 10 instances."""
    from helm.benchmark.runner import downsample_eval_instances
    from helm.benchmark.scenarios.scenario import TEST_SPLIT, with_instance_ids
    from helm.benchmark.scenarios.simple_scenarios import SimpleMCQAScenario

    instances = with_instance_ids(SimpleMCQAScenario().get_instances(""))
    drawn = downsample_eval_instances(instances, 10, ["valid", TEST_SPLIT])
    assert (
        evaluation_pool([str(i.id) for i in drawn if i.split == TEST_SPLIT], 10)
        == sum(i.split == TEST_SPLIT for i in instances)
        == 79
    )


def test_a_pool_is_not_inferred_from_too_few_or_foreign_ids() -> None:
    assert evaluation_pool(_helm_draw(2, 300, 3), 3) is None  # 3 drawn ids could fit a wrong size
    assert evaluation_pool(["a", "b", "c"], None) is None
    assert evaluation_pool(["id3", "id9"], 10) == 2  # fewer than asked: HELM evaluated them all


def test_mmlu_pools_are_the_subjects_published_sizes() -> None:
    """The MMLU runs drew 20 of valid + test; MMLU's published split sizes (Hendrycks et al.):
    abstract_algebra 11 + 100, philosophy 34 + 311, us_foreign_policy 11 + 100."""
    import tempfile
    from pathlib import Path

    from governance_assets.lib.core.warehouse import Warehouse
    from governance_assets.lib.gates.evaluation import load_suite_tables
    from governance_assets.lib.helm import tidy
    from governance_assets_tests.conftest import MMLU_ROOT

    with tempfile.TemporaryDirectory() as folder:
        warehouse = Warehouse(Path(folder))
        tidy.ingest_suite("v1", MMLU_ROOT / "runs" / "v1", warehouse)
        tables = load_suite_tables(warehouse, "v1")
    assert tables is not None
    available = instances_available(tables.runs, tables.instance_stats)
    published = {"abstract_algebra": 111, "philosophy": 345, "us_foreign_policy": 111}
    assert len(available) == 15 * 3  # every run: its pool, and a bound for its test and valid splits
    for (run, split), count in available.items():
        assert count == published[run.split("subject=")[1].split(",")[0]], (run, split)


def test_the_decidable_tolerance_gives_the_planned_power_with_the_available_instances() -> None:
    """statsmodels' power of the paired t-test at the suggested tolerance with all instances."""
    spread, drop, available = 0.4, 0.01, 111
    needed = math.ceil(TTestPower().solve_power(effect_size=0.01 / spread, alpha=0.05, power=0.8, alternative="larger"))
    assert needed > available
    looser = decidable_tolerance(drop, 0.02, needed, available)
    power = TTestPower().power(effect_size=(looser - drop) / spread, nobs=available, alpha=0.05, alternative="larger")
    assert looser > 0.02 and power == pytest.approx(0.8, abs=0.02)
    assert decidable_tolerance(0.05, 0.04, 400, 100) == pytest.approx(0.05 - 0.01 * 2)  # a drop above: stricter
