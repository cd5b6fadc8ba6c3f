"""The sweeps' Optuna study in the deployment's PostgreSQL: the team environment names it
(OPTUNA_STORAGE_URL, the `optuna` database), and two sweeps of one study started at once (two
processes, real helm-run trials) leave one set of trials there, none run twice."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from governance_assets.defs.iteration.sweep import storage_url
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.deployment import services
from governance_assets.lib.iteration import sweep
from governance_assets.lib.iteration.settings import SearchParameter, SweepSettings
from governance_assets_tests.deployment.conftest import requires_servers

pytestmark = [pytest.mark.integration, requires_servers]

STUDY = "team-adapter"
SETTINGS = SweepSettings(
    study=STUDY,
    run_entries=["simple_mcqa"],
    models=["simple/model1"],
    search_space={"max_train_instances": SearchParameter(kind="int", low=0, high=2)},
    n_trials=2,
    max_eval_instances=4,
)
SWEEP_TIMEOUT_SECONDS = 900


def _sweep(home: str) -> str:
    """One sweep of the study (in its own process): `trials <numbers>`, or `busy` if another runs it."""
    state = GovernanceState(home=home)
    base = state.home_path() / "iteration"
    paths = sweep.SweepPaths(base / "scratch", base / "staging", state.sweep_output_path(), state.helm_local_path())
    try:
        study = sweep.run_sweep(
            SETTINGS, ["simple_mcqa"], ["simple/model1"], storage_url(state), paths, Warehouse(Path(home) / "warehouse")
        )
    except sweep.StudyBusy:
        return "busy"
    return f"trials {sorted(t.number for t in study.get_trials(deepcopy=False))}"


def _stored_trials(deployment: services.Deployment, password: str) -> list[tuple[int, str, str]]:
    """(number, state, params) of the study's trials, read from PostgreSQL with SQL, not Optuna."""
    connection = services.connect_postgres(deployment, password, "optuna")
    try:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(
                "SELECT t.number, t.state, string_agg(p.param_name || '=' || p.param_value, ',') "
                "FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "LEFT JOIN trial_params p ON p.trial_id = t.trial_id "
                "WHERE s.study_name = %s GROUP BY t.number, t.state ORDER BY t.number",
                (STUDY,),
            )
            return [(int(number), str(state), str(params)) for number, state, params in cursor.fetchall()]
    finally:
        connection.close()  # type: ignore[attr-defined]


def test_two_sweeps_of_one_study_store_one_set_of_trials_in_postgres(postgres: services.Deployment) -> None:
    password = services.passwords(postgres.root)["GOVERNANCE_PG_PASSWORD"]
    home = postgres.home / "sweeps"
    assert storage_url(GovernanceState(home=str(home))) == postgres.optuna_storage_url(password)

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        concurrent = [pool.submit(_sweep, str(home)) for _ in range(2)]
        outcomes = sorted(future.result(SWEEP_TIMEOUT_SECONDS) for future in concurrent)

    assert outcomes == ["busy", "trials [0, 1]"]  # the second found the study taken and ran nothing
    stored = _stored_trials(postgres, password)
    assert [number for number, _, _ in stored] == [0, 1]
    assert all(state in ("COMPLETE", "PRUNED") for _, state, _ in stored)
    assert not (home / "iteration" / "optuna.db").exists()  # not SQLite
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert (
            pool.submit(_sweep, str(home)).result(SWEEP_TIMEOUT_SECONDS) == "trials [0, 1]"
        )  # resumed: nothing to add
    assert _stored_trials(postgres, password) == stored
