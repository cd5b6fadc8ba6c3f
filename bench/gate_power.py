"""False-alarm rate and power of the regression gate's tests, by simulation.

    .venv/bin/python bench/gate_power.py [--simulations 4000]

For the designs HELM produces (1 or 5 train trials per instance, 20 to 1,000 instances) and the
default policy (tolerance 0.02, alpha 0.05): how often two equally good models are called `fail`,
how often a candidate that is exactly `tolerance` worse is called `pass`, and how often a 10-point
drop is called `fail` (power), `inconclusive` or `pass`. Instance difficulty is drawn from
Beta(2, 2); the candidate's chance of being right on each instance is lower by the drop. Results
go to bench/results/gate_power.json and are printed as a table (the README quotes it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from governance_assets.lib.core.noninferiority import margin_test

RESULTS = Path(__file__).resolve().parent / "results" / "gate_power.json"
TOLERANCE = 0.02
ALPHA = 0.05


def outcome_rates(n: int, trials: int, drop: float, simulations: int, seed: int) -> dict[str, float]:
    """Shares of simulated suites judged fail / pass / inconclusive for one design and true drop."""
    rng = np.random.default_rng(seed)
    counts = {"fail": 0, "pass": 0, "inconclusive": 0}
    for _ in range(simulations):
        p = rng.beta(2, 2, n)[:, None]
        baseline = (rng.random((n, trials)) < p).mean(axis=1)
        candidate = (rng.random((n, trials)) < np.clip(p - drop, 0, 1)).mean(axis=1)
        result = margin_test(baseline, candidate, TOLERANCE, ALPHA, binary=trials == 1)
        if result.p_exceeds < ALPHA:
            counts["fail"] += 1
        elif result.p_within < ALPHA:
            counts["pass"] += 1
        else:
            counts["inconclusive"] += 1
    return {key: value / simulations for key, value in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=4000)
    args = parser.parse_args()
    rows = []
    print(
        f"{'instances':>9} {'trials':>6} | {'no change: fail':>15} | {'drop = tol: pass':>16} | 10-point drop: fail / inconclusive / pass"
    )
    for n in (20, 100, 1000):
        for trials in (1, 5):
            seed = n * 10 + trials
            same = outcome_rates(n, trials, 0.0, args.simulations, seed)
            boundary = outcome_rates(n, trials, TOLERANCE, args.simulations, seed + 1)
            drop = outcome_rates(n, trials, 0.10, args.simulations, seed + 2)
            rows.append(
                {
                    "instances": n,
                    "trials": trials,
                    "no_change": same,
                    "drop_at_tolerance": boundary,
                    "drop_10_points": drop,
                }
            )
            print(
                f"{n:>9} {trials:>6} | {same['fail']:>15.3f} | {boundary['pass']:>16.3f} | "
                f"{drop['fail']:.3f} / {drop['inconclusive']:.3f} / {drop['pass']:.3f}"
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"tolerance": TOLERANCE, "alpha": ALPHA, "simulations": args.simulations, "designs": rows}, indent=2)
    )
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
