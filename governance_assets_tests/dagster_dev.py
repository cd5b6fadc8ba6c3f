"""`python -m governance_assets.cli dev` started for a test on a free loopback port, with its log."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from governance_assets_tests.conftest import PROJECT_ROOT
from governance_assets_tests.http_server import free_port

STARTUP_SECONDS = 240


@dataclass
class DevServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
        assert "errors" not in answer, answer
        return answer["data"]  # type: ignore[no-any-return]

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _wait_until_serving(server: DevServer, require_location: bool) -> None:
    """Until the webserver answers and the code location has loaded (fails at once on a load error)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text(errors="replace")[-4000:]
        try:
            entries = server.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
        except (OSError, KeyError, TypeError):
            entries = []
        loaded = [entry for entry in entries if entry["loadStatus"] == "LOADED"]
        if loaded and not require_location:
            return
        for entry in loaded:
            error = entry["locationOrLoadError"]
            assert error["__typename"] != "PythonError", f"code location {entry['name']}: {error['message']}"
            return
        time.sleep(1)
    raise AssertionError(f"dagster dev did not serve within {STARTUP_SECONDS} s:\n{server.log.read_text()[-4000:]}")


@contextmanager
def dagster_dev(
    home: Path,
    log: Path,
    env: dict[str, str] | None = None,
    require_location: bool = True,
    started_ignoring_sigint: bool = False,
) -> Iterator[DevServer]:
    """The CLI's `dev` serving the code location on a free loopback port; stopped (and anything
    left of it killed) on exit. `started_ignoring_sigint` starts it as a shell script's background
    job is started: with SIGINT ignored."""
    port = free_port()
    environment = {**os.environ, "GOVERNANCE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), **(env or {})}
    command = [sys.executable, "-m", "governance_assets.cli", "dev", "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if started_ignoring_sigint else None,
        )
    server = DevServer(process, port, log)
    try:
        _wait_until_serving(server, require_location)
        yield server
    finally:
        left = server.descendants()
        terminate(process, timeout=60)
        for child in left:
            if child.is_running():
                child.kill()
