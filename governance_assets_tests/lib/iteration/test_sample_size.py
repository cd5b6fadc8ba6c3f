"""Designs that decide: variance components against their simulated truth, sizes against
statsmodels' power solver, and the cheapest design checked by simulating the gate's own test."""

import math

import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from governance_assets.lib.core.noninferiority import paired_t_test
from governance_assets.lib.iteration.sample_size import VarianceComponents, designs_to_decide, variance_components


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
