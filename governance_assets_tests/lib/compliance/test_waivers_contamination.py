"""Waivers expire by themselves; contamination flags agree with HELM's own look-up."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from helm.benchmark.presentation.contamination import read_contamination

from governance_assets.lib.compliance import contamination, waivers

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

WAIVERS = """
waivers:
  - {gate: exact_match_floor, model: simple/model1, suite: v1, reason: "Known weak baseline model, accepted for the demo.",
     approved_by: A. Reviewer, expires: "2026-12-31T00:00:00Z"}
  - {gate: exact_match_floor, model: simple/model1, suite: v1, reason: An older waiver that has run out already.,
     approved_by: B. Reviewer, expires: "2026-12-01T00:00:00+01:00"}
  - {gate: exact_match_floor, model: simple/model1, suite: v2, reason: Only for the other suite of the test.,
     approved_by: A. Reviewer, expires: "2027-01-31T00:00:00Z"}
"""


def test_active_waivers_are_the_suites_unexpired_ones(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text(WAIVERS)
    loaded = waivers.load_waivers(path)
    active = waivers.active_waivers(loaded, "v1", NOW)
    assert [w.approved_by for w in active] == ["A. Reviewer"]
    assert waivers.waiver_for(active, "exact_match_floor", "simple/model1") is active[0]
    assert waivers.waiver_for(active, "other_gate", "simple/model1") is None
    assert waivers.active_waivers(loaded, "v1", datetime(2027, 1, 1, tzinfo=UTC)) == []
    assert waivers.load_waivers(tmp_path / "absent.yaml") == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{gate: g, model: m, suite: s, reason: short, approved_by: AB, expires: '2027-01-01T00:00:00Z'}", "reason"),
        (
            "{gate: g, model: m, suite: s, reason: long enough reason, approved_by: AB, expires: '2027-01-01'}",
            "expires",
        ),
        ("{gate: g, model: m, suite: s, reason: long enough reason, approved_by: AB}", "expires"),
        (
            "{gate: g, model: m, suite: s, reason: long enough reason, approved_by: AB, expires: '2027-01-01T00:00:00Z', x: 1}",
            "x",
        ),
    ],
)
def test_bad_waivers_name_the_file_entry_and_field(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "waivers.yaml"
    path.write_text(f"waivers:\n  - {entry}\n")
    with pytest.raises(waivers.WaiverError, match=rf"waivers.yaml: waivers\[0\]: .*{message}"):
        waivers.load_waivers(path)


def test_flags_agree_with_helms_contamination_lookup() -> None:
    points = contamination.load_points()
    reference = read_contamination()
    pairs = {(m, g) for p in reference.points for m in p.models for g in p.groups}
    assert pairs
    for model, group in sorted(pairs):
        flags = contamination.contamination_flags(points, model, [group, "unrelated_group"])
        expected = reference.get_point(model, group)
        assert expected is not None
        assert [(f.group, f.level) for f in flags] == [(group, expected.level)]
    assert contamination.contamination_flags(points, "simple/model1", ["simple1"]) == []


def test_a_user_file_adds_pairs_and_can_block(tmp_path: Path) -> None:
    path = tmp_path / "ours.yaml"
    path.write_text("points:\n  - {models: [simple/model1], groups: [simple1], level: strong, description: seen}\n")
    points = contamination.load_points([path])
    flags = contamination.contamination_flags(points, "simple/model1", ["simple1", "mmlu"])
    assert [(f.group, f.level, f.source) for f in flags] == [("simple1", "strong", str(path))]
    assert contamination.blocks_promotion(flags, "strong") and contamination.blocks_promotion(flags, "weak")
    assert not contamination.blocks_promotion(flags, None)
    weak = [contamination.ContaminationFlag("m", "g", "weak", "", "x")]
    assert not contamination.blocks_promotion(weak, "strong")
    path.write_text("points:\n  - {models: [m], groups: [g], level: medium}\n")
    with pytest.raises(contamination.ContaminationError, match=r"ours.yaml: points\[0\].level"):
        contamination.load_points([path])
