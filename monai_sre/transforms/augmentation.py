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

Independently of the name, ``corner_mask`` (the bundles' override of that name, a probability) appends
:class:`RandCornerMaskd` to the geometric transforms: it zeroes the corners a random rotation would leave empty, without
turning the image, so that a network meets the zero-filled corners of a turned test image in training (see the class for
why and what it measured).

``blur`` (the bundles' override of that name, a probability) appends a Gaussian blur with sigma drawn from 0 to 1
pixel (voxel) per axis, MONAI's :class:`~monai.transforms.RandGaussianSmoothd`, after the geometric transforms, whatever
the name: the smoothing a bilinear rotation applies to every turned image (sigma about 0.5 pixel for one resampling at
a half-pixel offset, 0.7 for the turned-and-back control), without the turn. Why: at Adam 1e-3 with the gradient
channels, SRE-ResNet-18's kept BreastMNIST 28 checkpoints lost 1-4 points (two seeds) and 11-13 points (the third) of
test ACC on images turned by 10-45° with border fill and turned back: no corner, no change of orientation, blur alone
(``benchmarks/corner_padding.py``). With probability 0.5 that recipe's worst-angle drop stayed (8.1 against 8.5
points, 3 seeds; benchmarks/README.md), so it is not a default. In 3D ``standard`` already blurs with probability
0.5; ``blur`` adds an independent draw.

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
    Rotate,
)
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor

__all__ = ["AUGMENTATIONS", "RandCornerMaskd", "training_augmentation"]

#: Values of the bundles' ``augmentation`` override.
AUGMENTATIONS = ("none", "standard", "rotation")


class RandCornerMaskd(RandomizableTransform, MapTransform):
    """Zero the corners that a rotation by a random angle would leave empty, without turning the image.

    A bilinear rotation about the grid centre carries zeros in from outside the grid: in 2D four triangles whose long
    sides are straight edges at the rotation angle, largest at 45°. The rotated test sets fill them so
    (:mod:`monai_sre.evaluation.rotated_sets`), and so does any resampled clinical image; a network that never saw such
    corners in training can change its answer for them although it is invariant to the rotation itself. Measured
    (issue 14, BreastMNIST 28, SRE-ResNet-18 of the 2D recipe with ``gradient_fraction`` 0.5, seed 2): turned by 30-60°
    with zero fill, its ACC fell from 0.801 to 0.731-0.782; the same rotations with MONAI's ``border`` or ``reflection``
    padding gave 0.808-0.814 at every angle: the drop was the corners, neither the orientation nor the blur. With
    probability 0.5 (the 2D bundle's default since 0.8.0; 3 seeds) the worst-angle drop of the standard recipe fell
    from 3.0 +- 1.0 to 1.3 +- 0.6 points (benchmarks/README.md, "Zero-filled corners"). The mask is the rotation of an
    all-ones image with the evaluation's interpolation and zero fill (MONAI's :class:`~monai.transforms.Rotate`), so
    its edges are the soft edges of a real turn; the image is multiplied by it.

    The angle is uniform in [0°, 90°): a quarter turn maps a square grid onto itself, so these are all the masks of a
    square image (on an oblong grid the edges still take every direction). In 3D the turn is about one axis drawn at
    random, as the 3D rotated test sets turn about one axis at a time. Every key gets the same mask (its spatial shape
    must be the first key's).

    Args:
        keys: keys of the images, ``(channels, *spatial)`` with 2 or 3 spatial axes.
        prob: probability of masking an image.
        allow_missing_keys: as in MONAI's dictionary transforms.

    Raises:
        ValueError: at call time, for an image without 2 or 3 spatial axes, or keys of different spatial shapes.
    """

    def __init__(self, keys: Sequence[str] | str, prob: float = 0.5, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.angle = 0.0
        self.axis = 0

    def randomize(self, data: Any = None, spatial_dims: int = 2) -> None:
        super().randomize(None)
        # drawn whether or not the image is masked, so the random stream does not depend on the outcome
        self.angle = float(self.R.uniform(0.0, math.pi / 2))
        if spatial_dims == 3:
            self.axis = int(self.R.randint(3))

    def mask(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        """The current draw's mask, ``(1, *spatial_shape)`` float32 in [0, 1] (0 in the empty corners)."""
        dims = len(spatial_shape)
        if dims not in (2, 3):
            raise ValueError(
                f"RandCornerMaskd expects an image with 2 or 3 spatial axes, got spatial shape {tuple(spatial_shape)}"
            )
        angle: float | tuple[float, ...] = self.angle
        if dims == 3:
            angle = tuple(self.angle if axis == self.axis else 0.0 for axis in range(3))
        turn = Rotate(angle, keep_size=True, mode="bilinear", padding_mode="zeros", dtype=torch.float32)
        return convert_to_tensor(turn(torch.ones((1, *spatial_shape))), dtype=torch.float32, track_meta=False)

    def __call__(self, data: Any) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        shape = tuple(d[keys[0]].shape[1:]) if keys else ()
        self.randomize(spatial_dims=len(shape))
        if not self._do_transform or not keys:
            return d
        mask = self.mask(shape)
        for key in keys:
            if tuple(d[key].shape[1:]) != shape:
                raise ValueError(f"RandCornerMaskd: {key!r} has spatial shape {tuple(d[key].shape[1:])}, "
                                 f"{keys[0]!r} {shape}; every key needs the same grid.")
            image = torch.as_tensor(d[key])
            d[key] = image * mask.to(device=image.device, dtype=image.dtype)
        return d


def _standard_2d(keys: Sequence[str], image_size: int) -> tuple[list[MapTransform], list[MapTransform]]:
    side = math.sqrt(0.5)  # area 50-100%
    shift = 0.1 * image_size
    geometric = [
        RandScaleCropd(keys, roi_scale=side, max_roi_scale=1.0, random_center=True, random_size=True),
        Resized(keys, spatial_size=(image_size, image_size), mode="bilinear"),
        RandAffined(keys, prob=1.0, translate_range=(shift, shift), mode="bilinear", padding_mode="zeros"),
    ]
    intensity = [
        RandScaleIntensityd(keys, factors=0.1, prob=0.5),  # brightness
        RandScaleIntensityFixedMeand(keys, factors=0.1, prob=0.5),  # contrast (about the image mean)
    ]
    return geometric, intensity


def _blur(keys: Sequence[str], spatial_dims: int, prob: float) -> RandGaussianSmoothd:
    """A Gaussian blur with sigma uniform in [0, 1] pixel (voxel) per axis, drawn independently per axis."""
    sigmas = {f"sigma_{axis}": (0.0, 1.0) for axis in "xyz"[:spatial_dims]}
    return RandGaussianSmoothd(keys, prob=prob, **sigmas)


def _standard_3d(keys: Sequence[str]) -> tuple[list[MapTransform], list[MapTransform]]:
    geometric = [RandAffined(keys, prob=1.0, scale_range=(0.2, 0.2, 0.2), translate_range=(3, 3, 3), mode="bilinear",
                             padding_mode="zeros")]
    return geometric, [_blur(keys, 3, 0.5)]


def _rotation(keys: Sequence[str], spatial_dims: int) -> tuple[list[MapTransform], list[MapTransform]]:
    full = math.pi  # uniform in [-pi, pi]: every orientation
    ranges: dict[str, Any] = {"range_x": full}
    if spatial_dims == 3:
        ranges.update(range_y=full, range_z=full)
    geometric = [
        RandRotated(keys, prob=1.0, keep_size=True, mode="bilinear", padding_mode="zeros", **ranges),
        *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)),
    ]
    return geometric, []


