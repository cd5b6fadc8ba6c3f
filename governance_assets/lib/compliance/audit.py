"""The tamper-evident audit trail: an append-only JSON Lines ledger whose entries each carry the
hash of the one before, so that altering, deleting or reordering any entry breaks the chain."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from governance_assets.lib.core.durable_append import append_line

GENESIS = "0" * 64
"""The `previous_hash` of the first entry."""

EntryKind = Literal["gate_verdict", "release_decision", "report", "policy_change", "waiver"]


def _entry_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of an entry without its own `hash` field, keys sorted."""
    content = {key: value for key, value in body.items() if key != "hash"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class LedgerEvent:
    """What happened, as the caller knows it; the ledger adds the sequence number and the hashes."""

    kind: EntryKind
    subject: str
    """What the entry is about, e.g. the gate name, `release/decision` or the policy's source."""
    recorded_at: datetime
    """Timezone-aware; naive datetimes are refused."""
    dagster_run_id: str
    code_version: str
    policy_hash: str
    suite: str | None = None
    model: str | None = None
    details: Mapping[str, Any] | None = None
    """JSON-able facts: the outcome, actual and threshold, the decision, a report's content hash."""


@dataclass(frozen=True)
class Verification:
    """The result of checking a ledger from its first entry to its last."""

    intact: bool
    entries: int
    head: str
    """Hash of the last intact entry (GENESIS when none)."""
    first_bad_line: int | None = None
    """1-based line number of the first entry that breaks the chain."""
    reason: str = ""


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    if not path.exists():
        return
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if line.strip():
                yield number, line


def verify(path: Path, expected_head: str | None = None) -> Verification:
    """Walk the chain: every entry must parse, hash to its `hash`, point at the previous entry's hash
    and carry the next sequence number. With `expected_head` (the head recorded elsewhere, such as
    the asset's metadata), a ledger cut short at its end is caught too."""
    previous, count = GENESIS, 0
    for number, line in _read_lines(path):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            return Verification(False, count, previous, number, f"line {number}: not JSON ({error})")
        if not isinstance(entry, dict):
            return Verification(False, count, previous, number, f"line {number}: not a JSON object")
        if entry.get("sequence") != count:
            return Verification(
                False, count, previous, number,
                f"line {number}: sequence {entry.get('sequence')!r}, expected {count} (an entry was deleted or moved)",
            )  # fmt: skip
        if entry.get("previous_hash") != previous:
            return Verification(
                False, count, previous, number,
                f"line {number}: previous_hash does not match the entry before (deleted, inserted or reordered)",
            )  # fmt: skip
        if _entry_hash(entry) != entry.get("hash"):
            return Verification(False, count, previous, number, f"line {number}: content altered (hash mismatch)")
        previous, count = str(entry["hash"]), count + 1
    if expected_head is not None and expected_head != previous:
        return Verification(
            False, count, previous, None,
            f"the last entry's hash {previous[:12]}… is not the expected head {expected_head[:12]}… (entries removed at the end?)",
        )  # fmt: skip
    return Verification(True, count, previous)


def entries(path: Path) -> list[dict[str, Any]]:
    """Every entry, in ledger order (read as is; call `verify` to trust them)."""
    return [orjson.loads(line) for _, line in _read_lines(path)]


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold a lock beside the ledger so that two writers never both extend the same head."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


def append(path: Path, events: list[LedgerEvent]) -> str:
    """Append `events` after checking the chain; returns the new head hash. Refuses to extend a
    broken ledger (appending would hide the break behind valid entries)."""
    with _exclusive(path):
        return _append_locked(path, events)


def _append_locked(path: Path, events: list[LedgerEvent]) -> str:
    state = verify(path)
    if not state.intact:
        raise ValueError(f"{path}: the audit ledger is broken, not appending: {state.reason}")
    previous, sequence = state.head, state.entries
    for event in events:
        if event.recorded_at.tzinfo is None or event.recorded_at.utcoffset() is None:
            raise ValueError(f"audit event {event.kind} {event.subject!r}: recorded_at must be timezone-aware")
        body: dict[str, Any] = {
            "sequence": sequence,
            "recorded_at": event.recorded_at.isoformat(),
            "kind": event.kind,
            "subject": event.subject,
            "suite": event.suite,
            "model": event.model,
            "dagster_run_id": event.dagster_run_id,
            "code_version": event.code_version,
            "policy_hash": event.policy_hash,
            "details": dict(event.details or {}),
            "previous_hash": previous,
        }
        body["hash"] = _entry_hash(body)
        append_line(path, orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"\n")
        previous, sequence = body["hash"], sequence + 1
    return previous


def history(path: Path, model: str) -> list[dict[str, Any]]:
    """One model's entries, with those for every model (model `*`, e.g. a data-quality gate) and
    those without a model (policy changes), oldest first."""
    return [entry for entry in entries(path) if entry.get("model") in (model, "*", None)]


def last_policy_hash(path: Path) -> str | None:
    """The policy hash of the most recent `policy_change` entry, to tell whether the policy changed."""
    changes = [entry for entry in entries(path) if entry.get("kind") == "policy_change"]
    return str(changes[-1]["policy_hash"]) if changes else None
