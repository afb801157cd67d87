"""The components the platform is made of. The model and the plan never import them: the
component package hands its list in when it is imported (`deploys`), and every entry point
(the CLI, pyinfra's inventory and deploy files, the lab, the tests) imports it first."""

from __future__ import annotations

_components: tuple = ()


def register(components: tuple) -> None:
    global _components
    _components = tuple(components)


def components() -> tuple:
    """Every declared component, in deploy order."""
    if not _components:
        raise RuntimeError("no components are registered: the entry point must `import deploys` first")
    return _components
