# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fixtures of the evaluation tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.evaluation.bundle_checkpoints import BUNDLE


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """A copy of the 2D bundle's configs in a temporary folder (its exports and runs stay there)."""
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", root / "configs")
    return root
