"""Render the inventory reference (docs/inventory.md) from the schema."""

from __future__ import annotations

import json

from mailstack.inventory import resolve, schema

HEADER = """# Inventory reference

Generated from `schemas/inventory.schema.json` by `mailstack schema-docs`; do not edit by hand.
Every default below is applied by `mailstack check` and the deploys; the schema is the only
place defaults live.

| path | type | default | description |
|---|---|---|---|
"""


def _type(node: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_type(resolve(node['items']))}"
    if "pattern" in node or "format" in node:
        return f"{kind} ({node.get('format', 'pattern')})"
    return kind


def _rows(path: str, node: dict) -> list[str]:
    node = resolve(node)
    default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
    description = node.get("description", "")
    if "x-planned" in node:
        description = (f"**Not implemented yet** (planned: {node['x-planned']}; `mailstack check` refuses it). "
                       + description)
    planned_values = {**node.get("x-planned-values", {}),
                      **resolve(node.get("items", {})).get("x-planned-values", {})}
    for value, why in planned_values.items():
        description += f" `{value}`: not implemented yet ({why})."
    description = description.replace("|", "\\|")
    rows = [f"| `{path}` | {_type(node)} | {default} | {description} |"] if path else []
    for key, sub in node.get("properties", {}).items():
        rows += _rows(f"{path}.{key}" if path else key, sub)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        rows += _rows(f"{path}.NAME", extra)
    items = node.get("items")
    if isinstance(items, dict) and resolve(items).get("type") == "object":
        for key, sub in resolve(items).get("properties", {}).items():
            rows += _rows(f"{path}[].{key}", sub)
    return rows


def render() -> str:
    return HEADER + "\n".join(_rows("", schema())) + "\n"
