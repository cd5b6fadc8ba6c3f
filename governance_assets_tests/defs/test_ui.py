"""What the Dagster UI shows: descriptions of every sensor and schedule, table schemas and row counts."""

import warnings
from pathlib import Path

import dagster as dg

import governance_assets
from governance_assets.definitions import defs
from governance_assets.defs.lineage.sensors import openlineage_events
from governance_assets.defs.resources import GovernanceState


def test_every_sensor_and_schedule_has_a_description() -> None:
    definitions = defs()
    automations = [*(definitions.sensors or []), *(definitions.schedules or [])]
    assert len(automations) >= 8
    missing = [automation.name for automation in automations if not (automation.description or "").strip()]
    assert missing == []


def test_no_deprecated_event_log_query_is_left(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """`get_event_records` warned on every call (every sensor tick in the daemon's log)."""
    package = Path(governance_assets.__file__).parent
    callers = [
        str(path.relative_to(package)) for path in package.rglob("*.py") if "get_event_records(" in path.read_text()
    ]
    assert callers == []
    context = dg.build_sensor_context(
        instance=instance, resources={"state": GovernanceState(home=str(tmp_path))}, definitions=defs()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skipped = openlineage_events(context)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message == "no new materialisations"
