"""Resources shared by every group: state paths and policy, the HELM runner, MLflow."""

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import dagster as dg
import yaml
from pydantic import PrivateAttr

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.lib.core.mlflow_record import EvaluationRecorder
from governance_assets.lib.core.policy import Policy, load_policy
from governance_assets.lib.core.secrets import redacting, redacting_errors
from governance_assets.lib.core.storage import governance_home, path_within
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.deployment.endpoints import EndpointError, prepare_local_path
from governance_assets.lib.deployment.services import MLFLOW_CLIENT_SETTINGS
from governance_assets.lib.deployment.shared_root import STEPS_SHARE_TAG, SharedRoot, SuiteExchange
from governance_assets.lib.helm import output as helm_output
from governance_assets.lib.helm import runner as helm_runner

POLICY = load_policy()
"""The policy loaded with the code location, for what is built at load time (gate checks, daily
partitions): a bad policy fails here, naming the field, before anything runs."""


class GovernanceState(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where state lives (GOVERNANCE_HOME), the historical HELM output roots, and the policy.

    With a shared root (GOVERNANCE_SHARED_ROOT), the process that runs a run's steps starts from the
    root's state of the run's suites (`setup_for_execution`), and the hooks of the suite assets
    (`defs.deployment.shared_state`) publish what each step that succeeded wrote (`publish_written`)
    and nothing a failed step wrote (`pass_over_written`)."""

    home: str = ""
    """State folder; empty means GOVERNANCE_HOME, else `.governance/` in the working directory."""
    output_roots: str = ""
    """Historical HELM output roots (os.pathsep-separated); empty means HELM_OUTPUT_ROOTS."""
    _exchange: SuiteExchange | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Before a run's steps in this process: its suites' state from the shared root, if any."""
        shared = SharedRoot.from_environment()
        if shared is None or context.dagster_run is None or context.instance is None:
            return  # the embedded default: nothing to do; or a sensor's or schedule's evaluation
        if STEPS_SHARE_TAG.items() <= context.dagster_run.tags.items():
            return  # a job whose steps pull and publish what they use themselves (helm_fan_out)
        suites = run_suites(context.dagster_run.tags, context.instance.get_dynamic_partitions(HELM_SUITES))
        if suites is None:
            return  # a run of another partitioning (traffic days): no suite's state
        self._exchange = SuiteExchange(shared, self.home_path(), suites)
        pulled = self._exchange.pull()
        if context.log is not None:
            context.log.info(
                f"{len(pulled)} file(s) of suite(s) {', '.join(suites) or 'all'} pulled from the shared root"
            )

    def publish_written(self) -> list[PurePosixPath]:
        """After a step succeeded: the files its suites' state gained or changed, to the shared root,
        with any an earlier step's hook could not publish (none without a shared root). No teardown
        retries them: a resource with a teardown must be opened as a context manager everywhere."""
        return self._exchange.publish_changes() if self._exchange is not None else []

    def pass_over_written(self) -> None:
        """After a step failed: what it wrote is not published, then or later."""
        if self._exchange is not None:
            self._exchange.pass_over_changes()

    def home_path(self) -> Path:
        return Path(self.home).absolute() if self.home else governance_home()

    def warehouse(self) -> Warehouse:
        return Warehouse(self.home_path() / "warehouse")

    def helm_output_path(self) -> Path:
        """The `benchmark_output` folder that this platform's own HELM runs go into."""
        return self.home_path() / "helm" / "benchmark_output"

    def helm_local_path(self) -> Path:
        """HELM's `--local-path`: its cache, credentials and model deployments."""
        return self.home_path() / "helm" / "prod_env"

    def traffic_landing_path(self) -> Path:
        """Where a serving system drops traffic files (JSON Lines, CSV, Parquet)."""
        return self.home_path() / "landing" / "traffic"

    def traffic_staging_path(self) -> Path:
        """Traffic sources parsed by the sensor, split by day (see `lib.traffic_intake`)."""
        return self.home_path() / "monitoring" / "staging" / "traffic"

    def sweep_output_path(self) -> Path:
        """Where finished sweep trials are moved (`iteration/sweep`): an output root of its own,
        read like a historical one, so a trial suite is ingested and judged but never re-run."""
        return self.home_path() / "iteration" / "sweeps"

    def historical_roots(self) -> list[Path]:
        """HELM_OUTPUT_ROOTS (or `output_roots`), and the sweep root once a sweep has written to it."""
        raw = self.output_roots or os.environ.get("HELM_OUTPUT_ROOTS", "")
        roots = [Path(part).absolute() for part in raw.split(os.pathsep) if part.strip()]
        return roots + ([self.sweep_output_path()] if self.sweep_output_path().is_dir() else [])

    def policy(self) -> Policy:
        """GOVERNANCE_POLICY, else the packaged default (the gate checks were built from it)."""
        return load_policy()

    def discover(self) -> helm_output.SuiteDiscovery:
        """Suites in the platform's own output and in every historical root."""
        return helm_output.discover_suites([self.helm_output_path(), *self.historical_roots()])

    def own_suite_dir(self, suite: str) -> Path:
        return path_within(self.helm_output_path() / "runs", suite, what="suite name")


def run_suites(tags: Mapping[str, str], known_suites: Sequence[str]) -> tuple[str, ...] | None:
    """The suites a run materialises, from its partition tags (a key or a range of the suites in
    the order they were added); () for an unpartitioned run, None for a run of other partitions."""
    if "dagster/partition" in tags:
        keys = [tags["dagster/partition"]]
    elif "dagster/asset_partition_range_start" in tags:
        start, end = tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]
        if start not in known_suites or end not in known_suites:
            return None
        keys = list(known_suites[known_suites.index(start) : known_suites.index(end) + 1])
    else:
        return ()
    return tuple(keys) if all(key in known_suites for key in keys) else None


