# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Session-wide tiny bundles for the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.clinical_data import make_bundle


@pytest.fixture(scope="session")
def bundle3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3D bundle (one channel, 28³ grid) with the default clinical preprocessing."""
    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny3d", spatial_dims=3)


@pytest.fixture(scope="session")
def bundle2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2D bundle taking 3-channel 28x28 images (like RetinaMNIST), checkpoint stored under 'model'."""
    root = tmp_path_factory.mktemp("bundles") / "tiny2d"
    return make_bundle(root, spatial_dims=2, in_channels=3, nested_checkpoint=True)
