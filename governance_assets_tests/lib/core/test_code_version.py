"""Code versions change exactly when the code they version changes."""

import importlib
import sys
from pathlib import Path

import pytest

from governance_assets.lib.core.code_version import reachable_modules, source_digest


def test_digest_follows_imports_and_changes_with_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "versioned"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "logic.py").write_text("def rule(x):\n    return x > 0.5\n")
    (package / "unrelated.py").write_text("VALUE = 1\n")
    (package / "asset.py").write_text("from versioned.logic import rule\n\nKEY = 'a'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("versioned")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("versioned.asset")
    importlib.import_module("versioned.unrelated")
    assert reachable_modules("versioned.asset", "versioned") == ["versioned.asset", "versioned.logic"]
    before = source_digest("versioned.asset", "versioned")
    assert source_digest("versioned.asset", "versioned") == before  # stable

    (package / "unrelated.py").write_text("VALUE = 2\n")
    importlib.reload(sys.modules["versioned.unrelated"])
    assert source_digest("versioned.asset", "versioned") == before  # code it does not run

    (package / "logic.py").write_text("def rule(x):\n    return x > 0.6\n")
    importlib.reload(sys.modules["versioned.logic"])
    assert source_digest("versioned.asset", "versioned") != before  # a threshold in the logic it runs
