"""Tables in the UI: a missing or non-finite number is shown as "-" (a NaN made the UI print
"Could not parse record" for the plan's items without an expected gain)."""

import json
import math

import pyarrow as pa

from governance_assets.defs.gates.assets import table_metadata


def test_missing_and_non_finite_numbers_are_shown_as_a_dash() -> None:
    schema = pa.schema([("item", pa.string()), ("gain", pa.float64()), ("count", pa.int64())])
    rows = [
        {"item": "a", "gain": None, "count": 3},
        {"item": "b", "gain": math.nan, "count": 1},
        {"item": None, "gain": 0.25, "count": 2},
    ]
    value = table_metadata(rows, schema, ["item", "gain", "count"]).value
    shown = [record.data for record in value.records]
    assert shown == [
        {"item": "a", "gain": "-", "count": 3},
        {"item": "b", "gain": "-", "count": 1},
        {"item": "-", "gain": 0.25, "count": 2},
    ]
    json.dumps(shown, allow_nan=False)  # what the UI parses: valid JSON, no NaN
    assert [column.type for column in value.schema.columns] == ["string", "float", "int"]
