"""Human sign-off: a reviewer waives one failed or inconclusive gate for one model and suite, with
a reason, a name and an expiry; a waiver past its expiry no longer applies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

WAIVERS_FILE = "waivers.yaml"
"""The file name looked for beside the policy in force."""


class Waiver(BaseModel):
    """One reviewer's decision to accept one gate's failure for one model on one suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate: Annotated[str, Field(min_length=1)]
    """The gate's name as in the policy (e.g. `exact_match_floor`)."""
    model: Annotated[str, Field(min_length=1)]
    """The HELM model name (e.g. `simple/model1`)."""
    suite: Annotated[str, Field(min_length=1)]
    reason: Annotated[str, Field(min_length=10)]
    """Why the failure is acceptable (at least a sentence)."""
    approved_by: Annotated[str, Field(min_length=2)]
    expires: AwareDatetime
    """When the waiver stops applying (timezone-aware, e.g. `2026-12-31T00:00:00Z`)."""

    def describe(self) -> str:
        return (
            f"waiver of {self.gate} for {self.model} on {self.suite} by {self.approved_by} "
            f"until {self.expires.isoformat()}: {self.reason}"
        )


class WaiverError(ValueError):
    """A waiver file that cannot be used; the message names the file, the entry, the field and why."""


def parse_waivers(data: Any, source: str) -> list[Waiver]:
    """Validate `{waivers: [...]}` (or a bare list); errors name `source`, the entry and the field."""
    items = data.get("waivers") if isinstance(data, dict) else data
    if items is None:
        return []
    if not isinstance(items, list):
        raise WaiverError(f"{source}: expected a list under 'waivers'")
    waivers = []
    for index, item in enumerate(items):
        try:
            waivers.append(Waiver.model_validate(item))
        except ValidationError as error:
            fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<entry>'}: {e['msg']}" for e in error.errors())
            raise WaiverError(f"{source}: waivers[{index}]: {fields}") from error
    return waivers


def load_waivers(path: Path) -> list[Waiver]:
    """The waivers in `path` (none when the file does not exist)."""
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as error:
        raise WaiverError(f"{path}: not valid YAML: {error}") from error
    return parse_waivers(data, str(path))


def active_waivers(waivers: Sequence[Waiver], suite: str, now: datetime) -> list[Waiver]:
    """The waivers for `suite` that have not expired at `now` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return [waiver for waiver in waivers if waiver.suite == suite and waiver.expires > now]


def waiver_for(waivers: Sequence[Waiver], gate: str, model: str) -> Waiver | None:
    """The active waiver of `gate` for `model`, if any (the latest expiry wins)."""
    matching = [w for w in waivers if w.gate == gate and w.model == model]
    return max(matching, key=lambda w: w.expires) if matching else None
