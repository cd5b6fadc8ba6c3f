"""Reproducibility of HELM runs: re-create the prompts (HELM's dry run) and re-run a sample with
caching off, then compare with what was recorded."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from governance_assets.lib.helm import runner as helm_runner
from governance_assets.lib.helm.output import HelmOutputError, load_json, read_stats
from governance_assets.lib.lineage.records import request_hashes

Status = Literal["reproduced", "differs", "cannot be checked"]
HelmSettingsFactory = Callable[[str, bool, int], helm_runner.HelmSettings]
"""(label, dry_run, max_eval_instances) -> settings for a fresh scratch output folder."""
_MODEL_ARG = re.compile(r"(^|[:,])model=[^,]*")
OFFLINE_DEPLOYMENT_PREFIXES = ("simple/",)
WALL_CLOCK_STATS = re.compile(r"(runtime|request_time|_time$)")
"""Stats that measure time, not the model: never compared."""
"""Deployments HELM serves without network or credentials."""


@dataclass
class RunReproduction:
    """What re-creating one run showed."""

    run_name: str
    deterministic: bool
    status: Status = "cannot be checked"
    details: list[str] = field(default_factory=list)
    requests_compared: int = 0
    requests_differing: int = 0
    stats_compared: int = 0
    stats_differing: int = 0
    rerun: bool = False


def is_deterministic(adapter_spec: Mapping[str, Any]) -> bool:
    """Greedy decoding (temperature 0): the same prompt must give the same completions."""
    return float(adapter_spec.get("temperature") or 0.0) == 0.0


def run_entry(run_spec: Mapping[str, Any]) -> str:
    """A HELM run entry that re-creates the run spec: its name with the real model deployment
    (HELM writes `/` in model names as `_` in run names)."""
    adapter = run_spec["adapter_spec"]
    deployment = adapter.get("model_deployment") or adapter["model"]
    name = str(run_spec["name"])
    if _MODEL_ARG.search(name):
        return _MODEL_ARG.sub(lambda m: f"{m.group(1)}model={deployment}", name)
    return f"{name},model={deployment}" if ":" in name else f"{name}:model={deployment}"


def available_offline(deployment: str, local_deployments: Sequence[str]) -> bool:
    """Whether this machine can query the deployment (built-in, or configured in prod_env)."""
    return deployment.startswith(OFFLINE_DEPLOYMENT_PREFIXES) or deployment in local_deployments


def compare_adapters(recorded: Mapping[str, Any], recreated: Mapping[str, Any]) -> list[str]:
    """Adapter settings that differ, named with both values."""
    keys = sorted(set(recorded) | set(recreated))
    return [
        f"adapter setting {key}: recorded {recorded.get(key)!r}, re-created {recreated.get(key)!r}"
        for key in keys
        if recorded.get(key) != recreated.get(key)
    ]


def compare_requests(recorded: Mapping[str, str], recreated: Mapping[str, str]) -> tuple[int, list[str]]:
    """How many requests were compared and which differ (by instance, trial, perturbation)."""
    differing = [key for key in sorted(recorded) if recreated.get(key) != recorded[key]]
    differing += [f"{key} (not in the recorded run)" for key in sorted(set(recreated) - set(recorded))]
    return len(recorded), differing


def compare_stats(recorded_dir: Path, rerun_dir: Path, tolerance: float) -> tuple[int, list[str]]:
    """Run-level means compared (exactly when `tolerance` is 0; timings excluded); descriptions
    of the differences."""

    def means(folder: Path) -> dict[tuple[Any, ...], float | None]:
        columns = read_stats(folder).columns
        keys = zip(columns["metric"], columns["split"], columns["sub_split"], columns["perturbation"], strict=True)
        return dict(zip(keys, columns["mean"], strict=True))

    recorded, rerun = means(recorded_dir), means(rerun_dir)
    recorded = {key: value for key, value in recorded.items() if not WALL_CLOCK_STATS.search(str(key[0]))}
    differences = []
    for key, value in sorted(recorded.items(), key=str):
        other = rerun.get(key)
        if key not in rerun:
            differences.append(f"stat {key[0]} ({key[1]}) missing from the re-run")
        elif value is None or other is None:
            if value != other:
                differences.append(f"stat {key[0]} ({key[1]}): recorded {value}, re-run {other}")
        elif not math.isclose(value, other, rel_tol=0, abs_tol=tolerance) and value != other:
            differences.append(
                f"stat {key[0]} ({key[1]}): recorded {value!r}, re-run {other!r} (Δ {other - value:+.3g})"
            )
    return len(recorded), differences


def _scenario_state(run_dir: Path) -> dict[str, Any]:
    state = load_json(run_dir / "scenario_state.json")
    if not isinstance(state, dict):
        raise HelmOutputError(run_dir / "scenario_state.json", "expected a JSON object")
    return state


def reproduce_suite(
    runs: Mapping[str, Path],
    sample: Sequence[str],
    scratch: HelmSettingsFactory,
    local_deployments: Sequence[str],
    tolerance: float,
    log: Callable[[str], None],
) -> list[RunReproduction]:
    """Re-create every run whose model is reachable and compare its requests with the recorded
    ones: the runs in `sample` fully re-run (caching off, their stats compared too), the others
    dry-run (prompts only); one helm-run process for each kind, both at once."""
    results: dict[str, RunReproduction] = {}
    entries: dict[str, tuple[str, int]] = {}
    for name, folder in sorted(runs.items()):
        spec = load_json(folder / "run_spec.json")
        adapter = spec["adapter_spec"]
        result = results[name] = RunReproduction(name, is_deterministic(adapter))
        deployment = adapter.get("model_deployment") or adapter["model"]
        if not available_offline(deployment, local_deployments):
            result.details.append(f"no access to model deployment {deployment} from this machine")
            continue
        entries[name] = (run_entry(spec), int(adapter.get("max_eval_instances") or 1000))
    # The sample is re-run in full (its requests come from the re-run); the others are dry-run.
    # Both helm-run processes run side by side.
    rerun = {name: entries[name] for name in sample if name in entries}
    dry = {name: entry for name, entry in entries.items() if name not in rerun}
    with ThreadPoolExecutor(max_workers=2) as pool:
        dry_runs = pool.submit(_run_into, scratch, "dry-run", True, dry, log)
        reruns = pool.submit(_run_into, scratch, "rerun", False, rerun, log)
        recreated_dirs, rerun_dirs = dry_runs.result(), reruns.result()
    for name, recreated in (recreated_dirs | rerun_dirs).items():
        result = results[name]
        result.rerun = name in rerun_dirs
        if recreated is None:
            result.details.append(
                "the re-run failed (see the run log)" if result.rerun else "HELM could not re-create the prompts"
            )
            continue
        recorded_spec, recreated_spec = load_json(runs[name] / "run_spec.json"), load_json(recreated / "run_spec.json")
        result.details += compare_adapters(recorded_spec["adapter_spec"], recreated_spec["adapter_spec"])
        compared, differing = compare_requests(
            request_hashes(_scenario_state(runs[name])), request_hashes(_scenario_state(recreated))
        )
        result.requests_compared, result.requests_differing = compared, len(differing)
        if differing:
            result.details.append(f"{len(differing)} of {compared} requests differ, e.g. {', '.join(differing[:3])}")
        if result.rerun:
            stats_compared, stats_differing = compare_stats(
                runs[name], recreated, 0.0 if result.deterministic else tolerance
            )
            result.stats_compared, result.stats_differing = stats_compared, len(stats_differing)
            result.details += stats_differing[:20]
        result.status = "differs" if result.details else "reproduced"
    return [results[name] for name in sorted(results)]


def _run_into(
    scratch: HelmSettingsFactory,
    label: str,
    dry_run: bool,
    entries: Mapping[str, tuple[str, int]],
    log: Callable[[str], None],
) -> dict[str, Path | None]:
    """Run entries (with their recorded instance counts) into scratch folders; map each run
    name to its new folder, or None if HELM failed."""
    folders: dict[str, Path | None] = {}
    by_count: dict[int, dict[str, str]] = {}
    for name, (entry, count) in entries.items():
        by_count.setdefault(count, {})[name] = entry
    for count, group in sorted(by_count.items()):
        settings = scratch(f"{label}-{count}", dry_run, count)
        outcomes = {o.entry: o for o in helm_runner.run_entries(list(group.values()), "reproduction", settings, log)}
        for name, entry in group.items():
            outcome = outcomes[entry]
            done = outcome.status in ("complete", "skipped") and outcome.run_name is not None
            folders[name] = settings.output_path / "runs" / "reproduction" / str(outcome.run_name) if done else None
            if not done:
                log(f"re-creating {name} failed: {outcome.error}")
    return folders


def render_markdown(suite: str, results: Sequence[RunReproduction]) -> str:
    """The report as Markdown."""
    counts = {
        status: sum(r.status == status for r in results) for status in ("reproduced", "differs", "cannot be checked")
    }
    lines = [
        f"# Reproducibility of suite {suite}",
        "",
        ", ".join(f"{count} {status}" for status, count in counts.items()),
        "",
        "| run | deterministic | status | requests differing | stats differing (re-run) | details |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        stats = f"{r.stats_differing} of {r.stats_compared}" if r.rerun else "not re-run"
        requests = f"{r.requests_differing} of {r.requests_compared}" if r.requests_compared else "-"
        details = "; ".join(r.details).replace("|", "\\|") or "-"
        lines.append(
            f"| {r.run_name} | {'yes' if r.deterministic else 'no'} | {r.status} | {requests} | {stats} | {details} |"
        )
    return "\n".join(lines) + "\n"


def render_html(suite: str, results: Sequence[RunReproduction]) -> str:
    """The report as a standalone HTML page."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
            r.run_name, "yes" if r.deterministic else "no", r.status,
            f"{r.requests_differing} of {r.requests_compared}" if r.requests_compared else "-",
            f"{r.stats_differing} of {r.stats_compared}" if r.rerun else "not re-run",
            "; ".join(r.details) or "-",
        )) + "</tr>"
        for r in results
    )  # fmt: skip
    head = "".join(
        f"<th>{h}</th>"
        for h in ("run", "deterministic", "status", "requests differing", "stats differing (re-run)", "details")
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Reproducibility of suite {html.escape(suite)}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}</style></head>"
        f"<body><h1>Reproducibility of suite {html.escape(suite)}</h1><table><tr>{head}</tr>{rows}</table></body></html>"
    )
