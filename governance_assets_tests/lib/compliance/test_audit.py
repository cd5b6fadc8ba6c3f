"""The audit ledger: a chain that names the first altered, deleted or reordered entry."""

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from governance_assets.lib.compliance import audit

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _event(index: int, model: str | None = "simple/model1") -> audit.LedgerEvent:
    return audit.LedgerEvent(
        kind="gate_verdict",
        subject=f"gate_{index}",
        recorded_at=T0 + timedelta(minutes=index),
        dagster_run_id=f"run-{index}",
        code_version="1",
        policy_hash="p" * 64,
        suite="v1",
        model=model,
        details={"outcome": "fail" if index % 2 else "pass", "actual": index / 10},
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    audit.append(path, [_event(i) for i in range(3)])
    audit.append(path, [_event(i, model="other/model") for i in range(3, 5)])
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_untouched_ledger_verifies_and_appends_never_rewrite(ledger: Path) -> None:
    result = audit.verify(ledger)
    assert result.intact and result.entries == 5 and result.first_bad_line is None
    before = ledger.read_bytes()
    head = audit.append(ledger, [_event(5)])
    assert ledger.read_bytes().startswith(before)
    assert audit.verify(ledger, expected_head=head).intact
    assert [e["sequence"] for e in audit.entries(ledger)] == list(range(6))


def test_an_altered_entry_is_named(ledger: Path) -> None:
    lines = _lines(ledger)
    entry = orjson.loads(lines[2])
    entry["details"]["outcome"] = "tampered"
    lines[2] = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n"
    ledger.write_bytes(b"".join(lines))
    result = audit.verify(ledger)
    assert not result.intact and result.first_bad_line == 3 and "altered" in result.reason


def test_an_altered_entry_with_a_recomputed_hash_breaks_the_next_link(ledger: Path) -> None:
    lines = _lines(ledger)
    entry = orjson.loads(lines[1])
    entry["details"]["outcome"] = "tampered"
    entry["hash"] = audit._entry_hash(entry)
    lines[1] = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS) + b"\n"
    ledger.write_bytes(b"".join(lines))
    result = audit.verify(ledger)
    assert not result.intact and result.first_bad_line == 3


def test_a_deleted_entry_is_named(ledger: Path) -> None:
    lines = _lines(ledger)
    ledger.write_bytes(b"".join(lines[:1] + lines[2:]))
    result = audit.verify(ledger)
    assert not result.intact and result.first_bad_line == 2 and "sequence" in result.reason


def test_reordered_entries_are_named(ledger: Path) -> None:
    lines = _lines(ledger)
    lines[3], lines[4] = lines[4], lines[3]
    ledger.write_bytes(b"".join(lines))
    result = audit.verify(ledger)
    assert not result.intact and result.first_bad_line == 4


def test_entries_removed_at_the_end_are_caught_against_the_recorded_head(ledger: Path) -> None:
    head = audit.verify(ledger).head
    ledger.write_bytes(b"".join(_lines(ledger)[:-1]))
    assert audit.verify(ledger).intact  # the chain alone cannot see a cut tail
    result = audit.verify(ledger, expected_head=head)
    assert not result.intact and "expected head" in result.reason


def test_a_broken_ledger_is_not_extended_and_naive_times_are_refused(ledger: Path, tmp_path: Path) -> None:
    ledger.write_bytes(b"".join(_lines(ledger)[1:]))
    with pytest.raises(ValueError, match="broken"):
        audit.append(ledger, [_event(9)])
    naive = audit.LedgerEvent("report", "x", datetime(2026, 1, 1), "r", "1", "p")  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        audit.append(tmp_path / "new.jsonl", [naive])


def test_history_lists_one_model_and_keeps_zones(ledger: Path) -> None:
    audit.append(
        ledger,
        [
            audit.LedgerEvent(
                "policy_change", "policy.yaml", T0.astimezone(timezone(timedelta(hours=2))), "r", "1", "q" * 64
            ),
            _event(9, model="*"),
        ],
    )
    history = audit.history(ledger, "other/model")
    assert [e["subject"] for e in history] == ["gate_3", "gate_4", "policy.yaml", "gate_9"]
    assert history[-2]["recorded_at"].endswith("+02:00")
    assert audit.last_policy_hash(ledger) == "q" * 64


def test_audit_commands_verify_and_list_history(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from governance_assets.lib.compliance import audit_cli

    head = audit.verify(ledger).head
    verify = argparse.Namespace(audit_command="verify", ledger=ledger, expect_head=None)
    assert audit_cli.run(verify, ledger.parent, head) == 0
    assert "intact, 5 entries" in capsys.readouterr().out
    history = argparse.Namespace(audit_command="history", ledger=ledger, model="other/model", json=False)
    assert audit_cli.run(history, ledger.parent, None) == 0
    out = capsys.readouterr().out
    assert "gate_3" in out and "gate_4" in out and "gate_0" not in out
    lines = _lines(ledger)
    ledger.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    assert audit_cli.run(verify, ledger.parent, head) == 1
    assert "NOT INTACT after 1 good entries: line 2:" in capsys.readouterr().out


def test_the_cli_entry_point_runs_audit_verify(ledger: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "GOVERNANCE_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    command = [sys.executable, "-m", "governance_assets.cli", "audit", "verify", "--ledger", str(ledger)]
    intact = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert intact.returncode == 0 and "intact, 5 entries" in intact.stdout, intact.stderr
    ledger.write_bytes(b"".join(_lines(ledger)[1:]))
    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert broken.returncode == 1 and "line 1:" in broken.stdout
