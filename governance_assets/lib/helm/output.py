"""Reading HELM output trees (`<root>/runs/<suite>/<run>/`) as HELM 0.3.x to 0.5.x writes them."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from governance_assets.lib.core.files import NO_LINKS, UnreadableFileError, read_regular_file
from governance_assets.lib.core.storage import UnsafePathError, safe_component

REQUIRED_RUN_FILES = (
    "run_spec.json",
    "scenario.json",
    "scenario_state.json",
    "stats.json",
    "per_instance_stats.json",
)
"""HELM's runner treats a run as complete only when all five of these exist."""

SUITE_LEVEL_FOLDERS = frozenset({"groups", "eval_cache"})


class HelmOutputError(Exception):
    """A HELM file that cannot be read as HELM writes it; the message names the file and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class SuiteLocation:
    """One suite folder found under an output root."""

    suite: str
    """HELM's suite name (the folder name under `runs/`)."""
    path: Path
    """The suite folder, `<root>/runs/<suite>`."""
    root: Path
    """The output root it was found in."""


@dataclass(frozen=True)
class SuiteDiscovery:
    """Suites found under a set of roots, and the suites that could not be used."""

    suites: dict[str, SuiteLocation] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    """suite name (or folder) -> why it was left out."""


@dataclass(frozen=True)
class RunFolder:
    """One run folder of a suite, with its completeness by HELM's rule."""

    run_name: str
    location: str
    """The folder as a plain path string (cheap: a suite may list thousands of runs)."""
    missing_files: tuple[str, ...]
    fingerprint: str
    """Size and modification time of each of the five files present: changes whenever HELM
    rewrites one of them."""
    refusal: str | None = None
    """Why the folder is not read (a symbolic link), or None."""

    @property
    def path(self) -> Path:
        return Path(self.location)

    @property
    def complete(self) -> bool:
        return not self.missing_files and self.refusal is None


def _linked(what: str) -> str:
    return f"the {what} folder is a symbolic link {NO_LINKS}"


