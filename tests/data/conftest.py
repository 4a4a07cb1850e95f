# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Shared helpers for the data tests: cached exports and MONAI / SimpleITK loading of exported samples."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from monai_sre.data.export import export_medmnist


@pytest.fixture(scope="session")
def exported(tmp_path_factory, data_root) -> Callable[..., tuple[Path, dict]]:
    """``exported(flag, size, fmt, splits, limit)`` -> (datalist path, datalist dict); each export runs once."""
    cache: dict = {}

    def get(flag: str, size: int, fmt: str, splits=("val",), limit=None) -> tuple[Path, dict]:
        key = (flag, size, fmt, tuple(splits), limit)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{flag}_{size}_{fmt}")
            path = export_medmnist(
                flag, out, size=size, image_format=fmt, splits=splits, root=data_root, progress=False, limit=limit
            )
            cache[key] = path
        path = cache[key]
        with open(path, encoding="utf-8") as f:
            return path, json.load(f)

    return get


def monai_load(path, channel_dim=None, reader=None):
    """``LoadImage(dtype=None)`` + ``EnsureChannelFirst`` (``channel_dim`` None: from the reader's metadata)."""
    from monai.transforms import EnsureChannelFirst, LoadImage

    img = LoadImage(image_only=True, dtype=None, reader=reader)(str(path))
    return EnsureChannelFirst(channel_dim=channel_dim)(img)


def channel_first(image: np.ndarray, n_channels: int) -> np.ndarray:
    """What MONAI should give for an npz sample: ``(1, ...)`` for gray, ``(3, H, W)`` for RGB."""
    return image.transpose(2, 0, 1) if n_channels == 3 else image[None]


def sitk_array(path: Path) -> tuple[np.ndarray, tuple]:
    """SimpleITK array (z, y, x[, c]) and direction of a NIfTI/DICOM file or a DICOM series folder."""
    import SimpleITK as sitk

    if Path(path).is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetDirection()
