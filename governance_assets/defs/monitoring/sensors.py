"""Watching the traffic landing folder (and, by configuration, a database table)."""

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.policy import DatabaseTrafficSource
from governance_assets.lib.monitoring.traffic import TRAFFIC_KEY, read_landing_file, read_table_rows
from governance_assets.lib.monitoring.traffic_intake import (
    StagedSource,
    database_source_id,
    file_source_id,
    read_staged,
    stage_source,
)


@dataclass
class TrafficCursor:
    """What the sensor has staged: each landing file's size and mtime, each table's last primary key."""

    files: dict[str, str] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "TrafficCursor":
        return cls(**json.loads(text)) if text else cls()

    def dumps(self) -> str:
        return json.dumps({"files": self.files, "tables": self.tables}, sort_keys=True)


def landing_files(folder: Path) -> list[Path]:
    """Files a serving system finished writing, oldest first (names starting with "." are in progress)."""
    if not folder.exists():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class _Stager:
    """Stages sources for one tick, within the policy's budget."""

    def __init__(self, state: GovernanceState, budget: int) -> None:
        policy = state.policy()
        self.staging = state.traffic_staging_path()
        self.first_day = policy.monitoring.start_date
        self.last_day = datetime.now(UTC).date()
        self.budget = budget
        self.staged: list[tuple[StagedSource, bool]] = []

    def file(self, path: Path) -> None:
        source_id = file_source_id(path)
        known = read_staged(self.staging, source_id)
        if known is not None:
            self.staged.append((known, False))
        else:
            batch = read_landing_file(path)
            self.staged.append(stage_source(self.staging, source_id, batch, self.first_day, self.last_day))
        self.budget -= 1

    def table(self, settings: DatabaseTrafficSource, after_id: int, log: logging.Logger) -> int:
        """Stage batches of new rows; returns the new high-water mark of the primary key."""
        url = os.environ.get(settings.url_env)
        if not url:
            log.warning(f"traffic table {settings.table}: {settings.url_env} is not set; not read")
            return after_id
        while self.budget > 0:
            batch, last_id = read_table_rows(url, settings.table, after_id, settings.batch_rows)
            if batch.error is not None:
                log.warning(f"traffic table: {batch.error}")
                break
            if last_id == after_id:
                break
            source_id = database_source_id(settings.table, after_id + 1, last_id)
            self.staged.append(stage_source(self.staging, source_id, batch, self.first_day, self.last_day))
            after_id = last_id
            self.budget -= 1
        return after_id


def _observation(staged: StagedSource) -> dg.AssetObservation:
    """What the UI shows for a source that was unreadable or had quarantined rows."""
    return dg.AssetObservation(
        asset_key=dg.AssetKey(list(TRAFFIC_KEY)),
        metadata={
            "source": staged.source,
            "source_id": staged.source_id,
            "error": staged.error or "",
            "rows": staged.rows,
            "quarantined_rows": staged.quarantined,
            "quarantine": dg.MetadataValue.path(f"monitoring/staging/traffic/{staged.source_id}/quarantine.jsonl"),
        },
    )


@dg.sensor(job_name="monitor_traffic", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def traffic_landing(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SensorResult:
    """Stages each new landing file (and new database rows) once and asks for each day it touches
    to be ingested: run keys per (source, day) and a cursor, so a restart neither repeats nor skips."""
    cursor = TrafficCursor.parse(context.cursor)
    settings = state.policy().monitoring.traffic
    stager = _Stager(state, settings.max_sources_per_tick)
    for path in landing_files(state.traffic_landing_path()):
        fingerprint = _fingerprint(path)
        if cursor.files.get(path.name) == fingerprint:
            continue
        if stager.budget <= 0:
            break
        stager.file(path)
        cursor.files[path.name] = fingerprint
    if settings.database is not None and stager.budget > 0:
        table = settings.database.table
        cursor.tables[table] = stager.table(settings.database, cursor.tables.get(table, 0), context.log)
    for staged, fresh in stager.staged:
        if fresh and staged.error:
            context.log.warning(f"traffic source {staged.source} rejected: {staged.error}")
    run_requests = [
        dg.RunRequest(
            partition_key=day,
            run_key=f"traffic:{staged.source_id}:{day}",
            tags={"governance/traffic_source": staged.source_id},
        )
        for staged, _ in stager.staged
        for day in sorted(staged.days)
    ]
    observations = [_observation(s) for s, fresh in stager.staged if fresh and (s.error or s.quarantined)]
    return dg.SensorResult(
        run_requests=run_requests,
        asset_events=observations,
        cursor=cursor.dumps(),
        skip_reason=None if run_requests or observations else "no new traffic",
    )
