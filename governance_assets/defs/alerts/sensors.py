"""Alerts for failed gates and monitoring checks. Dagster OSS run-failure sensors do not fire on
failed checks, so this sensor reads check evaluations itself and sends each failure once to the
policy's sinks."""

import json
import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from governance_assets.defs.gates.assets import gate_check_keys
from governance_assets.defs.monitoring.checks import MONITORING_CHECKS
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.alerts.sinks import Alert, AlertSink, JsonlSink, WebhookSink, deliver
from governance_assets.lib.core.policy import AlertSettings, Policy

HISTORY_PER_TICK = 200


def alerted_check_keys(policy: Policy) -> list[dg.AssetCheckKey]:
    """Every gate of the policy and every monitoring check, as check keys."""
    return gate_check_keys(policy) + [key for check in MONITORING_CHECKS for key in check.check_keys]


def _alert(key: dg.AssetCheckKey, record: Any) -> Alert:
    evaluation = record.evaluation
    metadata = {name: value.value for name, value in evaluation.metadata.items()}
    partition = record.partition or "all partitions"
    where = f"{key.asset_key.to_user_string()}:{key.name}"
    return Alert(
        key=f"{where}:{partition}:{record.id}",
        severity=evaluation.severity.value,
        title=f"Check {key.name} failed for {partition}",
        text=f"{where}: {metadata.get('reason') or metadata.get('outcome')}; threshold {metadata.get('threshold')}",
        created_at=datetime.fromtimestamp(record.create_timestamp, tz=UTC),
        details={
            "partition": partition,
            "check": where,
            "dagster_run_id": record.run_id,
            "blocking": bool(metadata.get("blocking", False)),
        },
    )


def alert_sinks(settings: AlertSettings) -> list[AlertSink]:
    """The webhook named in the policy, when its environment variable is set."""
    if settings.webhook_url_env and os.environ.get(settings.webhook_url_env):
        return [
            WebhookSink.from_env(
                settings.webhook_url_env, retries=settings.retries, backoff_seconds=settings.backoff_seconds
            )
        ]
    return []


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Sends each failed gate or monitoring check evaluation once to the alert ledger "
        "(GOVERNANCE_HOME/alerts/alerts.jsonl) and the policy's webhook; a restart neither repeats nor loses one."
    ),
)
def check_failure_alerts(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SkipReason:
    """Sends each failed gate or monitoring check evaluation once. Only the newest evaluation of a
    partition counts: one superseded before the sensor saw it ("no reference yet", then a pass)
    is not sent. The JSONL ledger under GOVERNANCE_HOME/alerts records what was sent, so a restart
    neither repeats nor loses an alert."""
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    ledger = JsonlSink(state.home_path() / "alerts" / "alerts.jsonl")
    policy = state.policy()
    sinks = alert_sinks(policy.alerts)
    pending: list[Alert] = []
    newest: dict[str, int] = dict(seen)
    for key in alerted_check_keys(policy):
        name = key.to_user_string()
        history = context.instance.event_log_storage.get_asset_check_execution_history(key, limit=HISTORY_PER_TICK)
        judged: set[str | None] = set()  # partitions whose newest evaluation was already looked at
        for record in sorted(history, key=lambda r: -r.id):
            if record.id <= seen.get(name, 0) or record.evaluation is None:
                continue
            newest[name] = max(newest.get(name, 0), record.id)
            if record.partition in judged:
                continue  # superseded by a later evaluation of the same partition
            judged.add(record.partition)
            if record.status.value == "FAILED":  # an evaluation with passed=False
                pending.append(_alert(key, record))
    deliveries = deliver(pending, sinks, ledger)
    undelivered = {d.alert_key for d in deliveries if not d.delivered}
    for alert in pending:
        if alert.key in undelivered:  # keep the cursor before it: the next tick tries again
            check = alert.details["check"]
            record_id = int(alert.key.rsplit(":", 1)[1])
            newest[check] = min(newest[check], record_id - 1)
    context.update_cursor(json.dumps(newest, sort_keys=True))
    sent = len({a.key for a in pending} - undelivered)
    return dg.SkipReason(f"{sent} alerts sent, {len(undelivered)} to retry")
