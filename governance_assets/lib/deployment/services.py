"""Starting and stopping the team deployment's services on 127.0.0.1, their state under
`GOVERNANCE_HOME/services/`: PostgreSQL (Dagster's storage and MLflow's backend store), Redis
(the Celery broker), an MLflow tracking server and Celery workers.

Passwords come from the environment (`GOVERNANCE_PG_PASSWORD`, `GOVERNANCE_REDIS_PASSWORD`); when
unset, the first start generates them into `services/secrets.json` (owner-only) and later starts
read them back. They are passed to the servers through files and environment variables, never on
a command line and never in a log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.deployment.shared_root import SHARED_ROOT_VARIABLE
from governance_assets.lib.helm.runner import helm_environment

LOOPBACK = "127.0.0.1"
DATABASE_USER = "governance"
DATABASES = ("dagster", "mlflow", "optuna")
SECRET_VARIABLES = ("GOVERNANCE_PG_PASSWORD", "GOVERNANCE_REDIS_PASSWORD")
OPTUNA_STORAGE_VARIABLE = "OPTUNA_STORAGE_URL"
"""Where the policy's sweeps (iteration.sweep.storage_env) find their RDB store."""
DEFAULT_PORTS = {"postgres": 55432, "redis": 56379, "mlflow": 5000}
PORT_VARIABLES = {
    "postgres": "GOVERNANCE_PG_PORT",
    "redis": "GOVERNANCE_REDIS_PORT",
    "mlflow": "GOVERNANCE_MLFLOW_PORT",
}
POSTGRES_SERVICE_USER = "postgres"
"""PostgreSQL refuses to run as root: as root, its cluster is created and run as this user."""
MLFLOW_CLIENT_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
"""Bounded retries against the MLflow server: a server that is down fails a request after
3 attempts of at most 10 s with 1 s + 2 s back-off (MLflow's defaults: 7 retries, 120 s timeout)."""
STOP_GRACE_SECONDS = 20.0
PG_CTL_TIMEOUT_SECONDS = 60
PG_CTL_WAIT = str(PG_CTL_TIMEOUT_SECONDS)
"""`pg_ctl -w -t`: how long start, restart and stop wait for the server."""
TEAM_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "dagster-team.yaml"
"""The Dagster instance settings of the team deployment (PostgreSQL storage, pools)."""
CELERY_SETTINGS = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}
"""Celery settings shared by the executor and the workers: a task is acknowledged only when its
step has finished, and a worker process that dies mid-step hands it back to the queue, so that
another worker runs the step again."""


class ServiceError(RuntimeError):
    """A service that could not be started or stopped, with the reason and where its log is."""


@dataclass(frozen=True)
class ServicePorts:
    """Loopback ports of the servers."""

    postgres: int
    redis: int
    mlflow: int

    @classmethod
    def from_environment(cls) -> ServicePorts:
        """GOVERNANCE_PG_PORT, GOVERNANCE_REDIS_PORT, GOVERNANCE_MLFLOW_PORT, else the defaults."""
        return cls(**{name: int(os.environ.get(PORT_VARIABLES[name]) or port) for name, port in DEFAULT_PORTS.items()})


@dataclass(frozen=True)
class ServiceProcess:
    """A process started by `services up` (its process group is its own)."""

    name: str
    pid: int