class HelmRunner(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Runs `helm-run` for planned suites (the built-in `simple/model1` or any deployment in
    the local path's `model_deployments.yaml`)."""

    num_threads: int = 1
    plugins: list[str] = [
        "governance_assets.lib.compliance.bias_probe",
        "governance_assets.lib.iteration.labeled_scenario",
        "governance_assets.lib.feedback.scenario",
    ]
    """Python modules passed to HELM's `--plugins` (custom scenarios and run specs); the default
    registers `governance_bias_probe`, the bias probe of the default evaluation plan."""

    def local_deployments(self, state: GovernanceState) -> list[str]:
        """Model deployments configured in HELM's local path (model_deployments.yaml)."""
        path = state.helm_local_path() / "model_deployments.yaml"
        if not path.exists():
            return []
        document = yaml.safe_load(path.read_text("utf-8")) or {}
        return [str(d["name"]) for d in document.get("model_deployments", []) if isinstance(d, dict) and "name" in d]

    def run(
        self,
        entries: list[str],
        suite: str,
        state: GovernanceState,
        max_eval_instances: int,
        log: Callable[[str], None],
    ) -> list[helm_runner.EntryOutcome]:
        return helm_runner.run_entries(entries, suite, self.settings(state, max_eval_instances), log)

    def settings(self, state: GovernanceState, max_eval_instances: int) -> helm_runner.HelmSettings:
        """How `helm-run` is invoked for this platform's own suites; the policy's model endpoints
        (deployments, and keys from the environment) are written into HELM's local path first."""
        try:
            prepare_local_path(state.helm_local_path(), state.policy().endpoints)
        except EndpointError as error:
            raise dg.Failure(description=str(error)) from error
        return helm_runner.HelmSettings(
            output_path=state.helm_output_path(),
            local_path=state.helm_local_path(),
            max_eval_instances=max_eval_instances,
            num_train_trials=state.policy().evaluation_plan.num_train_trials,
            num_threads=self.num_threads,
            plugins=tuple(self.plugins),
        )


class MlflowTracking(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The MLflow tracking store. Credentials for a remote server come from MLflow's own
    environment variables (MLFLOW_TRACKING_TOKEN, …) and are never stored here."""

    tracking_uri: str = ""
    """Empty means MLFLOW_TRACKING_URI, else SQLite at `GOVERNANCE_HOME/mlflow/mlflow.db`."""
    artifact_root: str = ""
    """Empty means `GOVERNANCE_HOME/mlflow/artifacts`, or the server's own artifact store when the
    tracking URI is an MLflow server (http/https), so that workers on other machines can log too."""
    ui_url: str = "http://127.0.0.1:5000"

    def resolved_uri(self, state: GovernanceState) -> str:
        if self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):
            return self.tracking_uri or os.environ["MLFLOW_TRACKING_URI"]
        folder = state.home_path() / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    def recorder(self, state: GovernanceState, experiment: str) -> EvaluationRecorder:
        """The experiment's recorder; its errors, which may quote the tracking URI, are redacted."""
        uri = self.resolved_uri(state)
        if uri.startswith(("http://", "https://")):  # fail within seconds, not minutes, when it is down
            for name, value in MLFLOW_CLIENT_SETTINGS.items():
                os.environ.setdefault(name, value)
        create = redacting(EvaluationRecorder)
        return redacting_errors(create(uri, self._artifact_root(uri, state), experiment, state.home_path() / "locks"))

    def _artifact_root(self, uri: str, state: GovernanceState) -> Path | None:
        if self.artifact_root:
            return Path(self.artifact_root).absolute()
        if uri.startswith(("http://", "https://")):
            return None
        return (state.home_path() / "mlflow" / "artifacts").absolute()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "state": GovernanceState(),
            "helm": HelmRunner(),
            "mlflow": MlflowTracking(),
        }
    )
