"""Alert sinks: the JSONL ledger, the Slack-compatible webhook (against a local server), `deliver`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from governance_assets.lib.alerts.sinks import (
    MAX_RETRY_AFTER_SECONDS,
    Alert,
    AlertConfigurationError,
    AlertDeliveryError,
    Delivery,
    JsonlSink,
    WebhookSink,
    deliver,
)
from governance_assets_tests.http_server import Answer, ScriptedServer, clear_proxies, serve

SECRET_PATH = "/hooks/T000/SECRET123"
BACKOFF = 0.5


def make_alert(key: str = "helm/run_stats:min_exact_match:v2:17", **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "key": key,
        "severity": "ERROR",
        "title": f"Gate helm/run_stats:min_exact_match failed for suite v2 ({key})",
        "text": "threshold: exact_match >= 0.5\nactual: 0.31\nevidence: 3 of 12 runs below",
        "created_at": datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        "details": {"suite": "v2", "check": "min_exact_match", "run_ids": ["a", "b"]},
    }
    fields.update(changes)
    return Alert(**fields)


# --- a local webhook server -------------------------------------------------------------------


@dataclass
class FakeWebhook(ScriptedServer):
    """The local server, answering 200 by default, whose `url` has a secret path."""

    default: Answer = (200, {}, b"ok")

    @property
    def url(self) -> str:
        return self.base_url + SECRET_PATH


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch)


@pytest.fixture
def webhook() -> Iterator[FakeWebhook]:
    with serve(FakeWebhook) as state:
        yield state


def sink(url: str, sleeps: list[float], **kwargs: Any) -> WebhookSink:
    kwargs.setdefault("backoff_seconds", BACKOFF)
    return WebhookSink(url, sleep=sleeps.append, **kwargs)


# --- Alert ------------------------------------------------------------------------------------


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_alert(created_at=datetime(2025, 3, 4, 5, 6, 7))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"severity": "INFO"}, "severity"),
        ({"title": "two\nlines"}, "one line"),
        ({"key": " "}, "key"),
        ({"details": {"actual": float("nan")}}, "strict JSON"),
        ({"details": {"when": datetime.now(UTC)}}, "strict JSON"),
    ],
)
def test_invalid_alerts_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_alert(**changes)


def test_details_are_copied_and_created_at_is_stored_in_utc() -> None:
    details: dict[str, Any] = {"runs": ("a", "b")}
    alert = make_alert(details=details, created_at=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    details["runs"] = "changed"
    assert alert.details == {"runs": ["a", "b"]}
    assert alert.created_at == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert alert.created_at.utcoffset() == timedelta(0)
    assert len({alert, make_alert(details={"runs": ["a", "b"]}, created_at=alert.created_at)}) == 1


# --- JsonlSink ----------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_appends_one_line_per_alert_and_dedupes_by_key(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "alerts.jsonl"
    ledger = JsonlSink(path)
    assert ledger.sent_keys() == set()
    first, second = make_alert("a"), make_alert("b")
    ledger.send(first)
    ledger.send(second)
    ledger.send(make_alert("a", title="same key, other title"))
    assert ledger.sent_keys() == {"a", "b"}
    records = read_lines(path)
    assert [r["key"] for r in records] == ["a", "b"]
    assert set(records[0]) == {"key", "severity", "title", "text", "created_at", "details"}
    assert records[0]["title"] == first.title
    assert records[0]["details"] == {
        "suite": "v2",
        "check": "min_exact_match",
        "run_ids": ["a", "b"],
    }
    assert path.read_bytes().endswith(b"}\n")


def test_jsonl_created_at_round_trips_with_timezone(tmp_path: Path) -> None:
    ledger = JsonlSink(tmp_path / "alerts.jsonl")
    alert = make_alert(created_at=datetime(2025, 6, 1, 23, 30, 1, 5, tzinfo=timezone(timedelta(hours=-7))))
    ledger.send(alert)
    (record,) = ledger.records()
    assert record["created_at"] == "2025-06-02T06:30:01.000005+00:00"
    parsed = datetime.fromisoformat(record["created_at"])
    assert parsed.tzinfo is not None
    assert parsed == alert.created_at
    assert Alert.from_record(record) == alert


def test_jsonl_survives_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    ledger = JsonlSink(path)
    ledger.send(make_alert("complete"))
    whole = json.dumps(make_alert("half-written").to_record())
    with path.open("a") as file:  # a crash in the middle of an append
        file.write(whole[: len(whole) // 2])
    assert ledger.sent_keys() == {"complete"}

    ledger.send(make_alert("after-crash"))

    lines = path.read_text().split("\n")
    assert lines[-1] == ""  # the file ends with a newline
    assert json.loads(lines[-2])["key"] == "after-crash"  # a valid record on a line of its own
    assert lines[1] == whole[: len(whole) // 2]  # the fragment is left alone, and still ignored
    assert ledger.sent_keys() == {"complete", "after-crash"}


def test_jsonl_counts_a_complete_record_missing_only_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text(json.dumps(make_alert("no-newline").to_record()))
    ledger = JsonlSink(path)
    assert ledger.sent_keys() == {"no-newline"}
    ledger.send(make_alert("next"))
    assert [r["key"] for r in read_lines(path)] == ["no-newline", "next"]


def disk_full(line: bytes) -> None:
    raise OSError(28, "No space left on device")


def test_jsonl_write_failure_is_an_alert_delivery_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = JsonlSink(tmp_path / "alerts.jsonl")
    monkeypatch.setattr(ledger, "_append", disk_full)
    with pytest.raises(AlertDeliveryError, match=r"could not write alert .*No space left"):
        ledger.send(make_alert())


def test_an_unreadable_ledger_is_an_error_not_an_empty_ledger(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger = JsonlSink(blocker / "alerts.jsonl")
    with pytest.raises(OSError):
        ledger.sent_keys()
    with pytest.raises(OSError):
        deliver([make_alert()], [FakeSink("steady")], ledger)


# --- WebhookSink --------------------------------------------------------------------------------


def test_webhook_posts_slack_style_json(webhook: FakeWebhook) -> None:
    alert = make_alert(details={"suite": "v2", "threshold": 0.5, "link": "http://x/?a=1&b=<2>"})
    sink(webhook.url, []).send(alert)
    (request,) = webhook.requests
    assert request.path == SECRET_PATH
    assert request.headers["content-type"].startswith("application/json")
    body = json.loads(request.body)
    assert body["text"] == f"{alert.title}\n{alert.text}".replace(">", "&gt;")
    assert alert.title in body["text"]
    header, section, fields, context = body["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {"type": "plain_text", "text": f"ERROR: {alert.title}"}
    assert section["text"]["type"] == "mrkdwn"
    assert [f["text"] for f in fields["fields"]] == [
        "*suite*\nv2",
        "*threshold*\n0.5",
        "*link*\nhttp://x/?a=1&amp;b=&lt;2&gt;",
    ]
    assert alert.key in context["elements"][0]["text"]


def test_webhook_keeps_slack_block_limits(webhook: FakeWebhook) -> None:
    details = {f"field{i}": "x" * 5000 for i in range(25)}
    alert = make_alert(title="T" * 400, text="y" * 9000, details=details)
    sink(webhook.url, []).send(alert)
    blocks = json.loads(webhook.requests[0].body)["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert len(blocks[1]["text"]["text"]) <= 3000
    assert len(blocks[2]["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in blocks[2]["fields"])
    assert "16 more" in blocks[2]["fields"][-1]["text"]


def test_webhook_text_only(webhook: FakeWebhook) -> None:
    alert = make_alert()
    sink(webhook.url, [], blocks=False).send(alert)
    assert json.loads(webhook.requests[0].body) == {"text": f"{alert.title}\n{alert.text}".replace(">", "&gt;")}


def test_webhook_retries_5xx_with_exponential_backoff(webhook: FakeWebhook) -> None:
    webhook.script = [(500, {}, b""), (503, {}, b"")]
    sleeps: list[float] = []
    sink(webhook.url, sleeps).send(make_alert())
    assert len(webhook.requests) == 3
    assert sleeps == [2 * BACKOFF]  # urllib3's schedule: backoff × 2^(n−1) before the n-th retry, none before the first
    assert len({r.body for r in webhook.requests}) == 1  # the same body each time


def test_webhook_honours_retry_after_on_429(webhook: FakeWebhook) -> None:
    webhook.script = [(429, {"Retry-After": "2"}, b"")]
    sleeps: list[float] = []
    sink(webhook.url, sleeps).send(make_alert())
    assert len(webhook.requests) == 2
    assert sleeps == [2.0]


def test_webhook_caps_retry_after_and_ignores_dates(webhook: FakeWebhook) -> None:
    webhook.script = [
        (429, {"Retry-After": "3600"}, b""),
        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b""),
    ]
    sleeps: list[float] = []
    sink(webhook.url, sleeps, total_seconds=MAX_RETRY_AFTER_SECONDS * 2).send(make_alert())
    assert sleeps == [MAX_RETRY_AFTER_SECONDS, 2 * BACKOFF]


def test_webhook_gives_up_after_the_last_attempt(webhook: FakeWebhook) -> None:
    webhook.default = (500, {}, b"")
    sleeps: list[float] = []
    with pytest.raises(AlertDeliveryError) as caught:
        sink(webhook.url, sleeps, retries=3).send(make_alert())
    assert len(webhook.requests) == 4
    assert sleeps == [2 * BACKOFF, 4 * BACKOFF]
    message = str(caught.value)
    assert "'webhook'" in message and "HTTP 500" in message and "4 attempts" in message
    assert caught.value.retryable
    assert "SECRET123" not in message and "127.0.0.1" not in message


def test_webhook_does_not_retry_other_4xx(webhook: FakeWebhook) -> None:
    webhook.default = (400, {}, b"invalid_payload")
    sleeps: list[float] = []
    with pytest.raises(AlertDeliveryError) as caught:
        sink(webhook.url, sleeps, name="slack-gates").send(make_alert())
    assert len(webhook.requests) == 1
    assert sleeps == []
    message = str(caught.value)
    assert "'slack-gates'" in message and "HTTP 400 (invalid_payload)" in message
    assert "1 attempt" in message
    assert not caught.value.retryable
    assert "SECRET123" not in message


def test_webhook_error_never_quotes_a_response_body_that_echoes_the_url(
    webhook: FakeWebhook,
) -> None:
    webhook.default = (404, {}, f"Cannot POST {SECRET_PATH}".encode())
    with pytest.raises(AlertDeliveryError) as caught:
        sink(webhook.url, []).send(make_alert())
    assert "HTTP 404" in str(caught.value)
    assert "SECRET123" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_webhook_does_not_follow_redirects(webhook: FakeWebhook) -> None:
    webhook.default = (302, {"Location": webhook.base_url + "/elsewhere"}, b"")
    with pytest.raises(AlertDeliveryError, match="HTTP 302"):
        sink(webhook.url, []).send(make_alert())
    assert [r.path for r in webhook.requests] == [SECRET_PATH]


def test_webhook_retries_refused_connections(unused_port: int) -> None:
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{unused_port}{SECRET_PATH}"
    with pytest.raises(AlertDeliveryError) as caught:
        sink(url, sleeps, retries=2).send(make_alert())
    assert sleeps == [2 * BACKOFF]
    message = str(caught.value)
    assert "ConnectionRefusedError" in message and "3 attempts" in message
    assert "SECRET123" not in message and str(unused_port) not in message


def test_webhook_retries_timeouts(webhook: FakeWebhook) -> None:
    webhook.delay_seconds = 0.5
    sleeps: list[float] = []
    with pytest.raises(AlertDeliveryError, match="TimeoutError after 2 attempts"):
        sink(webhook.url, sleeps, retries=1, timeout_seconds=0.1).send(make_alert())
    assert sleeps == []
    assert len(webhook.requests) == 2


def test_a_hanging_webhook_costs_a_bounded_time(webhook: FakeWebhook) -> None:
    """Found: a webhook that never answers cost 4 attempts × 10 s + back-off = 47 s per alert tick.
    Now no attempt starts that could not end within `total_seconds`: here 0.3 s attempts in 1 s."""
    webhook.delay_seconds = 3.0
    started = time.monotonic()
    with pytest.raises(AlertDeliveryError) as caught:
        sink(webhook.url, [], retries=10, timeout_seconds=0.3, total_seconds=1.0).send(make_alert())
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.3  # the bound, with one attempt's worth of slack for a loaded machine
    message = str(caught.value)
    assert "TimeoutError" in message and "SECRET123" not in message
    assert 1 <= len(webhook.requests) <= 3


def test_a_retry_after_past_the_time_left_gives_up_at_once(webhook: FakeWebhook) -> None:
    webhook.default = (429, {"Retry-After": "30"}, b"")
    sleeps: list[float] = []
    with pytest.raises(AlertDeliveryError, match="HTTP 429 after 1 attempt"):
        sink(webhook.url, sleeps, total_seconds=15.0).send(make_alert())
    assert sleeps == [] and len(webhook.requests) == 1


def test_the_webhook_sink_refuses_a_total_time_shorter_than_one_attempt() -> None:
    with pytest.raises(AlertConfigurationError, match="total_seconds"):
        WebhookSink("http://127.0.0.1:1/hook", timeout_seconds=5.0, total_seconds=1.0)


def test_webhook_from_env(monkeypatch: pytest.MonkeyPatch, webhook: FakeWebhook) -> None:
    monkeypatch.setenv("GATE_WEBHOOK_URL", webhook.url + "\n")
    sleeps: list[float] = []
    from_env = WebhookSink.from_env("GATE_WEBHOOK_URL", name="gates", sleep=sleeps.append)
    assert from_env.name == "gates"
    assert "SECRET123" not in repr(from_env)
    from_env.send(make_alert())
    assert [r.path for r in webhook.requests] == [SECRET_PATH]


@pytest.mark.parametrize(
    "value",
    [None, "", "ftp://example.invalid/hooks/T000/SECRET123", "SECRET123", "http://h:x/SECRET123"],
)
def test_webhook_from_env_errors_name_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("GATE_WEBHOOK_URL", raising=False)
    else:
        monkeypatch.setenv("GATE_WEBHOOK_URL", value)
    with pytest.raises(AlertConfigurationError) as caught:
        WebhookSink.from_env("GATE_WEBHOOK_URL")
    assert "GATE_WEBHOOK_URL" in str(caught.value)
    assert "SECRET123" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_webhook_constructor_rejects_bad_urls_without_quoting_them() -> None:
    for url in ("file:///etc/SECRET123", "http://h/SECRET123 x", "https:///SECRET123"):
        with pytest.raises(AlertConfigurationError) as caught:
            WebhookSink(url)
        assert "SECRET123" not in str(caught.value)


# --- deliver ------------------------------------------------------------------------------------


def test_deliver_is_restart_safe(tmp_path: Path, webhook: FakeWebhook) -> None:
    ledger = JsonlSink(tmp_path / "alerts" / "alerts.jsonl")
    sleeps: list[float] = []
    hook = sink(webhook.url, sleeps, retries=2)
    alerts = [make_alert("a"), make_alert("b")]

    webhook.default = (500, {}, b"")
    first = deliver(alerts, [ledger, hook], ledger)
    assert ledger.sent_keys() == set()
    assert not any(d.delivered for d in first)
    assert [(d.alert_key, d.sink) for d in first] == [
        ("a", "webhook"),
        ("a", "jsonl"),
        ("b", "webhook"),
        ("b", "jsonl"),
    ]
    # "a" used the webhook's retries; "b" was not tried again against a webhook that is down.
    assert len(webhook.requests) == 3
    assert first[2].error is not None and "not attempted" in first[2].error
    assert all(d.error is not None and "SECRET123" not in d.error for d in first)

    webhook.default = (200, {}, b"ok")
    second = deliver(alerts, [ledger, hook], ledger)
    assert second == [
        Delivery("a", "webhook", True, None),
        Delivery("a", "jsonl", True, None),
        Delivery("b", "webhook", True, None),
        Delivery("b", "jsonl", True, None),
    ]
    assert len(webhook.requests) == 5
    assert ledger.sent_keys() == {"a", "b"}

    third = deliver(alerts, [ledger, hook], ledger)
    assert third == []
    assert len(webhook.requests) == 5
    assert [r["key"] for r in ledger.records()] == ["a", "b"]


@dataclass
class FakeSink:
    name: str
    fail: dict[str, Exception] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        if alert.key in self.fail:
            raise self.fail[alert.key]
        self.sent.append(alert.key)


def test_one_failing_sink_or_alert_does_not_stop_the_others(tmp_path: Path) -> None:
    ledger = JsonlSink(tmp_path / "alerts.jsonl")
    picky = FakeSink("picky", fail={"a": AlertDeliveryError("rejected 'a'")})
    buggy = FakeSink("buggy", fail={"b": RuntimeError("token=SECRET123")})
    steady = FakeSink("steady")
    alerts = [make_alert("a"), make_alert("b"), make_alert("c"), make_alert("a")]

    deliveries = deliver(alerts, [picky, buggy, steady], ledger)

    assert steady.sent == ["a", "b", "c"]  # the repeated "a" is not sent twice
    assert picky.sent == ["b", "c"]  # a non-transient failure does not disable the sink
    assert buggy.sent == ["a", "c"]
    assert ledger.sent_keys() == {"c"}
    outcome = {(d.alert_key, d.sink): d for d in deliveries}
    assert len(outcome) == len(deliveries) == 12
    assert outcome["a", "picky"].error == "rejected 'a'"
    assert not outcome["a", "jsonl"].delivered
    assert "'picky'" in (outcome["a", "jsonl"].error or "")
    assert "RuntimeError" in (outcome["b", "buggy"].error or "")
    assert "SECRET123" not in (outcome["b", "buggy"].error or "")
    assert outcome["c", "jsonl"] == Delivery("c", "jsonl", True, None)


def test_deliver_with_only_the_ledger_records_once(tmp_path: Path) -> None:
    ledger = JsonlSink(tmp_path / "alerts.jsonl")
    same_file = JsonlSink(tmp_path / "alerts.jsonl", name="alias")
    assert deliver([make_alert("a")], [ledger, same_file], ledger) == [Delivery("a", "jsonl", True, None)]
    assert deliver([make_alert("a")], [], ledger) == []
    assert [r["key"] for r in ledger.records()] == ["a"]


def test_deliver_reports_a_ledger_write_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = JsonlSink(tmp_path / "alerts.jsonl")
    monkeypatch.setattr(ledger, "_append", disk_full)
    steady = FakeSink("steady")
    (sent, recorded) = deliver([make_alert("a")], [steady], ledger)
    assert sent == Delivery("a", "steady", True, None)
    assert not recorded.delivered and "could not write" in (recorded.error or "")
