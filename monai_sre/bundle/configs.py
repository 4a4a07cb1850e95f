# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The bundles' configs, rendered from one shared recipe and thin per-bundle overlays.

A MONAI bundle must stand alone (the model zoo ships each folder as a zip, and MONAI resolves ``%file.json``
macros against the working directory, not against the config), so each bundle keeps complete configs. They are
not edited by hand: the recipe is written once in a shared folder (``bundles/shared`` in this repository) and
:func:`render_bundle_configs` writes every bundle's files from it:

* ``configs/common.json``: ids that ``train.json`` and ``inference.json`` share (dataset flag, network,
  checkpoint paths). It is merged into both and is not written on its own.
* ``configs/train.json`` and ``configs/inference.json``: the ids of each workflow (``imports`` go first).
* any other ``configs/*`` file (``evaluate.json``, ``multi_gpu_*.json``, ``logging.conf``) and any file outside
  ``configs/`` (``docs/data_license.txt``): copied as they are (JSON is reformatted).
* ``variants.json``: ``{bundle name: {"common": {id: value}, "<config>.json": {id: value}}}``, the values in which a
  bundle differs, set with MONAI's id syntax (``"clinical_preprocessing#spacing"``); ``common`` applies to every
  config holding the id.

JSON is written as the model zoo's ``pretty-format-json`` hook wants it (indent 4, key order kept, ASCII, final
newline). Run ``python -m monai_sre.bundle`` after changing the recipe; ``--check`` only reports files that
differ (the tests run it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["COMMON", "VARIANTS", "format_json", "render_bundle", "render_bundle_configs"]

#: File of the ids shared by ``train.json`` and ``inference.json``, in the recipe's ``configs/``.
COMMON = "common.json"
#: File of the per-bundle overlays, in the recipe folder.
VARIANTS = "variants.json"
_MERGED = ("train.json", "inference.json")


def format_json(content: Any) -> str:
    """``content`` as the model zoo's JSON hook formats it: indent 4, keys in order, ASCII, one final newline."""
    return json.dumps(content, indent=4, ensure_ascii=True) + "\n"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"recipe file {path}: {e}") from e


def _apply(config: dict, overrides: Mapping[str, Any], only_existing: bool, where: str) -> dict:
    parser = ConfigParser(deepcopy(config))
    for key, value in overrides.items():
        exists = parser.get(key, default=KeyError) is not KeyError
        if only_existing and not exists:
            continue
        top = key.split("#")[0]
        if not exists and top not in config:
            raise KeyError(f"{where}: overlay sets {key!r}, which the recipe does not define")
        parser[key] = deepcopy(value)
    return parser.get()


def render_bundle(shared_dir: str | os.PathLike, name: str) -> dict[str, str]:
    """The text of every file the recipe gives bundle ``name``.

    Args:
        shared_dir: the recipe folder (``configs/``, ``variants.json``, other shared files).
        name: a bundle named in ``variants.json``.

    Returns:
        ``{path relative to the bundle: text}``.

    Raises:
        KeyError: when ``name`` has no overlay, or an overlay sets an id the recipe does not define.
        ValueError: when a recipe file is not valid JSON.
    """
    shared = Path(shared_dir)
    variants = _read_json(shared / VARIANTS)
    if name not in variants:
        raise KeyError(f"{shared / VARIANTS}: no overlay for bundle {name!r}; known: {sorted(variants)}")
    overlay = variants[name]
    common = _read_json(shared / "configs" / COMMON)
    files: dict[str, str] = {}
    for path in sorted(p for p in shared.rglob("*") if p.is_file()):
        rel = path.relative_to(shared).as_posix()
        if rel in (VARIANTS, f"configs/{COMMON}", "README.md"):
            continue
        if path.suffix != ".json":
            files[rel] = path.read_text()
            continue
        content = _read_json(path)
        if rel.startswith("configs/") and path.name in _MERGED:
            part = dict(content)
            imports = {"imports": part.pop("imports")} if "imports" in part else {}
            content = {**imports, **common, **part}
        if rel.startswith("configs/"):
            content = _apply(content, overlay.get("common", {}), only_existing=True, where=f"{name} common")
            content = _apply(content, overlay.get(path.name, {}), only_existing=False, where=f"{name} {path.name}")
        files[rel] = format_json(content)
    return files


def render_bundle_configs(
    shared_dir: str | os.PathLike, bundles_dir: str | os.PathLike, check: bool = False
) -> list[Path]:
    """Write (or, with ``check``, compare) every bundle's rendered files.

    Args:
        shared_dir: the recipe folder.
        bundles_dir: the folder holding one folder per bundle of ``variants.json``.
        check: only compare; write nothing.

    Returns:
        the files that differed from the rendering (and, unless ``check``, were rewritten).

    Raises:
        KeyError, ValueError: see :func:`render_bundle`.
    """
    changed = []
    for name in _read_json(Path(shared_dir) / VARIANTS):
        for rel, text in render_bundle(shared_dir, name).items():
            target = Path(bundles_dir) / name / rel
            if target.is_file() and target.read_text() == text:
                continue
            changed.append(target)
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_text(text)
                os.replace(tmp, target)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command line: render the bundles' configs from the recipe; exit 1 with ``--check`` if any differ."""
    root = Path.cwd()
    parser = argparse.ArgumentParser(prog="python -m monai_sre.bundle", description=main.__doc__)
    parser.add_argument("--shared", default=str(root / "bundles" / "shared"), help="the recipe folder")
    parser.add_argument("--bundles", default=str(root / "bundles"), help="the folder of the bundles")
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    changed = render_bundle_configs(args.shared, args.bundles, check=args.check)
    for path in changed:
        print(f"{'differs' if args.check else 'wrote'}: {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
