"""What the gates take from compliance before the release decision: contamination flags,
fairness checks and reviewer waivers, applied to a suite's verdict rows."""

from datetime import UTC, datetime
from typing import Any

import pandas as pd

from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.compliance import evidence
from governance_assets.lib.compliance.contamination import load_points
from governance_assets.lib.compliance.waivers import active_waivers, load_waivers

BIAS_FAIRNESS_KEY = ("compliance", "bias_fairness")


def amend_suite_verdicts(
    state: GovernanceState, suite: str, runs: pd.DataFrame, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The suite's verdict rows with contamination rows and flags, the fairness limits judged by
    the suite's latest `compliance/bias_fairness` (when built), and active waivers applied."""
    settings = state.policy().compliance
    folder = evidence.policy_folder()
    points = load_points([folder / name for name in settings.contamination_files])
    waivers = active_waivers(load_waivers(folder / settings.waivers_file), suite, datetime.now(UTC))
    fairness = state.warehouse().read(BIAS_FAIRNESS_KEY, suite)
    return evidence.amend_verdicts(
        rows,
        evidence.contamination_by_model(runs, points),
        fairness.to_pandas() if fairness is not None else None,
        settings,
        waivers,
    )
