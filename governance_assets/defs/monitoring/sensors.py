"""Watching for production traffic. The sensors only decide: they list new sources and request runs;
parsing and staging happen in `stage_traffic` runs (see staging.py), which Dagster retries.

`traffic_landing` requests one `stage_traffic` run per new landing file, then, once a source is
staged, one `monitor_traffic` run per day it touched (adding the days that are not partitions yet). `traffic_database` asks the policy's table for
its newest primary key and requests a `stage_traffic` run per new range of keys; a database that
fails is reported in its skip reason (password hidden) and asked again at the next tick, and it
never holds up the landing files, which another sensor watches."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from governance_assets.defs.database_source import database_sensor
from governance_assets.defs.jobs import monitor_traffic
from governance_assets.defs.monitoring.staging import stage_traffic
from governance_assets.defs.partitions import TRAFFIC_DAYS, TRAFFIC_DAYS_NAME
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.monitoring.traffic import TRAFFIC_KEY
from governance_assets.lib.monitoring.traffic_intake import StagedSource, staged_sources


@dataclass
class TrafficCursor:
    """What `traffic_landing` has requested: each landing file's size and mtime sent to staging,
    and the staged sources whose days were requested."""

    files: dict[str, str] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> "TrafficCursor":
        return cls(**json.loads(text)) if text else cls()

    def dumps(self) -> str:
        return json.dumps({"files": self.files, "staged": sorted(self.staged)}, sort_keys=True)


def landing_files(folder: Path) -> list[Path]:
    """Files a serving system finished writing, oldest first (names starting with "." are in progress)."""
    if not folder.exists():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def stage_request(run_key: str, source: dict[str, str | int]) -> dg.RunRequest:
    """A `stage_traffic` run for one source (`path`, or `table`/`after_id`/`up_to_id`)."""
    return dg.RunRequest(
        job_name=stage_traffic.name,
        run_key=run_key,
        run_config={"ops": {"stage_traffic_source": {"config": source}}},
    )


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


@dg.sensor(
    jobs=[stage_traffic, monitor_traffic],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests a stage_traffic run for each new landing file, then a monitor_traffic run for each day a "
        "staged source touched; run keys and a cursor, so a restart neither repeats nor skips."
    ),
)
def traffic_landing(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SensorResult:
    """Lists new landing files and newly staged sources; parses nothing."""
    cursor = TrafficCursor.parse(context.cursor)
    budget = state.policy().monitoring.traffic.max_sources_per_tick
    run_requests: list[dg.RunRequest] = []
    for path in landing_files(state.traffic_landing_path()):
        fingerprint = _fingerprint(path)
        if cursor.files.get(path.name) == fingerprint:
            continue
        if budget <= 0:
            break
        run_requests.append(stage_request(f"stage:{path.name}:{fingerprint}", {"path": str(path)}))
        cursor.files[path.name] = fingerprint
        budget -= 1
    requested = set(cursor.staged)
    fresh = [s for s in staged_sources(state.traffic_staging_path()) if s.source_id not in requested]
    run_requests += [
        dg.RunRequest(
            job_name=monitor_traffic.name,
            partition_key=day,
            run_key=f"traffic:{staged.source_id}:{day}",
            tags={"governance/traffic_source": staged.source_id},
        )
        for staged in fresh
        for day in sorted(staged.days)
    ]
    cursor.staged += [s.source_id for s in fresh]
    known = set(context.instance.get_dynamic_partitions(TRAFFIC_DAYS_NAME))
    new_days = sorted({day for staged in fresh for day in staged.days} - known)
    observations = [_observation(s) for s in fresh if s.error or s.quarantined]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[TRAFFIC_DAYS.build_add_request(new_days)] if new_days else [],
        asset_events=observations,
        cursor=cursor.dumps(),
        skip_reason=None if run_requests or observations else "no new traffic",
    )


traffic_database = database_sensor(
    "traffic_database",
    stage_traffic,
    "stage_traffic_source",
    "stage",
    "traffic",
    "monitoring.traffic.database",
    lambda policy: policy.monitoring.traffic,
)
