"""Contamination-aware claims: which (model, run group) pairs HELM's `contamination.yaml` (and a
user's own file in the same format) marks as possibly trained on, weakly or strongly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

Level = Literal["weak", "strong"]
_RANK = {"weak": 1, "strong": 2}


@dataclass(frozen=True)
class ContaminationPoint:
    """Each model in `models` may have seen data of each group in `groups` (HELM's format)."""

    models: tuple[str, ...]
    groups: tuple[str, ...]
    level: Level
    description: str
    source: str
    """The file the point came from."""


@dataclass(frozen=True)
class ContaminationFlag:
    """A claim about `model` on `group` that rests on possibly contaminated data."""

    model: str
    group: str
    level: Level
    description: str
    source: str


class ContaminationError(ValueError):
    """A contamination file that cannot be used; names the file, the point and why."""


def helm_contamination_text() -> str:
    """The `contamination.yaml` shipped inside crfm-helm."""
    return resources.files("helm.benchmark.static").joinpath("contamination.yaml").read_text("utf-8")


def parse_points(text: str, source: str) -> list[ContaminationPoint]:
    """Points of a contamination file (`points: [{models, groups, level, description}]`)."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ContaminationError(f"{source}: not valid YAML: {error}") from error
    points = (data or {}).get("points") if isinstance(data, dict) else None
    if not isinstance(points, list):
        raise ContaminationError(f"{source}: expected a mapping with a 'points' list")
    parsed = []
    for index, point in enumerate(points):
        where = f"{source}: points[{index}]"
        if not isinstance(point, dict):
            raise ContaminationError(f"{where}: expected a mapping")
        for key in ("models", "groups"):
            if not isinstance(point.get(key), list) or not all(isinstance(v, str) for v in point[key]):
                raise ContaminationError(f"{where}.{key}: expected a list of names")
        if point.get("level") not in _RANK:
            raise ContaminationError(f"{where}.level: {point.get('level')!r} is not 'weak' or 'strong'")
        parsed.append(
            ContaminationPoint(
                tuple(point["models"]),
                tuple(point["groups"]),
                point["level"],
                str(point.get("description", "")),
                source,
            )
        )
    return parsed


def load_points(extra_files: Iterable[Path] = ()) -> list[ContaminationPoint]:
    """HELM's points, then each user file's (a user file may add pairs or raise a level)."""
    points = parse_points(helm_contamination_text(), "crfm-helm contamination.yaml")
    for path in extra_files:
        try:
            text = path.read_text("utf-8")
        except OSError as error:
            raise ContaminationError(f"{path}: cannot be read: {error.strerror}") from error
        points += parse_points(text, str(path))
    return points


def contamination_flags(
    points: Sequence[ContaminationPoint], model: str, groups: Iterable[str]
) -> list[ContaminationFlag]:
    """For each of the run's groups that some point lists with `model`: the strongest level found."""
    flags = []
    for group in groups:
        found = [p for p in points if model in p.models and group in p.groups]
        if found:
            worst = max(found, key=lambda p: _RANK[p.level])
            flags.append(ContaminationFlag(model, group, worst.level, worst.description, worst.source))
    return flags


def blocks_promotion(flags: Sequence[ContaminationFlag], block_level: Level | None) -> bool:
    """True when the policy blocks at `block_level` and some flag reaches it."""
    return block_level is not None and any(_RANK[f.level] >= _RANK[block_level] for f in flags)