@dataclass(frozen=True)
class Deployment:
    """Where the deployment keeps its state and which ports it listens on."""

    home: Path
    ports: ServicePorts
    workers: int = 2
    processes: tuple[ServiceProcess, ...] = field(default=())
    shared_root: str = ""
    """GOVERNANCE_SHARED_ROOT when the services were started (a URL or a shared volume's path):
    the MLflow server stores its artifacts there, and the workers share suites through it."""

    @property
    def root(self) -> Path:
        return self.home / "services"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def dagster_home(self) -> Path:
        """The team instance's DAGSTER_HOME (the embedded one stays in `dagster/`)."""
        return self.home / "dagster-team"

    @property
    def mlflow_artifacts(self) -> Path:
        """Where the MLflow server stores artifacts (served to clients over HTTP)."""
        return self.home / "mlflow" / "server-artifacts"

    def mlflow_artifacts_destination(self) -> str:
        """`<shared root>/mlflow/artifacts` when there is a shared root, else `mlflow_artifacts`."""
        if not self.shared_root:
            return str(self.mlflow_artifacts)
        if "://" in self.shared_root:
            return f"{self.shared_root.rstrip('/')}/mlflow/artifacts"
        return str(Path(self.shared_root).absolute() / "mlflow" / "artifacts")

    @property
    def mlflow_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.mlflow}"

    def optuna_storage_url(self, password: str) -> str:
        """The sweeps' Optuna study store: the `optuna` database (a secret: the URL holds the password)."""
        credentials = f"{DATABASE_USER}:{urllib.parse.quote(password, safe='')}"
        return f"postgresql+psycopg2://{credentials}@{LOOPBACK}:{self.ports.postgres}/optuna"

    def environment(self, passwords: Mapping[str, str]) -> dict[str, str]:
        """Variables that point Dagster, Celery and MLflow clients at this deployment."""
        redis = f"redis://:{passwords['GOVERNANCE_REDIS_PASSWORD']}@{LOOPBACK}:{self.ports.redis}"
        return {
            "GOVERNANCE_DEPLOYMENT": "team",
            "GOVERNANCE_HOME": str(self.home),
            "DAGSTER_HOME": str(self.dagster_home),
            "GOVERNANCE_PG_HOST": LOOPBACK,
            "GOVERNANCE_PG_PORT": str(self.ports.postgres),
            "GOVERNANCE_PG_USER": DATABASE_USER,
            "GOVERNANCE_PG_PASSWORD": passwords["GOVERNANCE_PG_PASSWORD"],
            "GOVERNANCE_CELERY_BROKER": f"{redis}/0",
            "GOVERNANCE_CELERY_BACKEND": f"{redis}/1",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            OPTUNA_STORAGE_VARIABLE: self.optuna_storage_url(passwords["GOVERNANCE_PG_PASSWORD"]),
            **MLFLOW_CLIENT_SETTINGS,
            **({SHARED_ROOT_VARIABLE: self.shared_root} if self.shared_root else {}),
        }

    def record_path(self) -> Path:
        return self.root / "deployment.json"

    def save(self) -> None:
        document = {
            "ports": asdict(self.ports),
            "workers": self.workers,
            "processes": [asdict(p) for p in self.processes],
            "shared_root": self.shared_root,
        }
        write_text_atomic(self.record_path(), json.dumps(document, indent=2))

    @classmethod
    def load(cls, home: Path) -> Deployment | None:
        """The deployment recorded under `home` by `services up`, if any."""
        path = home / "services" / "deployment.json"
        if not path.exists():
            return None
        document = json.loads(path.read_text("utf-8"))
        return cls(
            home=home,
            ports=ServicePorts(**document["ports"]),
            workers=int(document["workers"]),
            processes=tuple(ServiceProcess(**p) for p in document["processes"]),
            shared_root=str(document.get("shared_root", "")),
        )


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def passwords(root: Path) -> dict[str, str]:
    """The services' passwords: from the environment, else generated once into `secrets.json`."""
    path = root / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text("utf-8")) if path.exists() else {}
    values = {name: os.environ.get(name) or stored.get(name) or secrets.token_urlsafe(24) for name in SECRET_VARIABLES}
    generated = {name: values[name] for name in SECRET_VARIABLES if not os.environ.get(name)}
    if generated != stored and generated:
        root.mkdir(parents=True, exist_ok=True)
        _write_private(path, json.dumps(generated))
    return values


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write `text` readable by its owner only (created 0600, then renamed into place)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    if owner is not None:
        shutil.chown(temporary, owner, owner)
    temporary.replace(path)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _postgres_user() -> str | None:
    return POSTGRES_SERVICE_USER if _running_as_root() else None


