"""The guided sweep: an Optuna study whose trials are real HELM suites of the platform."""

import io
import json
import os
from typing import Any

import dagster as dg
import matplotlib
import optuna

from governance_assets.defs.metadata import embedded_png
from governance_assets.defs.partitions import OWNERS, helm_suites
from governance_assets.defs.resources import GovernanceState, HelmRunner, MlflowTracking
from governance_assets.lib.core.code_version import source_digest
from governance_assets.lib.core.mlflow_record import run_url
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.iteration import sweep

matplotlib.use("Agg")

SWEEP_KEY = ("iteration", "sweep")


def _png(name: str, figure_axes: Any) -> dg.MetadataValue:  # type: ignore[type-arg]
    """An Optuna matplotlib plot embedded in the metadata."""
    figure = figure_axes.get_figure() if hasattr(figure_axes, "get_figure") else figure_axes
    buffer = io.BytesIO()
    figure.set_size_inches(8, 4)
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    matplotlib.pyplot.close(figure)
    return embedded_png(name, buffer.getvalue())


def storage_url(state: GovernanceState) -> str:
    """The study's RDB store: the URL in the policy's variable (the deployment's PostgreSQL), else
    SQLite under GOVERNANCE_HOME/iteration."""
    variable = state.policy().iteration.sweep.storage_env
    if variable and os.environ.get(variable):
        return os.environ[variable]
    path = state.home_path() / "iteration" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def sweep_paths(state: GovernanceState, helm: HelmRunner) -> sweep.SweepPaths:
    base = state.home_path() / "iteration"
    return sweep.SweepPaths(
        base / "scratch", base / "staging", state.sweep_output_path(), state.helm_local_path(), tuple(helm.plugins)
    )


@dg.asset(
    key=dg.AssetKey(list(SWEEP_KEY)),
    group_name="iteration",
    kinds={"optuna", "helm", "mlflow"},
    owners=OWNERS,
    code_version=source_digest(__name__),
)
def iteration_sweep(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking, helm: HelmRunner
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """An Optuna study over HELM adapter settings (policy iteration.sweep); each trial is a real HELM
    suite (a helm_suites partition) and an MLflow child run; the best setting is proposed, never applied."""
    policy = state.policy()
    settings, plan = policy.iteration.sweep, policy.evaluation_plan
    recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
    client = recorder.client
    parent_tags = {"governance.study": settings.study, "dagster.asset_key": "iteration/sweep"}
    found = client.search_runs(
        [recorder.experiment_id], f"tags.`governance.study` = '{settings.study}' and tags.`governance.role` = 'study'"
    )
    parent = (
        found[0].info.run_id
        if found
        else client.create_run(
            recorder.experiment_id,
            tags={**parent_tags, "governance.role": "study", "mlflow.runName": f"study {settings.study}"},
        ).info.run_id
    )

    def record(trial: optuna.trial.FrozenTrial) -> None:
        suite = str(trial.user_attrs.get("suite", ""))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            context.instance.add_dynamic_partitions(helm_suites.name, [suite])
        child = client.create_run(
            recorder.experiment_id,
            tags={
                **parent_tags,
                "mlflow.parentRunId": parent,
                "mlflow.runName": f"trial {trial.number}",
                "governance.suite": suite,
                "governance.trial_state": trial.state.name,
                "dagster.run_id": context.run.run_id,
            },
        ).info.run_id
        for name, value in trial.params.items():
            client.log_param(child, name, value)
        if trial.value is not None:
            client.log_metric(child, settings.objective.metric, trial.value)
        client.set_terminated(child)

    study = sweep.run_sweep(
        settings,
        settings.run_entries or plan.run_entries,
        settings.models or plan.models,
        storage_url(state),
        sweep_paths(state, helm),
        state.warehouse(),
        record,
        context.log.info,
        policy.compliance,
    )
    completed = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    rows = [
        {
            "trial": t.number,
            "state": t.state.name,
            "value": t.value,
            "suite": t.user_attrs.get("suite"),
            "feasible": all(c <= 0 for c in t.constraints.values()) if t.constraints else None,
            "fairness_gap": t.user_attrs.get("fairness_gap"),
            **t.params,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    metadata: dict[str, Any] = {
        "trials_complete": len(completed),
        "trials_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.get_trials(deepcopy=False)),
        "trials": dg.MetadataValue.json(rows),
        "mlflow_study_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, parent)),
    }
    best = sweep.best_feasible(study)
    if completed and best is None:
        metadata["proposal"] = dg.MetadataValue.md(
            f"# Sweep {settings.study}\n\nNo trial met the constraints; nothing is proposed."
        )
    if best is not None:
        entries = sweep.trial_entries(
            settings.run_entries or plan.run_entries, settings.models or plan.models, best.params
        )
        proposal = (
            f"# Sweep {settings.study}: proposed evaluation-plan change\n\n"
            f"Best {settings.objective.metric} ({settings.objective.direction}): {best.value:.4f} in trial {best.number} "
            f"(suite {best.user_attrs.get('suite')}), settings {json.dumps(best.params)}"
            + (
                f"; its fairness gap {best.user_attrs['fairness_gap']:.3f} is within {settings.max_fairness_gap}"
                if "fairness_gap" in best.user_attrs
                else ""
            )
            + " (trials that break a constraint are never proposed).\n\n"
            "Not applied: to evaluate with these settings, use these run entries in the policy's evaluation_plan "
            "(the settings are HELM run-expander arguments):\n\n" + "\n".join(f"- `{e}`" for e in entries) + "\n"
        )
        report = state.home_path() / "reports" / "iteration" / f"sweep-{settings.study}.md"
        write_text_atomic(report, proposal)
        metadata |= {
            "best_value": float(best.value or 0.0),
            "best_params": json.dumps(best.params),
            "best_suite": str(best.user_attrs.get("suite")),
            "proposal": dg.MetadataValue.md(proposal),
            "optimization_history": _png(
                "optimization history", optuna.visualization.matplotlib.plot_optimization_history(study)
            ),
        }
        if len(completed) >= 2 and len(settings.search_space) >= 1:
            try:
                metadata["param_importances"] = _png(
                    "parameter importances", optuna.visualization.matplotlib.plot_param_importances(study)
                )
            except (RuntimeError, ValueError) as error:  # e.g. every trial scored the same
                metadata["param_importances"] = f"not computed: {error}"
    return dg.MaterializeResult(metadata=metadata)


sweep_adapter_settings = dg.define_asset_job(
    "sweep_adapter_settings",
    selection=dg.AssetSelection.assets(list(SWEEP_KEY)),
    description="Run (or resume) the policy's guided sweep; its trial suites are then ingested and judged like any suite.",
)
