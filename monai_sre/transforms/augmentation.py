# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Training-time augmentation of the bundles, chosen by name (the ``augmentation`` override).

- ``none``: nothing (the default): the network sees only upright training images, so whatever robustness it has to
  rotations comes from its architecture.
- ``standard``: the SRE-Conv paper's non-rotation augmentation, as MONAI transforms. 2D: a random crop of 50-100% of
  the area (each side 71-100%, so the aspect ratio varies) resized back to the image size, a random translation of
  up to 10% of the size per axis, and brightness and contrast jitter of +-10%, each with probability 0.5 (applied to
  every channel alike: no hue or saturation jitter). 3D: a random affine map with scale +-20% and translation up to
  3 voxels per axis, and a Gaussian blur (sigma 0-1 voxel per axis) with probability 0.5. Nothing here rotates.
- ``rotation``: a random rotation over the full circle (2D), or about each axis over the full circle (3D), plus a
  random flip of every axis with probability 0.5: the augmentation a dense baseline needs to see every orientation.

Geometric transforms resample bilinearly (trilinearly) with zero fill, as the rotated test sets do
(:mod:`monai_sre.evaluation.rotation`). The transforms act on ``keys`` (``"image"``) after the deterministic
preprocessing (channel-first, intensities in [0, 1], the model's grid size) and only in training: the bundles append
them to the training pipeline, never to validation, evaluation or inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import (
    EnsureTyped,
    RandAffined,
    RandFlipd,
    RandGaussianSmoothd,
    RandRotated,
    RandScaleCropd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    Resized,
)
from monai.transforms.transform import MapTransform

__all__ = ["AUGMENTATIONS", "training_augmentation"]

#: Values of the bundles' ``augmentation`` override.
AUGMENTATIONS = ("none", "standard", "rotation")


def _standard_2d(keys: Sequence[str], image_size: int) -> list[MapTransform]:
    side = math.sqrt(0.5)  # area 50-100%
    shift = 0.1 * image_size
    return [
        RandScaleCropd(keys, roi_scale=side, max_roi_scale=1.0, random_center=True, random_size=True),
        Resized(keys, spatial_size=(image_size, image_size), mode="bilinear"),
        RandAffined(keys, prob=1.0, translate_range=(shift, shift), mode="bilinear", padding_mode="zeros"),
        RandScaleIntensityd(keys, factors=0.1, prob=0.5),  # brightness
        RandScaleIntensityFixedMeand(keys, factors=0.1, prob=0.5),  # contrast (about the image mean)
    ]


def _standard_3d(keys: Sequence[str]) -> list[MapTransform]:
    return [
        RandAffined(keys, prob=1.0, scale_range=(0.2, 0.2, 0.2), translate_range=(3, 3, 3), mode="bilinear",
                    padding_mode="zeros"),
        RandGaussianSmoothd(keys, sigma_x=(0.0, 1.0), sigma_y=(0.0, 1.0), sigma_z=(0.0, 1.0), prob=0.5),
    ]


def _rotation(keys: Sequence[str], spatial_dims: int) -> list[MapTransform]:
    full = math.pi  # uniform in [-pi, pi]: every orientation
    ranges: dict[str, Any] = {"range_x": full}
    if spatial_dims == 3:
        ranges.update(range_y=full, range_z=full)
    return [
        RandRotated(keys, prob=1.0, keep_size=True, mode="bilinear", padding_mode="zeros", **ranges),
        *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)),
    ]


def training_augmentation(
    name: str, spatial_dims: int, image_size: int, keys: Sequence[str] | str = ("image",)
) -> list[MapTransform]:
    """The random transforms named by the ``augmentation`` override, for the training pipeline only.

    Args:
        name: ``"none"``, ``"standard"`` or ``"rotation"``; see the module docstring.
        spatial_dims: 2 or 3.
        image_size: side of the model's grid (the images' size after preprocessing), e.g. 28 or 64.
        keys: dictionary keys of the images.

    Returns:
        a list of MONAI dictionary transforms (empty for ``"none"``), to append to the deterministic preprocessing.

    Raises:
        ValueError: for another name (naming the ``augmentation`` override), ``spatial_dims`` other than 2 or 3, or
            ``image_size < 1``.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"augmentation must be one of {', '.join(AUGMENTATIONS)} (bundle override --augmentation), got {name!r}."
        )
    if spatial_dims not in (2, 3):
        raise ValueError(f"augmentation needs spatial_dims 2 or 3, got {spatial_dims!r}.")
    if int(image_size) < 1:
        raise ValueError(f"augmentation needs a positive image_size, got {image_size!r}.")
    keys = [keys] if isinstance(keys, str) else list(keys)
    if name == "none":
        return []
    if name == "standard":
        transforms = _standard_2d(keys, int(image_size)) if spatial_dims == 2 else _standard_3d(keys)
    else:
        transforms = _rotation(keys, spatial_dims)
    # plain float32 tensors again, as the deterministic preprocessing hands them over (no metadata tracking)
    return [*transforms, EnsureTyped(keys, dtype=torch.float32, track_meta=False)]
