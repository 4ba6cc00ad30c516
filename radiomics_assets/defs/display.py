"""How values look in the UI's metadata: numbers rounded, nested values as Markdown tables instead of raw JSON."""

import math

import dagster as dg

DECIMALS = 3


def rounded(value):
    """A float rounded to 3 decimals (others unchanged): the UI shows every digit it is given."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value, DECIMALS)
    return value


def _cell(value) -> str:
    value = rounded(value)
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list | tuple):
        text = ", ".join(_cell(item) for item in value) or "none"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _flat(value, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, scalar or list) pairs of a nested dict."""
    rows = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            rows += _flat(item, f"{name}.")
        else:
            rows.append((name, item))
    return rows


def markdown_table(value) -> str:
    """A dict as a two-column table (nested keys dotted), a list of dicts as a table with their keys as columns,
    anything else as one rounded line."""
    if isinstance(value, dict):
        lines = ["| name | value |", "|---|---|"] + [f"| {key} | {_cell(item)} |" for key, item in _flat(value)]
        return "\n".join(lines)
    if isinstance(value, list | tuple) and value and all(isinstance(item, dict) for item in value):
        columns = list(dict.fromkeys(key for item in value for key in item))
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(item.get(column, "")) for column in columns) + " |" for item in value]
        return "\n".join(lines)
    return _cell(value)


def metadata_value(value):
    """What the UI should get for ``value``: Markdown for nested values, a rounded number or the value itself."""
    if isinstance(value, dict) or (isinstance(value, list | tuple) and any(isinstance(i, dict) for i in value)):
        return dg.MetadataValue.md(markdown_table(value))
    if isinstance(value, list | tuple):
        return _cell(value)
    return rounded(value)
