# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The package's import layering (arrows point down), read from the source of every module, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "monai_sre"

# What each part of the package may import from the others. Layers know nothing of networks, networks nothing of
# data, data nothing of networks; evaluation and inference use transforms, data and io, never each other; the
# command line and the bundles' helpers sit on top.
ALLOWED: dict[str, set[str]] = {
    "io": set(),
    "layers": set(),
    "registration": {"layers"},
    "networks": {"layers", "io"},
    "data": {"io"},
    "transforms": {"data", "io"},
    "optim": set(),
    "recipes": {"networks", "io"},
    "evaluation": {"transforms", "data", "io"},
    "inference": {"transforms", "data", "io"},
    "bundle": {"data", "evaluation", "transforms", "optim", "recipes", "networks", "layers", "io"},
    "cli": {"data", "evaluation", "inference", "io"},
    "__init__": {"layers", "networks", "registration"},
}
# Former homes of moved names, kept so that old imports work; nothing in the package imports them.
FORMER_HOMES = {
    "networks/classifier.py",
    "evaluation/rotation.py",
    "inference/rotations.py",
    "inference/volumes.py",
    "inference/dicom_series.py",
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    """Every ``monai_sre`` module that ``path`` imports, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("monai_sre"):
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("monai_sre")]
    return found


def test_arrows_point_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in FORMER_HOMES:
            continue
        part = relative.split("/")[0].removesuffix(".py")
        assert part in ALLOWED, f"{relative}: a new part of the package; add it to ALLOWED with what it may import"
        for module in _imports(path):
            target = _part(module)
            if target != part and target not in ALLOWED[part]:
                wrong.append(f"{relative} imports {module}")
            if module.removeprefix("monai_sre.").replace(".", "/") + ".py" in FORMER_HOMES:
                wrong.append(f"{relative} imports the former home {module}")
    assert not wrong, "\n".join(wrong)


def test_former_homes_are_only_re_exports():
    """A former home holds imports and ``__all__`` only: the code has one copy, in its new module."""
    for relative in sorted(FORMER_HOMES):
        tree = ast.parse((PACKAGE / relative).read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        kinds = {type(n).__name__ for n in body}
        assert kinds <= {"ImportFrom", "Import", "Assign", "AnnAssign"}, (relative, kinds)
        assigned = [t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
        assert set(assigned) <= {"__all__"}, (relative, assigned)


def test_networks_resolve_the_moved_recipe_names_lazily():
    import monai_sre.io.checkpoints
    import monai_sre.networks
    import monai_sre.recipes

    assert monai_sre.networks.medmnist_classifier is monai_sre.recipes.medmnist_classifier
    assert monai_sre.networks.MODEL_TYPES is monai_sre.recipes.MODEL_TYPES
    assert monai_sre.networks.check_checkpoint is monai_sre.io.checkpoints.check_checkpoint
    try:
        monai_sre.networks.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no attribute 'no_such_name'" in str(e)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
