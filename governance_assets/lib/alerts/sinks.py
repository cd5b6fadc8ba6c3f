"""Alert sinks for failed quality gates: a JSON Lines ledger and a Slack-compatible webhook.

The sensor that watches asset-check evaluations calls `deliver`. The JSONL file is both the
default sink and the ledger of what was sent: an alert is written to it only after every other
sink accepted it, so restarting the sensor sends nothing twice to the ledger and loses nothing
(other sinks get at-least-once delivery).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

from governance_assets.lib.core.durable_append import append_line
from governance_assets.lib.core.http_post import MAX_RETRY_AFTER_SECONDS as MAX_RETRY_AFTER_SECONDS
from governance_assets.lib.core.http_post import InvalidURL, http_url_parts, post_within

SEVERITIES = frozenset({"ERROR", "WARN"})

_SLACK_HEADER_MAX = 150
_SLACK_SECTION_MAX = 3000
_SLACK_FIELDS_MAX = 10
_SLACK_FIELD_MAX = 2000
_SAFE_ERROR_BODY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""Response bodies quoted in errors: Slack's error codes (`invalid_payload`, `no_service`…) only."""


class AlertDeliveryError(Exception):
    """A sink finally failed to deliver an alert; the message never contains a URL or secret."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        """True if the failure looks transient (connection error, timeout, HTTP 429/5xx)."""


class AlertConfigurationError(ValueError):
    """A sink that cannot be configured; the message names the setting, never its value."""


def _strict_json(value: object) -> str:
    return json.dumps(value, allow_nan=False)


@dataclass(frozen=True)
class Alert:
    """One failed check evaluation, to be sent once to every sink."""

    key: str
    """Unique id of the event, e.g. `<asset>:<check>:<partition>:<evaluation id>`; the dedup key."""
    severity: str
    """`ERROR` or `WARN`."""
    title: str
    """One line."""
    text: str
    """A few lines of detail: threshold, actual value, evidence summary."""
    created_at: datetime
    """Timezone-aware; stored converted to UTC."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Strict-JSON extra fields (suite, check, partition, run ids, links); stored as a deep copy."""

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise ValueError("Alert.key must be a non-empty string")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Alert.severity must be one of {sorted(SEVERITIES)}, not {self.severity!r}")
        if "\n" in self.title or "\r" in self.title:
            raise ValueError(f"Alert.title must be one line: {self.title!r}")
        if not isinstance(self.created_at, datetime):
            raise ValueError("Alert.created_at must be a datetime")
        if self.created_at.tzinfo is None or self.created_at.utcoffset() is None:
            raise ValueError(f"Alert.created_at must be timezone-aware (UTC), not naive {self.created_at!r}")
        try:
            encoded = _strict_json(dict(self.details))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Alert.details must be strict JSON (str keys; no NaN/Infinity): {exc}") from None
        object.__setattr__(self, "created_at", self.created_at.astimezone(UTC))
        object.__setattr__(self, "details", json.loads(encoded))

    def __hash__(self) -> int:
        return hash(self.key)  # `details` is a dict; equal alerts have equal keys

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to the ledger."""
        return {
            "key": self.key,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "created_at": self.created_at.isoformat(),
            "details": dict(self.details),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Alert:
        """The alert a ledger record was written from."""
        return cls(
            key=record["key"],
            severity=record["severity"],
            title=record["title"],
            text=record["text"],
            created_at=datetime.fromisoformat(record["created_at"]),
            details=record.get("details") or {},
        )


class AlertSink(Protocol):
    """Somewhere alerts go."""

    name: str

    def send(self, alert: Alert) -> None:
        """Deliver `alert`; raise AlertDeliveryError on final failure."""
        ...


class JsonlSink:
    """An append-only JSON Lines file of alerts, one object per line; also the ledger."""

    def __init__(self, path: Path, *, name: str = "jsonl") -> None:
        self.path = Path(path)
        self.name = name

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file; lines that are not a JSON object with a key are skipped."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records: list[dict[str, Any]] = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except ValueError:  # a line truncated by a crash (UnicodeDecodeError is a ValueError)
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                records.append(record)
        return records

    def sent_keys(self) -> set[str]:
        """Keys of the alerts already in the file."""
        return {record["key"] for record in self.records()}

    def send(self, alert: Alert) -> None:
        """Append `alert` as one line (flushed and fsynced) unless its key is already present."""
        if alert.key in self.sent_keys():
            return
        line = json.dumps(alert.to_record(), allow_nan=False).encode("ascii") + b"\n"
        try:
            self._append(line)
        except OSError as exc:
            raise AlertDeliveryError(
                f"alert sink {self.name!r} could not write alert {alert.key!r} to {self.path}: "
                f"{type(exc).__name__}: {exc.strerror or exc}"
            ) from exc

    def _append(self, line: bytes) -> None:
        append_line(self.path, line)


def _validated_url(url: str, what: str) -> str:
    url = url.strip()
    try:
        http_url_parts(url)
    except InvalidURL as exc:
        raise AlertConfigurationError(f"{what} {exc}") from None
    return url


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WebhookOptions(TypedDict, total=False):
    """The keyword options of `WebhookSink`, also taken by `WebhookSink.from_env`."""

    name: str
    retries: int
    backoff_seconds: float
    timeout_seconds: float
    total_seconds: float
    sleep: Callable[[float], None]
    blocks: bool


class WebhookSink:
    """A Slack-compatible incoming webhook, POSTed through `requests` with urllib3's retries and
    exponential back-off, within a bounded total time."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "webhook",
        retries: int = 3,
        backoff_seconds: float = 1.0,
        timeout_seconds: float = 5.0,
        total_seconds: float = 15.0,
        sleep: Callable[[float], None] = time.sleep,
        blocks: bool = True,
    ) -> None:
        """`retries` counts the attempts after the first (so 1 + retries attempts in all); an
        alert costs at most about `total_seconds`, however the webhook behaves (each attempt may
        take `timeout_seconds` to connect and as long to answer; none starts that could not end
        in time).

        `blocks=False` sends only `{"text": …}`, for services that reject Slack Block Kit.
        """
        if retries < 0 or backoff_seconds < 0 or timeout_seconds <= 0 or total_seconds < timeout_seconds:
            raise AlertConfigurationError(
                f"webhook sink {name!r}: retries and backoff_seconds must be >= 0, timeout_seconds > 0 "
                "and total_seconds >= timeout_seconds"
            )
        self._url = _validated_url(url, f"the URL of webhook sink {name!r}")
        self.name = name
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.total_seconds = total_seconds
        self.blocks = blocks
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r}, url=<hidden>)"

    @classmethod
    def from_env(cls, variable: str, **options: Unpack[WebhookOptions]) -> WebhookSink:
        """A sink whose URL is read from environment variable `variable`; `options` as for the constructor."""
        value = os.environ.get(variable, "").strip()
        if not value:
            raise AlertConfigurationError(f"environment variable {variable} is not set (it must hold the webhook URL)")
        return cls(_validated_url(value, f"environment variable {variable}"), **options)

    def payload(self, alert: Alert) -> dict[str, Any]:
        """The JSON body: Slack `text` (title, then text) and, optionally, Block Kit blocks."""
        payload: dict[str, Any] = {"text": _slack_escape(f"{alert.title}\n{alert.text}")}
        if not self.blocks:
            return payload
        icon = ":rotating_light:" if alert.severity == "ERROR" else ":warning:"
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": _clip(f"{alert.severity}: {alert.title}", _SLACK_HEADER_MAX),
                },
            }
        ]
        if alert.text.strip():
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": _clip(_slack_escape(alert.text), _SLACK_SECTION_MAX),
                    },
                }
            )
        items = list(alert.details.items())
        if items:
            if len(items) > _SLACK_FIELDS_MAX:
                shown = items[: _SLACK_FIELDS_MAX - 1]
                rest = f"{len(items) - len(shown)} more in the alert ledger"
                items = [*shown, ("…", rest)]
            fields = []
            for key, value in items:
                shown_value = value if isinstance(value, str) else json.dumps(value)
                fields.append(
                    {
                        "type": "mrkdwn",
                        "text": _clip(
                            f"*{_slack_escape(key)}*\n{_slack_escape(shown_value)}",
                            _SLACK_FIELD_MAX,
                        ),
                    }
                )
            blocks.append({"type": "section", "fields": fields})
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _clip(
                            f"{icon} {alert.severity} · {alert.created_at.isoformat()} · `{_slack_escape(alert.key)}`",
                            _SLACK_SECTION_MAX,
                        ),
                    }
                ],
            }
        )
        payload["blocks"] = blocks
        return payload

    def send(self, alert: Alert) -> None:
        """POST `alert`; retry transient failures; raise AlertDeliveryError after the last attempt."""
        failure = post_within(
            self._url,
            json.dumps(self.payload(alert)).encode("utf-8"),
            {"Content-Type": "application/json; charset=utf-8", "User-Agent": "governance-assets-alerts/1"},
            timeout_seconds=self.timeout_seconds,
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
            total_seconds=self.total_seconds,
            sleep=self._sleep,
        )
        if failure is None:
            return
        problem = failure.problem
        answer = failure.response.strip()
        if _SAFE_ERROR_BODY.match(answer):
            problem += f" ({answer})"
        plural = "" if failure.attempts == 1 else "s"
        raise AlertDeliveryError(
            f"alert sink {self.name!r} could not deliver alert {alert.key!r}: "
            f"{problem} after {failure.attempts} attempt{plural}",
            retryable=failure.retryable,
        )


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert at one sink."""

    alert_key: str
    sink: str
    delivered: bool
    error: str | None


def _is_ledger(sink: AlertSink, ledger: JsonlSink) -> bool:
    if sink is ledger:
        return True
    if isinstance(sink, JsonlSink):
        return sink.path.absolute() == ledger.path.absolute()
    return False


def deliver(alerts: Sequence[Alert], sinks: Sequence[AlertSink], ledger: JsonlSink) -> list[Delivery]:
    """Send each alert not yet in `ledger` to every other sink; record it once all accepted it.

    Alerts already in the ledger (or repeated in `alerts`) are skipped and get no Delivery. Every
    other alert gets one Delivery per sink, then one for the ledger: `delivered=False` there means
    it was not recorded and will be retried by the next call. After a sink fails transiently
    (connection error, timeout, HTTP 429/5xx, after its own retries) it is not tried again for the
    rest of this call, so a dead webhook costs one round of retries per call, not one per alert.
    """
    done = ledger.sent_keys()
    others = [sink for sink in sinks if not _is_ledger(sink, ledger)]
    broken: dict[int, str] = {}  # id(sink) -> why it is skipped for the rest of this call
    deliveries: list[Delivery] = []
    for alert in alerts:
        if alert.key in done:
            continue
        done.add(alert.key)
        failed: list[str] = []
        for sink in others:
            error: str | None = None
            if id(sink) in broken:
                error = f"not attempted: {broken[id(sink)]}"
            else:
                try:
                    sink.send(alert)
                except AlertDeliveryError as exc:
                    error = str(exc)
                    if exc.retryable:
                        broken[id(sink)] = f"sink {sink.name!r} failed earlier in this call"
                except Exception as exc:  # a sink's bug must not stop the others
                    error = f"alert sink {sink.name!r} raised {type(exc).__name__} delivering alert {alert.key!r}"
            deliveries.append(Delivery(alert.key, sink.name, error is None, error))
            if error is not None:
                failed.append(sink.name)
        if failed:
            error = f"not recorded, to be retried: sink(s) {', '.join(map(repr, failed))} failed"
            deliveries.append(Delivery(alert.key, ledger.name, False, error))
            continue
        try:
            ledger.send(alert)
        except Exception as exc:
            message = str(exc) if isinstance(exc, AlertDeliveryError) else type(exc).__name__
            deliveries.append(Delivery(alert.key, ledger.name, False, message))
        else:
            deliveries.append(Delivery(alert.key, ledger.name, True, None))
    return deliveries
