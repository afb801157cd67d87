"""A mailstack inventory, from text to model.

`load(path)` reads YAML keeping every line (source), validates it against the schema and
fills in its defaults (schema), applies the platform's rules and each component's own
(rules, deploys/<name>/), and returns the read-only typed model (model). It
raises `InventoryInvalid` carrying every problem at once, each with file, line and path.
"""

from __future__ import annotations

import gc
from pathlib import Path

from mailstack.inventory.model import CORE_SECTIONS, Alias, Domain, Host, Inventory, User, model
from mailstack.inventory.rules import platform_problems
from mailstack.inventory.schema import apply_defaults, planned_problems, resolve, schema, schema_problems
from mailstack.inventory.source import InventoryInvalid, Positions, Problem, format_path, load_yaml

__all__ = ["Alias", "Domain", "Host", "Inventory", "InventoryInvalid", "Positions", "Problem", "User",
           "check_text", "format_path", "load", "resolve", "schema"]


def component_sections() -> tuple[str, ...]:
    """Top-level schema sections that belong to components (declared or planned)."""
    return tuple(name for name in schema()["properties"] if name not in CORE_SECTIONS)


def section_defaults(section: str) -> dict:
    """A component section as the schema fills it in when the inventory leaves it out."""
    defaults: dict = {}
    apply_defaults(schema()["properties"][section], defaults)
    return defaults


def component_problems(data: dict, pos: Positions) -> list[Problem]:
    """The rules each declared component brings with it, and settings no host would use:
    a section changed from its defaults while no host has a role of its component."""
    from mailstack.registry import components

    COMPONENTS = components()
    sections = schema()["properties"]
    missing = [c for c in COMPONENTS if c.section and c.section not in sections]
    if missing:  # a component's mistake, not the inventory's: said before any rule reads the section
        return [Problem(pos.file, 1, "(components)", f"component {c.name!r} declares the section {c.section!r}, "
                        "which schemas/inventory.schema.json does not define: add its schema fragment")
                for c in missing]
    problems = [problem for component in COMPONENTS for rule in component.rules for problem in rule(data, pos)]
    if not data["platform"]["lab"]:
        problems += [pos.problem(("hosts", i, "roles"), f"the {role!r} role {component.lab_only} (or set "
                                 "platform.lab: true)")
                     for component in COMPONENTS if component.lab_only
                     for i, host in enumerate(data["hosts"]) for role in sorted(component.roles & set(host["roles"]))]
    roles = {role for host in data["hosts"] if not host["outside"] for role in host["roles"]}
    for component in COMPONENTS:
        if component.section and component.roles and not component.roles & roles \
                and data[component.section] != section_defaults(component.section):
            problems.append(pos.problem((component.section,), f"has no effect: no host has the role "
                                        f"{' or '.join(sorted(component.roles))}; remove it or give a host that role"))
    return problems


def check_text(text: str, file: str) -> Inventory:
    """Validate inventory text; raise InventoryInvalid with every problem found."""
    collecting = gc.isenabled()
    gc.disable()  # parsing makes many objects and no cycles: the collector's passes only cost time
    try:
        return _checked(text, file)
    finally:
        if collecting:
            gc.enable()


def _checked(text: str, file: str) -> Inventory:
    data, pos, problems = load_yaml(text, file)
    if problems and data is None:
        raise InventoryInvalid(problems)
    if data is None:
        raise InventoryInvalid([Problem(file, 1, "(top level)", "the inventory is empty")])
    problems += schema_problems(data, pos)
    if problems:
        raise InventoryInvalid(problems)
    problems = planned_problems(data, pos)
    if problems:
        raise InventoryInvalid(problems)
    apply_defaults(schema(), data)
    problems = platform_problems(data, pos) + component_problems(data, pos)
    if problems:
        raise InventoryInvalid(problems)
    return model(data, file, component_sections())


def load(path: str | Path) -> Inventory:
    """Load and validate the inventory at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InventoryInvalid([Problem(str(path), 1, "(top level)", f"cannot read: {err}")]) from None
    return check_text(text, str(path))


def rewrite(path: str | Path, text: str) -> None:
    """Replace the inventory file with `text` (a command's checked edit) whole or not at all:
    written beside it, then renamed over it."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