def _postgres_binary(name: str) -> str:
    """`initdb`, `pg_ctl`: from PATH, else Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise ServiceError(f"PostgreSQL's {name} was not found (install the Debian package `postgresql`)")


def missing_binaries() -> list[str]:
    """The server programs this machine lacks (the integration tests skip, naming them)."""
    missing = [name for name in ("redis-server",) if shutil.which(name) is None]
    for name in ("initdb", "pg_ctl"):
        try:
            _postgres_binary(name)
        except ServiceError:
            missing.append(name)
    return missing


def _as_service_user(command: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
    """Run a PostgreSQL program (as its service user when we are root), its output appended to
    `log`, killed after `PG_CTL_TIMEOUT_SECONDS` + 30 s at most. The output goes to a file, not a
    pipe: a server that `pg_ctl` starts inherits it, and a pipe would then never reach its end."""
    user = _postgres_user()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        offset = handle.tell()
        try:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                user=user,
                group=user,
                extra_groups=[] if user else None,
                check=False,
                timeout=PG_CTL_TIMEOUT_SECONDS + 30,
            )
        except subprocess.TimeoutExpired as timeout:
            raise ServiceError(
                f"{Path(command[0]).name} did not return within {timeout.timeout:.0f} s (log: {log})"
            ) from None
    if completed.returncode != 0:
        with log.open("rb") as handle:
            handle.seek(offset)
            output = handle.read().decode("utf-8", errors="replace")
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ServiceError(f"{Path(command[0]).name} exited {completed.returncode}: {tail} (log: {log})")


def _check_traversable(folder: Path) -> None:
    """The PostgreSQL service user must be able to reach its data folder."""
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise ServiceError(
                f"{parent} is not searchable by other users (mode {oct(parent.stat().st_mode & 0o777)}); "
                f"PostgreSQL runs as {POSTGRES_SERVICE_USER!r} and needs to reach {folder}: chmod o+x it "
                "or choose another GOVERNANCE_HOME"
            )


def start_postgres(deployment: Deployment, password: str) -> None:
    """Create the cluster (first time), start it on loopback and create the databases."""
    data = deployment.postgres_data
    cluster = data.parent
    cluster.mkdir(parents=True, exist_ok=True)
    deployment.logs.mkdir(parents=True, exist_ok=True)
    owner = _postgres_user()
    if owner:
        _check_traversable(cluster)
        shutil.chown(cluster, owner, owner)
    log = deployment.logs / "postgres.log"
    if not (data / "PG_VERSION").exists():
        password_file = cluster / ".initdb-password"
        _write_private(password_file, password, owner)
        try:
            _as_service_user(
                [
                    _postgres_binary("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    DATABASE_USER,
                    "--auth=scram-sha-256",
                    f"--pwfile={password_file}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                log,
            )
        finally:
            password_file.unlink(missing_ok=True)
    socket_dir = cluster / "socket"
    socket_dir.mkdir(exist_ok=True)
    if owner:
        shutil.chown(socket_dir, owner, owner)
    options = f"-c listen_addresses={LOOPBACK} -p {deployment.ports.postgres} -c unix_socket_directories={socket_dir}"
    _pg_ctl(deployment, "-l", str(_server_log(deployment)), "-o", options, "start")
    _create_databases(deployment, password)


def _pg_ctl(deployment: Deployment, *arguments: str) -> None:
    """`pg_ctl -w -t PG_CTL_TIMEOUT_SECONDS` on the deployment's cluster, logged to postgres.log."""
    command = [_postgres_binary("pg_ctl"), "-D", str(deployment.postgres_data), "-w", "-t", PG_CTL_WAIT, *arguments]
    _as_service_user(command, deployment.logs / "postgres.log")


def _server_log(deployment: Deployment) -> Path:
    """The server's own log: written by the server, so in a folder its user owns."""
    return deployment.postgres_data.parent / "server.log"


def postgres_pid(deployment: Deployment) -> int | None:
    """The postmaster's pid from its pid file, if it is running."""
    pid_file = deployment.postgres_data / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text("utf-8").split()[0])
    return pid if _alive(pid) else None


