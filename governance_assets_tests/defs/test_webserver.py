"""The Dagster webserver serves the code location on loopback; its GraphQL API lists our assets."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from governance_assets_tests.conftest import PROJECT_ROOT
from governance_assets_tests.dagster_dev import dagster_dev, terminate

pytestmark = pytest.mark.integration

QUERY = "{ assetNodes { assetKey { path } groupName hasAssetChecks } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(port: int, query: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_webserver_lists_asset_keys_over_graphql(tmp_path: Path) -> None:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    command = [
        sys.executable,
        "-m",
        "dagster_webserver",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        nodes = None
        while time.monotonic() < deadline and nodes is None:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "exited"
            try:
                nodes = _graphql(port, QUERY)["data"]["assetNodes"]
            except (OSError, KeyError, TypeError):
                time.sleep(1)
        assert nodes is not None, "webserver did not answer within 180 s"
        keys = {"/".join(node["assetKey"]["path"]): node for node in nodes}
        assert {"helm/runs", "helm/run_stats", "helm/instance_stats", "helm/predictions"} <= set(keys)
        assert keys["helm/run_stats"]["groupName"] == "helm" and keys["helm/run_stats"]["hasAssetChecks"]
    finally:
        terminate(server, timeout=30)


def _port_is_free(port: int) -> bool:
    """Nothing listens: a server may bind it again (closed connections may linger in TIME_WAIT)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("started_ignoring_sigint", [False, True], ids=["foreground", "background-job"])
def test_sigterm_to_cli_dev_stops_the_webserver_the_daemon_and_frees_the_port(
    tmp_path: Path, started_ignoring_sigint: bool
) -> None:
    """Also when started as a script's background job (SIGINT ignored): dagster dev still gets the
    SIGINT that stops it cleanly (exit 0, not the SIGKILL fallback)."""
    with dagster_dev(
        tmp_path / "governance",
        tmp_path / "dev.log",
        require_location=False,
        started_ignoring_sigint=started_ignoring_sigint,
    ) as server:
        children = server.descendants()
        commands = [" ".join(child.cmdline()) for child in children]
        assert any("dagster_webserver" in c or "dagster-webserver" in c for c in commands), commands
        assert any("dagster._daemon" in c or "dagster-daemon" in c for c in commands), "\n".join(commands)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=90) == 0, server.log.read_text()[-3000:]
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
        assert _port_is_free(server.port)
