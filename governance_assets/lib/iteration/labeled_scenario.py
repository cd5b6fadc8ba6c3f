"""A HELM plugin (`helm-run --plugins governance_assets.lib.iteration.labeled_scenario`): the
scenario `governance_labeled`, a version of the dataset people labelled from the labelling queue
(GOVERNANCE_HOME/iteration/scenarios/labeled/v<N>.jsonl), each item's label its correct
reference. Run entry: `governance_labeled:version=N` (the model after a comma, as usual)."""

from __future__ import annotations

from helm.benchmark.adaptation.common_adapter_specs import get_generation_adapter_spec
from helm.benchmark.metrics.common_metric_specs import get_exact_match_metric_specs
from helm.benchmark.run_spec import RunSpec, run_spec_function
from helm.benchmark.scenarios.scenario import (
    CORRECT_TAG,
    TEST_SPLIT,
    Input,
    Instance,
    Output,
    Reference,
    Scenario,
    ScenarioSpec,
)

from governance_assets.lib.core.storage import governance_home
from governance_assets.lib.iteration.labeling import labelled_instances

DATASET = ("iteration", "scenarios", "labeled")
"""The dataset's folder under GOVERNANCE_HOME."""


class GovernanceLabeledScenario(Scenario):
    """Items from the labelling queue with the label a person gave them as the correct output."""

    name = "governance_labeled"
    description = "Instances chosen by active learning and labelled by people; sub_split is the task they came from."
    tags = ["labeled", "active_learning"]

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = int(version)

    def get_instances(self, output_path: str) -> list[Instance]:
        folder = governance_home().joinpath(*DATASET)
        return [
            Instance(
                input=Input(text=item["input"]),
                references=[Reference(Output(text=item["label"]), tags=[CORRECT_TAG])],
                split=TEST_SPLIT,
                sub_split=item.get("task") or None,
                id=f"label_{item['item_id']}",
            )
            for item in labelled_instances(folder, self.version)
        ]


@run_spec_function("governance_labeled")
def get_governance_labeled_spec(version: str = "1") -> RunSpec:
    """Generation judged by exact match on one version of the labelled dataset."""
    scenario_spec = ScenarioSpec(class_name=f"{__name__}.GovernanceLabeledScenario", args={"version": int(version)})
    return RunSpec(
        name=f"governance_labeled:version={version}",
        scenario_spec=scenario_spec,
        adapter_spec=get_generation_adapter_spec(max_train_instances=0, max_tokens=20),
        metric_specs=get_exact_match_metric_specs(),
        groups=["governance_labeled"],
    )
