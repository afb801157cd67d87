"""The published inventory schema, schemas/inventory.schema.json: the model's core sections
(mailstack/inventory/core.schema.json) with the sections each component declares (its
folder's schema.json) and the host roles the components serve. Built by `mailstack
schema-docs`, checked in, and compared by a unit test; the model reads only the result."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from mailstack.inventory.schema import SCHEMA_PATH

CORE = Path(__file__).resolve().parent / "inventory" / "core.schema.json"


def assembled(components) -> dict:
    """The whole schema from the core and the components, in the registry's order."""
    schema = json.loads(CORE.read_text())
    sections = schema["properties"]
    owner = dict.fromkeys(sections, "the core")
    for component in components:
        for name, fragment in component.schema.items():
            if name in sections:
                raise ValueError(f"component {component.name!r} declares the section {name!r}, which "
                                 f"{owner[name]} declares already")
            sections[name], owner[name] = copy.deepcopy(fragment), f"component {component.name!r}"
            if sections[name].get("type") == "object":  # a section left out of an inventory: all its defaults
                sections[name].setdefault("default", {})
    roles = list(dict.fromkeys(role for c in components for role in sorted(c.roles or ())))
    sections["hosts"]["items"]["properties"]["roles"]["items"]["enum"] = roles
    return schema


def text(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(components) -> Path:
    SCHEMA_PATH.write_text(text(assembled(components)))
    return SCHEMA_PATH
