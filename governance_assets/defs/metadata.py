"""Formatting Dagster metadata for the UI."""

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `rows` (the UI renders it in the asset's metadata)."""
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(str(row.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in columns) + " |\n"
        for row in rows
    )
    return header + body


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    """The UI's column list (`dagster/column_schema`) from an Arrow schema."""
    return dg.TableSchema(columns=[dg.TableColumn(field.name, str(field.type)) for field in schema])


def parquet_table_metadata(paths: Sequence[Path]) -> dict[str, Any]:
    """`dagster/column_schema` and `dagster/row_count` of the Parquet files an asset wrote (one per
    partition of the run), read from their footers: the schema of the first, the rows of all."""
    files = [pq.ParquetFile(path) for path in paths if path.exists()]
    if not files:
        return {}
    return {
        "dagster/column_schema": table_schema(files[0].schema_arrow),
        "dagster/row_count": sum(file.metadata.num_rows for file in files),
    }


def embedded_png(name: str, png: bytes) -> dg.MetadataValue:  # type: ignore[type-arg]
    """A plot shown in the asset's metadata (Markdown with the PNG inline)."""
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