def restart_postgres(deployment: Deployment) -> None:
    """`pg_ctl restart -m fast`: every connection is dropped, the server comes back on its port
    (waited for, at most PG_CTL_TIMEOUT_SECONDS)."""
    _pg_ctl(deployment, "-m", "fast", "-l", str(_server_log(deployment)), "restart")


def stop_postgres(deployment: Deployment) -> None:
    if postgres_pid(deployment) is None:
        return
    _pg_ctl(deployment, "-m", "fast", "stop")


def connect_postgres(deployment: Deployment, password: str, database: str = "postgres") -> object:
    import psycopg2

    return psycopg2.connect(
        host=LOOPBACK,
        port=deployment.ports.postgres,
        user=DATABASE_USER,
        password=password,
        dbname=database,
        connect_timeout=10,
    )


def _create_databases(deployment: Deployment, password: str) -> None:
    from psycopg2 import sql

    connection = connect_postgres(deployment, password)
    connection.autocommit = True  # type: ignore[attr-defined]
    try:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()  # type: ignore[attr-defined]


def _spawn(deployment: Deployment, name: str, command: list[str], env: Mapping[str, str]) -> ServiceProcess:
    """Start a server in its own process group (so that stopping it stops its children too)."""
    deployment.logs.mkdir(parents=True, exist_ok=True)
    with (deployment.logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return ServiceProcess(name, process.pid)


def _wait_until(ready: Callable[[], bool], process: ServiceProcess, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not _alive(process.pid):
            raise ServiceError(f"{process.name} exited while starting; see {log}")
        time.sleep(0.25)
    raise ServiceError(f"{process.name} was not ready within {timeout:.0f} s; see {log}")


def start_redis(deployment: Deployment, password: str) -> ServiceProcess:
    """Redis on loopback with a password (from a 0600 config file), no persistence needed."""
    folder = deployment.root / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "redis.conf"
    settings = [
        f"bind {LOOPBACK}",
        f"port {deployment.ports.redis}",
        f"dir {folder}",
        f"requirepass {password}",
        "protected-mode yes",
        "daemonize no",
        'save ""',
        "appendonly no",
    ]
    _write_private(config, "\n".join(settings) + "\n")
    process = _spawn(deployment, "redis", [shutil.which("redis-server") or "redis-server", str(config)], {})

    def ready() -> bool:
        import redis

        try:
            return bool(redis.Redis(host=LOOPBACK, port=deployment.ports.redis, password=password).ping())
        except redis.exceptions.RedisError:
            return False

    _wait_until(ready, process, 30, deployment.logs / "redis.log")
    return process


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow(deployment: Deployment, pg_password: str) -> ServiceProcess:
    """`mlflow server` on loopback: PostgreSQL backend store; artifacts served from the shared root
    (object storage: the server needs its AWS_* credentials, the clients do not) or a folder."""
    destination = deployment.mlflow_artifacts_destination()
    if "://" not in destination:
        Path(destination).mkdir(parents=True, exist_ok=True)
    backend = f"postgresql+psycopg2://{DATABASE_USER}@{LOOPBACK}:{deployment.ports.postgres}/mlflow"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        LOOPBACK,
        "--port",
        str(deployment.ports.mlflow),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        destination,
        "--workers",
        "1",
    ]
    # No server-side job runner (GenAI jobs): it starts three more processes that this use never needs.
    env = {"PGPASSWORD": pg_password, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if os.environ.get("AWS_ENDPOINT_URL"):  # an S3-compatible store (MinIO, Ceph, an emulator)
        env["MLFLOW_S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    process = _spawn(deployment, "mlflow", command, env)
    _wait_until(lambda: http_ok(f"{deployment.mlflow_url}/health"), process, 180, deployment.logs / "mlflow.log")
    return process


def worker_command(name: str) -> list[str]:
    """A Celery worker running one Dagster step at a time (the broker is in its environment)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "governance_assets.deploy.celery_app",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "--queues",
        "dagster",
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
    ]


def start_worker(deployment: Deployment, name: str, env: Mapping[str, str]) -> ServiceProcess:
    log = deployment.logs / f"{name}.log"
    offset = log.stat().st_size if log.exists() else 0
    process = _spawn(deployment, name, worker_command(name), env)

    def ready() -> bool:
        with log.open("rb") as handle:
            handle.seek(offset)
            return b" ready." in handle.read()

    _wait_until(ready, process, 120, log)
    return process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pid: int) -> bool:
    """Whether a process of the group led by `pid` still runs: zombies (exited, not yet reaped by
    a parent that may itself be gone) do not count; ours are reaped here."""
    try:
        while os.waitpid(-pid, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        state, group = fields[0], int(fields[2])
        if group == pid and state != "Z":
            return True
    return False


def stop_process(process: ServiceProcess, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds; returns when none is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(process.pid):
                return
            time.sleep(0.1)
    raise ServiceError(f"{process.name} (process group {process.pid}) survived SIGKILL")


def install_dagster_profile(deployment: Deployment) -> Path:
    """Copy the team profile into the deployment's DAGSTER_HOME as its `dagster.yaml`."""
    deployment.dagster_home.mkdir(parents=True, exist_ok=True)
    target = deployment.dagster_home / "dagster.yaml"
    shutil.copyfile(TEAM_PROFILE, target)
    return target


def start(deployment: Deployment, log: Callable[[str], None] = print) -> Deployment:
    """Bring every service up (PostgreSQL, Redis, MLflow, the workers); record them for `stop`."""
    current = Deployment.load(deployment.home)
    if current is not None and any(group_alive(p.pid) for p in current.processes):
        raise ServiceError(f"a deployment is already running under {deployment.root} (run `services down` first)")
    secret = passwords(deployment.root)
    started: list[ServiceProcess] = []
    try:
        start_postgres(deployment, secret["GOVERNANCE_PG_PASSWORD"])
        log(f"PostgreSQL on {LOOPBACK}:{deployment.ports.postgres} (databases {', '.join(DATABASES)})")
        started.append(start_redis(deployment, secret["GOVERNANCE_REDIS_PASSWORD"]))
        log(f"Redis on {LOOPBACK}:{deployment.ports.redis}")
        started.append(start_mlflow(deployment, secret["GOVERNANCE_PG_PASSWORD"]))
        log(f"MLflow server on {deployment.mlflow_url}")
        install_dagster_profile(deployment)
        env = {**helm_environment(), **deployment.environment(secret)}
        for index in range(deployment.workers):
            started.append(start_worker(deployment, f"worker{index + 1}", env))
        log(f"{deployment.workers} Celery worker(s) on the `dagster` queue")
    except BaseException:
        for process in reversed(started):
            stop_process(process)
        stop_postgres(deployment)
        raise
    running = dataclasses.replace(deployment, processes=tuple(started))
    running.save()
    return running


def stop(home: Path, log: Callable[[str], None] = print) -> list[str]:
    """Stop everything `start` recorded under `home`; return what was stopped."""
    deployment = Deployment.load(home) or Deployment(home, ServicePorts.from_environment())
    stopped = []
    for process in reversed(deployment.processes):
        if group_alive(process.pid):
            stop_process(process)
            stopped.append(process.name)
            log(f"stopped {process.name}")
    if postgres_pid(deployment) is not None:
        stop_postgres(deployment)
        stopped.append("postgres")
        log("stopped PostgreSQL")
    dataclasses.replace(deployment, processes=()).save()
    return stopped


def team_environment(home: Path) -> dict[str, str]:
    """The variables of the deployment running under `home` (GOVERNANCE_DEPLOYMENT=team)."""
    deployment = Deployment.load(home)
    if deployment is None or not deployment.processes:
        raise ServiceError(f"no team deployment is running under {home / 'services'}: run `services up` first")
    return deployment.environment(passwords(deployment.root))
