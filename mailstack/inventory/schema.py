"""The inventory schema: validation with readable problems, defaults, and the
settings it marks as planned (refused until a deploy implements them)."""

from __future__ import annotations

import copy
import difflib
import ipaddress
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
from jsonschema.exceptions import best_match

from mailstack.inventory.source import PathT, Positions, Problem

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "inventory.schema.json"

@cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def forget_schema() -> None:
    """Read schemas/inventory.schema.json again (it was just rebuilt)."""
    for cached in (schema, _validator, _fast_validator, _referenced):
        cached.cache_clear()


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_network(value: object) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _is_interface(value: object) -> bool:
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        return False
    return "/" in str(value)


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("ip-address")(_is_ip)
FORMATS.checks("ip-network")(_is_network)
FORMATS.checks("ip-interface")(_is_interface)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(), format_checker=FORMATS)


@cache
def _fast_validator():
    """A compiled validator for the common case of a valid inventory; the detailed
    (slower) one only runs to explain what is wrong."""
    return jsonschema_rs.validator_for(schema(), validate_formats=True, formats={
        "ip-address": _is_ip, "ip-network": _is_network, "ip-interface": _is_interface})


def resolve(node: dict) -> dict:
    """A schema node with its `$ref` (if any) filled in."""
    ref = node.get("$ref")
    if not ref:
        return node
    if len(node) == 1:
        return _referenced(ref)
    return {**_referenced(ref), **{k: v for k, v in node.items() if k != "$ref"}}


@cache
def _referenced(ref: str) -> dict:
    """What a `$ref` points to, resolved once (the schema does not change while loaded)."""
    target = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return resolve(target)


KINDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
         dict: "a mapping", list: "a list", type(None): "empty (null)"}


def schema_problems(data: Any, pos: Positions) -> list[Problem]:
    if _fast_validator().is_valid(data):
        return []
    problems = []
    for error in _validator().iter_errors(data):
        if error.context:
            error = best_match(error.context)
        path = tuple(error.absolute_path)
        sub = resolve(error.schema) if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(sub.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                if key in sub.get("x-retired", {}):  # a setting earlier versions had: say what replaced it
                    problems.append(pos.problem((*path, key), f"{key!r} {sub['x-retired'][key]}"))
                    continue
                guess = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {guess[0]!r}?" if guess else ""
                problems.append(pos.problem((*path, key), f"unknown key {key!r}{hint} "
                                            f"(allowed: {', '.join(allowed)})"))
        elif error.validator == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    problems.append(pos.problem(path, f"missing required key {key!r}"))
        elif error.validator in ("pattern", "format") and "x-error" in sub:
            problems.append(pos.problem(path, f"{error.instance!r} {sub['x-error']}"))
        elif error.validator == "type":
            kind = KINDS.get(type(error.instance), type(error.instance).__name__)
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            problems.append(pos.problem(path, f"{error.instance!r} is {kind}, expected {expected}"))
        else:
            problems.append(pos.problem(path, error.message))
    return problems


def apply_defaults(node: dict, data: Any) -> None:
    """Fill in every default the schema declares, recursively, in place."""
    node = resolve(node)
    if isinstance(data, dict):
        props = node.get("properties", {})
        for key, sub in props.items():
            resolved = resolve(sub)
            if key not in data and "default" in resolved:
                data[key] = copy.deepcopy(resolved["default"])
            if key in data:
                apply_defaults(sub, data[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in props:
                    apply_defaults(extra, value)
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for item in data:
            apply_defaults(node["items"], item)

def planned_problems(data: Any, pos: Positions) -> list[Problem]:
    """Settings the schema marks `x-planned`: accepted by no deploy yet, so refused
    rather than silently ignored (an operator must not believe they protect anything)."""
    problems: list[Problem] = []

    def walk(node: dict, value: Any, path: PathT) -> None:
        node = resolve(node)
        if isinstance(value, dict):
            props, extra = node.get("properties", {}), node.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key, extra if isinstance(extra, dict) else None)
                if sub is None:
                    continue
                planned = resolve(sub).get("x-planned")
                if planned:
                    problems.append(pos.problem((*path, key), f"{key!r} is not implemented yet "
                                                f"(planned: {planned}); remove it"))
                else:
                    walk(sub, item, (*path, key))
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(node["items"], item, (*path, i))
        elif isinstance(value, str) and value in node.get("x-planned-values", {}):
            problems.append(pos.problem(path, f"{value!r} is not implemented yet "
                                        f"(planned: {node['x-planned-values'][value]})"))

    walk(schema(), data, ())
    return problems

