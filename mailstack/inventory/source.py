"""Inventory text as data: YAML read with the line of every path, and the problems
found in it, each with file, line and YAML path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

PathT = tuple  # a YAML path: keys (str) and list indices (int)

@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an inventory, where it is and what to do."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.path}: {self.message}"


class InventoryInvalid(Exception):
    """The inventory has problems; nothing may be deployed from it."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: PathT) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


# --- YAML with line numbers --------------------------------------------------

class Positions:
    """Line numbers of every YAML path of one document."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[PathT, int] = {}

    def line(self, path: PathT) -> int:
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, path: PathT, message: str) -> Problem:
        return Problem(self.file, self.line(path), format_path(path), message)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: PathT, pos: Positions,
               problems: list[Problem], depth: int = 0) -> Any:
    pos.lines.setdefault(path, node.start_mark.line + 1)
    if depth > 64:
        problems.append(pos.problem(path, "nested too deeply (recursive YAML alias?)"))
        return None
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(pos.problem(path, "a key must be a plain string"))
                continue
            key = key_node.value
            child = (*path, key)
            if key in result:
                problems.append(Problem(pos.file, key_node.start_mark.line + 1, format_path(child),
                                        f"duplicate key {key!r} (first on line {pos.lines[child]})"))
                continue
            pos.lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(loader, value_node, child, pos, problems, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, i), pos, problems, depth + 1)
                for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def load_yaml(text: str, file: str) -> tuple[Any, Positions, list[Problem]]:
    """Parse YAML keeping the line of every path; every key is read as a string."""
    pos = Positions(file)
    problems: list[Problem] = []
    loader = yaml.CSafeLoader(text) if yaml.__with_libyaml__ else yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = _construct(loader, node, (), pos, problems) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(err, "problem", None) or str(err)
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and start:
            context += f" that starts on line {start.line + 1}"
        text_ = f"YAML syntax error: {reason}" + (f" ({context})" if context else "")
        return None, pos, [Problem(file, line, "(top level)", text_)]
    finally:
        loader.dispose()
    return data, pos, problems