def training_augmentation(
    name: str,
    spatial_dims: int,
    image_size: int,
    keys: Sequence[str] | str = ("image",),
    corner_mask: float = 0.0,
    blur: float = 0.0,
) -> list[MapTransform]:
    """The random transforms named by the ``augmentation`` override, for the training pipeline only.

    Args:
        name: ``"none"``, ``"standard"`` or ``"rotation"``; see the module docstring.
        spatial_dims: 2 or 3.
        image_size: side of the model's grid (the images' size after preprocessing), e.g. 28 or 64.
        keys: dictionary keys of the images.
        corner_mask: probability of :class:`RandCornerMaskd`, placed after the geometric transforms of ``name`` (before
            its intensity transforms); 0 leaves it out.
        blur: probability of a Gaussian blur (sigma 0-1 pixel per axis), placed after the geometric transforms and
            the corner mask; 0 leaves it out.

    Returns:
        a list of MONAI dictionary transforms (empty for ``"none"`` without a corner mask or blur), to append to the
        deterministic preprocessing.

    Raises:
        ValueError: for another name (naming the ``augmentation`` override), ``spatial_dims`` other than 2 or 3,
            ``image_size < 1``, or ``corner_mask`` or ``blur`` outside [0, 1] (naming the override).
    """
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"augmentation must be one of {', '.join(AUGMENTATIONS)} (bundle override --augmentation), got {name!r}."
        )
    if spatial_dims not in (2, 3):
        raise ValueError(f"augmentation needs spatial_dims 2 or 3, got {spatial_dims!r}.")
    if int(image_size) < 1:
        raise ValueError(f"augmentation needs a positive image_size, got {image_size!r}.")
    for setting, value in (("corner_mask", corner_mask), ("blur", blur)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(
                f"{setting} must be a probability from 0 to 1 (bundle override --{setting}), got {value!r}."
            )
    keys = [keys] if isinstance(keys, str) else list(keys)
    geometric: list[MapTransform] = []
    intensity: list[MapTransform] = []
    if name == "standard":
        geometric, intensity = _standard_2d(keys, int(image_size)) if spatial_dims == 2 else _standard_3d(keys)
    elif name == "rotation":
        geometric, intensity = _rotation(keys, spatial_dims)
    if corner_mask > 0:
        geometric.append(RandCornerMaskd(keys, prob=float(corner_mask)))
    if blur > 0:
        intensity.insert(0, _blur(keys, spatial_dims, float(blur)))
    if not geometric and not intensity:
        return []
    # plain float32 tensors again, as the deterministic preprocessing hands them over (no metadata tracking)
    return [*geometric, *intensity, EnsureTyped(keys, dtype=torch.float32, track_meta=False)]
