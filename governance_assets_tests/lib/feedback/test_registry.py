"""The registry hook on a real MLflow store: changes seen, decisions written back, champion moved
only on promote with auto_promote."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from governance_assets.lib.feedback.registry import (
    changed_versions,
    decision_for,
    registered_versions,
    suite_for,
    write_back,
)
from governance_assets.lib.gates.release import release_decisions


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    store = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    store.create_registered_model("assistant")
    store.create_model_version("assistant", source=str(tmp_path / "a"), tags={"helm.model": "simple/model1"})
    store.create_model_version("assistant", source=str(tmp_path / "b"), tags={"helm.model": "simple/model1"})
    store.create_model_version("assistant", source=str(tmp_path / "c"))
    return store


def _verdict(status: str, blocks: bool) -> dict[str, object]:
    return {
        "model": "simple/model1",
        "gate": "exact_match_floor",
        "status": status,
        "reason": status,
        "blocks_release": blocks,
    }


def test_new_versions_and_moved_aliases_are_changes(client: MlflowClient) -> None:
    versions = registered_versions(client, "helm.model")
    assert [(v.key, v.aliases, v.helm_model) for v in versions] == [
        ("assistant/1", (), "simple/model1"),
        ("assistant/2", (), "simple/model1"),
        ("assistant/3", (), None),
    ]
    seen = {v.key: v.state for v in versions}
    assert changed_versions(versions, {}) == versions and changed_versions(versions, seen) == []
    client.set_registered_model_alias("assistant", "challenger", "2")
    again = registered_versions(client, "helm.model")
    assert [v.key for v in changed_versions(again, seen)] == ["assistant/2"]
    client.delete_registered_model_alias("assistant", "challenger")
    assert changed_versions(registered_versions(client, "helm.model"), {v.key: v.state for v in again}) == []
    assert suite_for(versions[0]) == "registry-assistant-v1"


def test_champion_moves_only_on_promote_with_auto_promote(client: MlflowClient) -> None:
    passing = release_decisions([_verdict("pass", False)])
    failing = release_decisions([_verdict("fail", True)])
    decision, reasons = decision_for(passing, "simple/model1", "s1")
    assert (decision, reasons) == ("promote", [])
    assert not write_back(client, "assistant", "1", decision, reasons, "s1", auto_promote=False).champion_moved
    assert "champion" not in client.get_registered_model("assistant").aliases
    assert write_back(client, "assistant", "1", decision, reasons, "s1", auto_promote=True).champion_moved
    assert str(client.get_model_version_by_alias("assistant", "champion").version) == "1"
    decision, reasons = decision_for(failing, "simple/model1", "s2")
    assert decision == "block" and reasons == ["exact_match_floor: fail"]
    assert not write_back(client, "assistant", "2", decision, reasons, "s2", auto_promote=True).champion_moved
    assert str(client.get_model_version_by_alias("assistant", "champion").version) == "1"
    tags = client.get_model_version("assistant", "2").tags
    assert tags == {
        "helm.model": "simple/model1",
        "governance.decision": "block",
        "governance.suite": "s2",
        "governance.reasons": "exact_match_floor: fail",
    }
    assert decision_for(None, "simple/model1", "s3")[0] == "block"
    assert decision_for(passing, None, "s3") == (
        "block",
        ["the version has no HELM model tag, so it could not be evaluated"],
    )