def discover_suites(roots: Sequence[Path]) -> SuiteDiscovery:
    """Find `runs/<suite>` folders under each root; a suite name found in two roots is refused."""
    found: dict[str, list[SuiteLocation]] = {}
    problems: dict[str, str] = {}
    for root in roots:
        runs_dir = root / "runs"
        if not runs_dir.is_dir():
            continue
        if runs_dir.is_symlink():  # its suites are named as refused, never read
            problems |= {entry.name: f"{runs_dir}: {_linked('runs')}" for entry in runs_dir.iterdir() if entry.is_dir()}
            continue
        for entry in sorted(runs_dir.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            if entry.is_symlink():
                problems[entry.name] = f"{entry}: {_linked('suite')}"
                continue
            try:
                safe_component(entry.name, "suite name")
            except UnsafePathError as error:
                problems[entry.name] = str(error)
                continue
            found.setdefault(entry.name, []).append(SuiteLocation(entry.name, entry, root))
    suites: dict[str, SuiteLocation] = {}
    for name, locations in found.items():
        if len(locations) > 1:
            where = ", ".join(str(loc.path) for loc in locations)
            problems[name] = f"suite {name!r} found in more than one output root: {where}"
        else:
            suites[name] = locations[0]
    return SuiteDiscovery(suites, problems)


def list_run_folders(suite_dir: Path) -> list[RunFolder]:
    """Every run folder of a suite (complete or not), sorted by run name; a run folder that is a
    symbolic link is listed with its refusal, never read. A linked suite folder is refused."""
    return [run for batch in run_folder_batches(suite_dir, 1 << 16) for run in batch]


def run_folder_batches(suite_dir: Path, size: int) -> Iterator[list[RunFolder]]:
    """The run folders of `list_run_folders`, `size` at a time: until a batch is asked for,
    only the sorted folder names are held (as an Arrow array, not as Python strings)."""
    if suite_dir.is_symlink():
        raise HelmOutputError(suite_dir, _linked("suite"))
    linked: set[str] = set()

    def folder_names(entries: Iterator[os.DirEntry[str]]) -> Iterator[str]:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in SUITE_LEVEL_FOLDERS:
                if entry.is_symlink():
                    linked.add(entry.name)
                yield entry.name

    with os.scandir(suite_dir) as entries:
        names = pa.array(folder_names(entries), pa.string())
    names = names.take(pc.array_sort_indices(names))
    return (
        [_run_folder(suite_dir, name, name in linked) for name in names.slice(start, size).to_pylist()]
        for start in range(0, len(names), size)
    )


def _run_folder(suite_dir: Path, name: str, linked: bool) -> RunFolder:
    location = os.path.join(suite_dir, name)  # noqa: PTH118 (as os.scandir names its entries)
    if linked:
        return RunFolder(name, location, (), "", f"{location}: {_linked('run')}")
    missing, parts = [], []
    for file in REQUIRED_RUN_FILES:  # the hot path of a re-ingest: plain os calls
        try:
            st = os.stat(f"{location}/{file}")  # noqa: PTH116
        except FileNotFoundError:
            missing.append(file)
            continue
        parts.append(f"{file}:{st.st_size}:{st.st_mtime_ns}")
    return RunFolder(name, location, tuple(missing), "|".join(parts))


def runs_listed_in_summary(suite_dir: Path) -> list[str] | None:
    """Run names that `helm-summarize` indexed for this suite (`runs_to_run_suites.json`, else
    the run specs in `runs.json`), or None when the suite was never summarised."""
    index = suite_dir / "runs_to_run_suites.json"
    if index.exists():
        names = load_json(index)
        if not isinstance(names, dict):
            raise HelmOutputError(index, "expected a JSON object of run name -> suite")
        return sorted(str(name) for name in names)
    path = suite_dir / "runs.json"
    if not path.exists():
        return None
    runs = load_json(path)
    if not isinstance(runs, list):
        raise HelmOutputError(path, "expected a JSON list of runs")
    listed = []
    for index_in_file, run in enumerate(runs):
        try:
            listed.append(str(run["run_spec"]["name"]))
        except (KeyError, TypeError) as error:
            raise HelmOutputError(path, f"entry {index_in_file} has no run_spec.name") from error
    return listed


def _reject_constant(constant: str) -> float:
    raise ValueError(f"non-finite number {constant} (JSON has no NaN or Infinity)")


def load_json(path: Path) -> Any:
    """Parse a JSON file; a missing, truncated or invalid file raises HelmOutputError."""
    return _parse(path, _read(path))


def _read(path: Path) -> bytes:
    """A regular file's bytes (no symbolic link, FIFO or device; within the size limit)."""
    try:
        return read_regular_file(path)
    except FileNotFoundError as error:
        raise HelmOutputError(path, "file is missing") from error
    except UnreadableFileError as error:
        raise HelmOutputError(path, error.reason) from None
    except OSError as error:
        raise HelmOutputError(path, f"cannot be read: {error.strerror}") from error


def _parse(path: Path, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN; the standard parser tells which constant and where.
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        ends_early = error.msg.startswith("Unterminated") or error.pos >= len(data.rstrip())
        kind = "truncated JSON (the file ends before the document does)" if ends_early else "invalid JSON"
        raise HelmOutputError(path, f"{kind}: {error.msg} at line {error.lineno} column {error.colno}") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise HelmOutputError(path, f"invalid JSON: {error}") from error


@dataclass(frozen=True)
class RunSpecSummary:
    """What the tidy tables need from `run_spec.json`."""

    name: str
    model: str
    model_deployment: str | None
    scenario: str
    scenario_class: str
    adapter_spec: dict[str, Any]
    groups: tuple[str, ...]
    raw: dict[str, Any]


def read_run_spec(run_dir: Path) -> RunSpecSummary:
    """Read `run_spec.json`; HELM 0.3.x has no model_deployment, newer ones do."""
    path = run_dir / "run_spec.json"
    spec = load_json(path)
    if not isinstance(spec, dict):
        raise HelmOutputError(path, "expected a JSON object")
    for key in ("name", "scenario_spec", "adapter_spec"):
        if key not in spec:
            raise HelmOutputError(path, f"missing required key {key!r}")
    adapter = spec["adapter_spec"]
    scenario_spec = spec["scenario_spec"]
    if not isinstance(adapter, dict) or not isinstance(scenario_spec, dict):
        raise HelmOutputError(path, "adapter_spec and scenario_spec must be objects")
    model = adapter.get("model") or adapter.get("model_deployment")
    if not isinstance(model, str) or not model:
        raise HelmOutputError(path, "adapter_spec has neither 'model' nor 'model_deployment'")
    name = spec["name"]
    if not isinstance(name, str) or not name:
        raise HelmOutputError(path, "'name' must be a non-empty string")
    class_name = str(scenario_spec.get("class_name", ""))
    return RunSpecSummary(
        name=name,
        model=model,
        model_deployment=adapter.get("model_deployment"),
        scenario=name.split(":", 1)[0],
        scenario_class=class_name.rsplit(".", 1)[-1],
        adapter_spec=adapter,
        groups=tuple(str(g) for g in spec.get("groups") or ()),
        raw=spec,
    )


_STAT_KEYS = frozenset({"name", "count", "sum", "sum_squared", "min", "max", "mean", "variance", "stddev"})
_NAME_KEYS = frozenset({"name", "split", "sub_split", "perturbation"})
_PERTURBATION_FLAGS = frozenset({"name", "robustness", "fairness"})


def perturbation_label(perturbation: dict[str, Any] | None) -> str | None:
    """`None` for plain stats; else HELM's name plus its distinguishing fields, e.g.
    `robustness,computed_on=worst` or `typo,computed_on=perturbed,prob=0.1`."""
    if not perturbation:
        return None
    extras = sorted((k, v) for k, v in perturbation.items() if k not in _PERTURBATION_FLAGS)
    return ",".join([str(perturbation.get("name", "?"))] + [f"{k}={v}" for k, v in extras])


class StatRow(NamedTuple):
    """One parsed HELM `Stat`: its identity and its numbers."""

    metric: str
    split: str | None
    sub_split: str | None
    perturbation: str | None
    stat_count: int
    """HELM's `count`: train trials at run level, values at instance level."""
    sum: float | None
    mean: float | None
    stddev: float | None
    min: float | None
    max: float | None


def _number(stat: dict[str, Any], key: str, where: str, path: Path) -> float | None:
    value = stat.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HelmOutputError(path, f"{where}: {key!r} is not a number ({value!r})")
    if not math.isfinite(value):
        raise HelmOutputError(path, f"{where}: {key!r} is {value} (not a finite number)")
    return float(value)


def parse_stat(stat: Any, where: str, path: Path) -> StatRow:
    """Validate one `Stat` object; unknown or missing keys and NaN/null numbers are errors."""
    if not isinstance(stat, dict):
        raise HelmOutputError(path, f"{where}: expected an object, got {type(stat).__name__}")
    unknown = stat.keys() - _STAT_KEYS
    if unknown:
        raise HelmOutputError(path, f"{where}: unknown keys {sorted(unknown)}")
    name = stat.get("name")
    if not isinstance(name, dict) or not isinstance(name.get("name"), str):
        raise HelmOutputError(path, f"{where}: missing or invalid 'name'")
    unknown = name.keys() - _NAME_KEYS
    if unknown:
        raise HelmOutputError(path, f"{where}: unknown keys in name {sorted(unknown)}")
    where = f"{where} ({name['name']})"
    count = stat.get("count")
    if isinstance(count, bool) or not isinstance(count, int | float) or count < 0:
        raise HelmOutputError(path, f"{where}: missing or invalid 'count' ({count!r})")
    if isinstance(count, float) and not count.is_integer():
        raise HelmOutputError(path, f"{where}: 'count' is {count!r}, not a whole number")
    mean = _number(stat, "mean", where, path)
    if count > 0 and mean is None:
        raise HelmOutputError(path, f"{where}: count is {count} but 'mean' is missing or null")
    return StatRow(
        metric=name["name"],
        split=name.get("split"),
        sub_split=name.get("sub_split"),
        perturbation=perturbation_label(name.get("perturbation")),
        stat_count=int(count),
        sum=_number(stat, "sum", where, path),
        mean=mean if count > 0 else None,
        stddev=_number(stat, "stddev", where, path),
        min=_number(stat, "min", where, path),
        max=_number(stat, "max", where, path),
    )


Columns = dict[str, list[Any]]
"""A table's own fields as column lists (the run's suite, name and model are added later)."""

STATS_FIELDS = (
    "metric",
    "split",
    "sub_split",
    "perturbation",
    "count",
    "sum",
    "mean",
    "stddev",
    "min",
    "max",
)
INSTANCE_STATS_FIELDS = (
    "instance_id",
    "train_trial_index",
    "perturbation",
    "metric",
    "split",
    "sub_split",
    "value",
)


class _Suspect(Exception):
    """The fast path met something odd: re-read strictly to say exactly what."""


_NUMBER_TYPES = frozenset({int, float, type(None)})


def _check_numbers(*columns: list[Any]) -> None:
    """Raise _Suspect unless every value is None, an int or a float (no booleans or strings) and
    they are all finite (a sum of finite values overflowing sends the rare file to the strict
    path, which accepts it)."""
    for values in columns:
        if not set(map(type, values)) <= _NUMBER_TYPES or not math.isfinite(sum(v for v in values if v is not None)):
            raise _Suspect


_FAST_PATH_ERRORS = (_Suspect, KeyError, TypeError, AttributeError)
_labels: dict[tuple[Any, ...], str | None] = {}


def _cached_label(perturbation: dict[str, Any]) -> str | None:
    key = tuple(perturbation.items())
    label = _labels.get(key)
    if label is None:
        label = _labels[key] = perturbation_label(perturbation)
    return label


class RunFile(NamedTuple):
    """A table's columns read from one run file, and a content digest of that file."""

    columns: Columns
    digest: str


def _load(path: Path) -> tuple[Any, str]:
    """The parsed file and an xxh3-128 digest of its bytes (read once)."""
    data = _read(path)
    return _parse(path, data), xxhash.xxh3_128_hexdigest(data)


def _load_list(path: Path) -> tuple[list[Any], str]:
    data, digest = _load(path)
    if not isinstance(data, list):
        raise HelmOutputError(path, "expected a JSON list")
    return data, digest


def _as_columns(rows: Sequence[tuple[Any, ...]], fields: Sequence[str]) -> Columns:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
    return {name: list(column) for name, column in zip(fields, columns, strict=True)}


def _stats_fast(stats: list[Any]) -> Columns:
    columns: Columns = {name: [] for name in STATS_FIELDS}
    metric, split, sub_split, perturbation, counts, sums, means, stddevs, mins, maxs = columns.values()
    for stat in stats:
        name = stat["name"]
        count, mean = stat["count"], stat.get("mean")
        if (
            not (stat.keys() <= _STAT_KEYS and name.keys() <= _NAME_KEYS)
            or type(count) is not int
            or count < 0
            or (mean is None and count)
        ):
            raise _Suspect
        metric.append(name["name"])
        split.append(name.get("split"))
        sub_split.append(name.get("sub_split"))
        label = name.get("perturbation")
        perturbation.append(label and _cached_label(label))
        counts.append(count)
        sums.append(stat.get("sum"))
        means.append(mean if count else None)
        stddevs.append(stat.get("stddev"))
        mins.append(stat.get("min"))
        maxs.append(stat.get("max"))
    _check_numbers(sums, means, stddevs, mins, maxs)
    return columns


def read_stats(run_dir: Path, strict: bool = False) -> RunFile:
    """Every run-level stat of `stats.json`. The fast path trusts types (Arrow checks them
    later); `strict` validates each stat and raises HelmOutputError naming the first bad one."""
    path = run_dir / "stats.json"
    stats, digest = _load_list(path)
    if not strict:
        try:
            return RunFile(_stats_fast(stats), digest)
        except _FAST_PATH_ERRORS:
            pass
    rows = [parse_stat(stat, f"stat {index}", path) for index, stat in enumerate(stats)]
    return RunFile(_as_columns(rows, STATS_FIELDS), digest)


def _instance_stats_fast(entries: list[Any]) -> Columns:
    columns: Columns = {name: [] for name in INSTANCE_STATS_FIELDS}
    instance_ids, trials, perturbation, metric, split, sub_split, values = columns.values()
    for entry in entries:
        instance_id, trial = entry["instance_id"], entry.get("train_trial_index", 0)
        entry_label = entry.get("perturbation")
        entry_label = entry_label and _cached_label(entry_label)
        for stat in entry["stats"]:
            name = stat["name"]
            count, mean = stat["count"], stat.get("mean")
            if (
                not (stat.keys() <= _STAT_KEYS and name.keys() <= _NAME_KEYS)
                or type(count) is not int
                or count < 0
                or (mean is None and count)
            ):
                raise _Suspect
            instance_ids.append(instance_id)
            trials.append(trial)
            label = name.get("perturbation")
            perturbation.append(_cached_label(label) if label else entry_label)
            metric.append(name["name"])
            split.append(name.get("split"))
            sub_split.append(name.get("sub_split"))
            values.append(mean if count else None)
    _check_numbers(values)
    return columns


def read_instance_stats(run_dir: Path, strict: bool = False) -> RunFile:
    """Every per-instance stat of `per_instance_stats.json`, one value each (the stat's mean)."""
    path = run_dir / "per_instance_stats.json"
    entries, digest = _load_list(path)
    if not strict:
        try:
            return RunFile(_instance_stats_fast(entries), digest)
        except _FAST_PATH_ERRORS:
            pass
    rows: list[tuple[Any, ...]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "instance_id" not in entry or "stats" not in entry:
            raise HelmOutputError(path, f"entry {index}: needs 'instance_id' and 'stats'")
        instance_id = entry["instance_id"]
        trial = entry.get("train_trial_index", 0)
        if not isinstance(instance_id, str) or not isinstance(trial, int):
            raise HelmOutputError(
                path,
                f"entry {index}: 'instance_id' must be a string, 'train_trial_index' an integer",
            )
        entry_perturbation = perturbation_label(entry.get("perturbation"))
        if not isinstance(entry["stats"], list):
            raise HelmOutputError(path, f"entry {index} ({instance_id}): 'stats' is not a list")
        for stat_index, stat in enumerate(entry["stats"]):
            row = parse_stat(stat, f"entry {index} ({instance_id}) stat {stat_index}", path)
            rows.append(
                (
                    instance_id,
                    trial,
                    row.perturbation or entry_perturbation,
                    row.metric,
                    row.split,
                    row.sub_split,
                    row.mean,
                )
            )
    return RunFile(_as_columns(rows, INSTANCE_STATS_FIELDS), digest)


class PredictionRow(NamedTuple):
    """One request of `scenario_state.json`: what was asked, what came back, what was right."""

    instance_id: str
    train_trial_index: int
    perturbation: str | None
    split: str | None
    sub_split: str | None
    input: str
    prompt: str | None
    completion: str | None
    references: list[str]
    correct_references: list[str]
    success: bool | None
    error: str | None


def _text(value: Any) -> str:
    return str(value.get("text", "")) if isinstance(value, dict) else str(value or "")


def read_predictions(run_dir: Path, strict: bool = False) -> RunFile:
    """Prompts, first completions and references from `scenario_state.json` (always strict:
    a suite has few requests compared with stats)."""
    path = run_dir / "scenario_state.json"
    state, digest = _load(path)
    if not isinstance(state, dict) or not isinstance(state.get("request_states"), list):
        raise HelmOutputError(path, "expected an object with a 'request_states' list")
    rows = []
    for index, request_state in enumerate(state["request_states"]):
        instance = request_state.get("instance") if isinstance(request_state, dict) else None
        if not isinstance(instance, dict) or "id" not in instance:
            raise HelmOutputError(path, f"request_states[{index}]: missing instance or instance.id")
        references = instance.get("references") or []
        result = request_state.get("result") or {}
        completions = result.get("completions") or []
        request = request_state.get("request") or {}
        rows.append(
            PredictionRow(
                instance_id=str(instance["id"]),
                train_trial_index=int(request_state.get("train_trial_index", 0)),
                perturbation=perturbation_label(instance.get("perturbation")),
                split=instance.get("split"),
                sub_split=instance.get("sub_split"),
                input=_text(instance.get("input")),
                prompt=request.get("prompt"),
                completion=_text(completions[0]) if completions else None,
                references=[_text(ref.get("output")) for ref in references],
                correct_references=[
                    _text(ref.get("output")) for ref in references if "correct" in (ref.get("tags") or [])
                ],
                success=result.get("success") if result else None,
                error=result.get("error") if result else None,
            )
        )
    return RunFile(_as_columns(rows, PredictionRow._fields), digest)
