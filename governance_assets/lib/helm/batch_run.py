"""`helm-run` for many run entries in one process, writing down which runs each entry produced.

Usage: `python -m governance_assets.lib.helm.batch_run PRODUCED_JSON HELM_RUN_ARGUMENTS...`.
HELM turns all entries into run specs at once, so one bad entry (an unknown scenario) would stop
the others. Here each entry is turned into run specs on its own, through HELM's own function; an
entry that fails is recorded with its error and left out. `PRODUCED_JSON` gets
`{entry: {"run_names": [...]} or {"error": "..."}}` before any run starts; then HELM's `helm-run`
runs everything else unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from helm.benchmark import run as helm_run


def main(argv: list[str]) -> None:
    produced_path, helm_arguments = Path(argv[0]), argv[1:]
    produced: dict[str, dict[str, Any]] = {}
    all_at_once = helm_run.run_entries_to_run_specs

    def one_entry_at_a_time(run_entries: list[Any], **options: Any) -> list[Any]:
        specs = []
        for entry in run_entries:
            try:
                entry_specs = all_at_once(run_entries=[entry], **options)
            except Exception as error:  # recorded for this entry; the others run
                produced[entry.description] = {"error": f"{type(error).__name__}: {error}"}
                continue
            produced[entry.description] = {"run_names": [spec.name for spec in entry_specs]}
            specs += entry_specs
        produced_path.write_text(json.dumps(produced), "utf-8")  # read once this process has ended
        return specs

    helm_run.run_entries_to_run_specs = one_entry_at_a_time  # type: ignore[assignment]
    sys.argv = ["helm-run", *helm_arguments]
    helm_run.main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main(sys.argv[1:])
