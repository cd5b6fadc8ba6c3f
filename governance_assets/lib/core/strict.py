"""The base of every policy model: unknown keys, mutation and non-finite numbers are refused."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that forbids unknown keys and NaN or infinite numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
