"""How the assets show in the Dagster UI: their group, and preview tables in their metadata."""

import dagster as dg

GROUP = "cotgen"
PREVIEW_ROWS = 5


def preview_table(rows: list[dict], columns: list[str], width: int = 160) -> dg.MetadataValue:
    """A few rows as a table the UI renders, long texts cut to `width` characters."""

    def cell(value):
        text = "" if value is None else str(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: cell(row.get(c)) for c in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )
