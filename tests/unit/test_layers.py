"""The layers are a contract (issue 23): inventory → model → plan → components → pyinfra
operations. The model and the plan never import a component (the entry point hands the
registry in), and only the lab and the CLI import the lab."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from unitdata import ROOT

ENTRY_POINTS = {"mailstack/cli.py"}  # besides the lab itself, and the top-level pyinfra files


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (late imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


@pytest.mark.parametrize("path", modules("mailstack"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_model_and_the_plan_never_import_a_component(path):
    relative = str(path.relative_to(ROOT))
    if relative in ENTRY_POINTS or relative.startswith("mailstack/lab/"):
        return
    assert not [n for n in imported(path) if within(n, "deploys")], f"{relative} imports a component"


@pytest.mark.parametrize("path", modules("mailstack", "deploys"), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_lab_and_the_cli_import_the_lab(path):
    relative = str(path.relative_to(ROOT))
    if relative in ENTRY_POINTS or relative.startswith("mailstack/lab/"):
        return
    assert not [n for n in imported(path) if within(n, "mailstack.lab")], f"{relative} imports the lab"


@pytest.mark.parametrize("path", modules("mailstack/inventory"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_model_never_imports_the_plan(path):
    assert not [n for n in imported(path) if within(n, "mailstack.plan")]


def test_the_contract_sees_late_imports(tmp_path):
    """The check itself: an import inside a function counts."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from deploys import COMPONENTS\n    import mailstack.lab.image\n")
    assert {"deploys", "deploys.COMPONENTS", "mailstack.lab.image"} <= imported(sample)


# No component imports another. What components agree on is no component: names and paths
# (mailstack/conventions.py), the TLS files (mailstack/tls.py), the S3 store (mailstack/s3.py),
# where logins are checked (mailstack/logins.py), ports and topology (mailstack/plan.py); what
# one adds to another goes through an extension point or `extends` (mailstack/component.py).


def component_imports() -> dict[str, set[str]]:
    """Which component imports which (deploys/parts/, the shared building blocks, and
    deploys/ops.py are no components)."""
    from deploys import ORDER
    found = {}
    for name in ORDER:
        names = imported(ROOT / "deploys" / name / "__init__.py")
        found[name] = {n.split(".")[1] for n in names if n.startswith("deploys.") and n.split(".")[1] in ORDER}
    return {name: edges - {name} for name, edges in found.items() if edges - {name}}


def test_no_component_imports_another():
    assert component_imports() == {}, \
        "a component imports another: declare what it needs at an extension point (mailstack/component.py)"


def test_every_test_module_imports_without_a_lab():
    """A lab test module that imports a name a refactor moved fails here, not only in CI."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
