"""The Dagster UI in a real browser: headless Chromium (Debian's package, driven by Playwright
through its executable path) against `cli dev` on a free loopback port, with screenshots kept as
test artefacts."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from governance_assets.defs.resources import GovernanceState, HelmRunner, MlflowTracking
from governance_assets.lib.core.policy import load_policy
from governance_assets_tests.conftest import MMLU_ROOT, PROJECT_ROOT, copy_suite, governance_defs
from governance_assets_tests.dagster_dev import DevServer, dagster_dev
from governance_assets_tests.http_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SCREENSHOTS = Path(os.environ.get("UI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "governance_assets_ui")
"""Where the screenshots go (UI_SCREENSHOTS, else a folder in the temporary directory)."""
GATE = "exact_match_perfect"
POLICY = f"""evaluation_plan: {{run_entries: [simple1], models: [simple/model1]}}
gates:
  - name: {GATE}
    kind: threshold
    description: Test-split exact match of every run is at least 0.999.
    metrics: [exact_match]
    split: test
    min: 0.999
    severity: error
"""
TIMEOUT_MS = 90_000
DAEMON_SECRETS = ("lineagePath-5eb1a7", "lineageQuery-0c4fe2", "lineageKey-77d1e0", "hookPath-a11ce5")


def _chromium() -> str:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")


def _wait_for_http(url: str, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def mlflow_ui(tmp_path: Path) -> Iterator[str]:
    """MLflow's UI on a free loopback port over the test's store."""
    port = free_port()
    store = tmp_path / "governance" / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{store}"]
    with (tmp_path / "mlflow.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/health", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture
def evaluated_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_ui: str) -> Path:
    """GOVERNANCE_HOME with a historical suite ingested and judged (one gate fails), recorded in
    the instance that `cli dev` then serves, as if its discovery sensor had asked for it; the
    OpenLineage endpoint and the alert webhook are unreachable URLs holding secrets."""
    home = tmp_path / "governance"
    roots = tmp_path / "roots"
    copy_suite(MMLU_ROOT / "runs" / "v1", roots, "v1", runs=2)
    (tmp_path / "policy.yaml").write_text(POLICY)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    dead = f"http://127.0.0.1:{free_port()}"
    for name, value in {
        "GOVERNANCE_POLICY": str(tmp_path / "policy.yaml"),
        "HELM_OUTPUT_ROOTS": str(roots),
        "DAGSTER_HOME": str(dagster_home),
        # The daemon's sensors meet unreachable endpoints with secrets in their URLs: their errors
        # land in its log and tick storage, which the test greps.
        "OPENLINEAGE_URL": f"{dead}/{DAEMON_SECRETS[0]}?api_key={DAEMON_SECRETS[1]}",
        "OPENLINEAGE_API_KEY": DAEMON_SECRETS[2],
        "GOVERNANCE_ALERT_WEBHOOK_URL": f"{dead}/services/{DAEMON_SECRETS[3]}",
    }.items():
        monkeypatch.setenv(name, value)
    resources = {
        "state": GovernanceState(home=str(home), output_roots=str(roots)),
        "helm": HelmRunner(),
        "mlflow": MlflowTracking(ui_url=mlflow_ui),
    }
    keys = [("helm", "runs"), ("helm", "run_stats"), ("helm", "instance_stats"), ("helm", "predictions")]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("helm_suites", ["v1"])
        result = dg.materialize(
            governance_defs(load_policy()),
            selection=[dg.AssetKey(list(key)) for key in [*keys, ("gates", "verdicts")]],
            partition_key="v1",
            instance=instance,
            resources=resources,
            tags={"dagster/sensor_name": "helm_suite_discovery", "dagster/run_key": "ingest:v1"},
            raise_on_error=False,
        )
    assert [e.passed for e in result.get_asset_check_evaluations() if e.check_name == GATE] == [False]
    return home


def _shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _suite_runs(server: DevServer) -> dict[str, str]:
    """Run id -> status of every run of partition v1."""
    query = """{ runsOrError(filter: {tags: [{key: "dagster/partition", value: "v1"}]}) {
      ... on Runs { results { runId status } } } }"""
    return {run["runId"]: run["status"] for run in server.graphql(query)["runsOrError"]["results"]}


def test_the_ui_shows_groups_runs_a_materialisation_shows_a_failed_gate_and_links_to_mlflow_runs(
    evaluated_suite: Path, tmp_path: Path
) -> None:
    groups = sorted(set(_defined_groups()))
    with (
        dagster_dev(evaluated_suite, tmp_path / "dev.log") as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)  # the machine is shared: pages may render slowly

        # The asset graph shows every group.
        page.goto(f"{server.url}/asset-groups")
        graph = page.locator("main, body").first
        for group in groups:
            expect(graph.get_by_text(group, exact=True).first).to_be_visible()
        _shot(page, "01-asset-graph")

        # A materialisation launched from the UI succeeds.
        page.goto(f"{server.url}/assets/helm/runs")
        page.get_by_role("button", name="Materialize…").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="All", exact=True).click()
        expect(dialog.get_by_text("1 partition", exact=False).first).to_be_visible()
        _shot(page, "02-materialize-dialog")
        before = set(_suite_runs(server))
        dialog.get_by_role("button", name="Launch 1 run").click()
        deadline = time.monotonic() + 300
        launched: dict[str, str] = {}
        while time.monotonic() < deadline:
            launched = {run: status for run, status in _suite_runs(server).items() if run not in before}
            if launched and set(launched.values()) <= {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(2)
        assert list(launched.values()) == ["SUCCESS"], launched
        page.goto(f"{server.url}/runs/{next(iter(launched))}")
        expect(page.get_by_text("Success").first).to_be_visible()
        _shot(page, "03-ui-run-succeeded")

        # A failed gate is visible with its reason on the asset's checks tab.
        page.goto(f"{server.url}/assets/gates/verdicts?view=checks")
        page.get_by_text(GATE, exact=True).first.click()
        page.get_by_role("tab", name="Execution history").click()
        expect(page.get_by_text("Failed").first).to_be_visible()
        expect(page.get_by_text("exact_match 0.", exact=False).first).to_be_visible()
        expect(page.get_by_text("not >= 0.999", exact=False).first).to_be_visible()
        _shot(page, "04-failed-gate")

        # The MLflow link opens the experiment's runs list.
        page.goto(f"{server.url}/assets/helm/run_stats?view=events")
        link = page.locator("a[href*='#/experiments/']").first
        href = link.get_attribute("href")
        assert href is not None and href.endswith("/runs"), href
        page.goto(href)
        expect(page.get_by_text("v1/", exact=False).first).to_be_visible()
        expect(page.get_by_text("2 matching runs")).to_be_visible()  # one per HELM run of the suite
        _shot(page, "05-mlflow-runs")
        browser.close()
        log = server.log.read_text(errors="replace")
    # The webserver's and daemon's log stays quiet: no code-location name mismatch on every load,
    # no deprecated event-log query on every sensor tick.
    assert "does not match the name" not in log
    assert "instead of get_event_records" not in log
    assert "for sensor: openlineage_events" in log  # the daemon did tick the sensor that used to warn
    assert "OpenLineageTransportError" in log  # ... and met the unreachable endpoint
    stores = [path for path in evaluated_suite.rglob("*") if path.is_file()] + [tmp_path / "dev.log"]
    assert any(path.name == "schedules.db" for path in stores)  # the daemon's tick storage
    leaks = [
        f"{path}: {secret}" for path in stores for secret in DAEMON_SECRETS if secret.encode() in path.read_bytes()
    ]
    assert leaks == []


def _defined_groups() -> list[str]:
    from governance_assets.definitions import defs

    definitions = defs()
    return [
        asset.group_names_by_key[key]
        for asset in definitions.assets or []
        if isinstance(asset, dg.AssetsDefinition)
        for key in asset.keys
    ]
