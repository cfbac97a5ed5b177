"""What the package imports is what its wheel declares: every third-party import belongs to a declared
distribution (base dependencies or an extra), and every base dependency is imported."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import paths

LIB = paths.ROOT / "lib" / "promptmill"


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
                for requirement in requirements}

    extras = set()
    for group, requirements in project.get("optional-dependencies", {}).items():
        if group != "dev":
            extras |= names(requirements)
    return names(project["dependencies"]), extras


def imported_top_level() -> set[str]:
    found = set()
    for file in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "promptmill"}


def test_every_import_is_declared_and_every_dependency_used():
    base, extras = declared()
    owners = packages_distributions()
    imported = imported_top_level()
    undeclared, used = [], set()
    for module in sorted(imported):
        distributions = {name.lower().replace("_", "-") for name in owners.get(module, [module])}
        if distributions & (base | extras):
            used |= distributions & base
        else:
            undeclared.append(f"{module} (from {', '.join(sorted(distributions))})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert base - used == set(), f"declared but never imported by the package: {sorted(base - used)}"
