"""The folders are the architecture: the ground imports no stage, the edge never reaches up.

- ``brainedge/`` (errors, manifests, tables, the TF shim) imports no stage and not the CLI.
- ``runtime/`` (what runs on the device) imports neither ``training`` nor ``optimize``.
- No stage imports ``cli``: the command line is the face, nothing stands on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

STAGES = ("training", "optimize", "runtime", "benchmarks", "webapp")


def _imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(Path(path).relative_to(PROJECT_ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("brainedge", {*STAGES, "cli"}),
    ("runtime", {"training", "optimize", "cli"}),
    *[(stage, {"cli"}) for stage in STAGES],
])
def test_package_does_not_import_what_stands_above_it(package, forbidden):
    offenders = {f: sorted(names & forbidden)
                 for f, names in _imported_top_levels(package).items() if names & forbidden}
    assert not offenders, f"{package}/ imports {forbidden}: {offenders}"
