"""The sweeps' Optuna study in the deployment's PostgreSQL: the team environment names it
(OPTUNA_STORAGE_URL, the `optuna` database), and two sweeps of one study started at once on two
"machines" (two processes with homes of their own, real helm-run trials) leave one set of trials
there, none run twice: the study's lock is an advisory lock in PostgreSQL, not a local file."""

import multiprocessing
import signal
import subprocess
import sys
import time
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


def test_the_study_lock_lives_in_postgres_and_dies_with_its_holder(postgres: services.Deployment) -> None:
    url = postgres.optuna_storage_url(services.passwords(postgres.root)["GOVERNANCE_PG_PASSWORD"])
    with sweep.database_study_lock(url, "locked"):
        with (
            pytest.raises(sweep.StudyBusy, match="held by another sweep") as busy,
            sweep.database_study_lock(url, "locked"),
        ):
            pass
        assert services.passwords(postgres.root)["GOVERNANCE_PG_PASSWORD"] not in str(busy.value)
        with sweep.database_study_lock(url, "another study"):
            pass
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, url], stdout=subprocess.PIPE, text=True
    )  # a sweep's process, killed while it holds the study
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(sweep.StudyBusy), sweep.database_study_lock(url, "locked"):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    finally:
        holder.kill()
    for _ in range(50):  # PostgreSQL ends the dead session's backend when it sees the closed socket
        try:
            with sweep.database_study_lock(url, "locked"):
                break
        except sweep.StudyBusy:
            time.sleep(0.2)
    else:
        pytest.fail("the killed holder's lock was not freed")


HOLD_LOCK = """
import sys, time
from governance_assets.lib.iteration import sweep
with sweep.database_study_lock(sys.argv[1], "locked"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_two_sweeps_of_one_study_store_one_set_of_trials_in_postgres(postgres: services.Deployment) -> None:
    password = services.passwords(postgres.root)["GOVERNANCE_PG_PASSWORD"]
    homes = [postgres.home / "sweeps-a", postgres.home / "sweeps-b"]  # two machines' disks
    assert storage_url(GovernanceState(home=str(homes[0]))) == postgres.optuna_storage_url(password)

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        concurrent = [pool.submit(_sweep, str(home)) for home in homes]
        outcomes = sorted(future.result(SWEEP_TIMEOUT_SECONDS) for future in concurrent)

    assert outcomes == ["busy", "trials [0, 1]"]  # the second found the study taken and ran nothing
    stored = _stored_trials(postgres, password)
    assert [number for number, _, _ in stored] == [0, 1]
    assert all(state in ("COMPLETE", "PRUNED") for _, state, _ in stored)
    assert not any((home / "iteration" / "optuna.db").exists() for home in homes)  # not SQLite
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert (
            pool.submit(_sweep, str(homes[1])).result(SWEEP_TIMEOUT_SECONDS) == "trials [0, 1]"
        )  # resumed: nothing to add
    assert _stored_trials(postgres, password) == stored
