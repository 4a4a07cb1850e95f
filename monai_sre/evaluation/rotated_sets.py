# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotated and flipped test sets: the transforms of the rotation-robustness evaluation.

Conventions (all transforms act on the batch tensor ``(B, C, *spatial)`` the network sees):

- **Axes.** Spatial axes are named as in MONAI: ``x``, ``y``, ``z`` are spatial dims 0, 1, 2 (tensor dims 2, 3, 4).
- **Angle sign.** A rotation by ``+angle`` degrees in the plane ``(a, b)`` turns axis ``a`` towards axis ``b``, as
  ``np.rot90(x, 1, axes=(a, b))`` / ``torch.rot90`` do: counter-clockwise on screen for a 2D image shown with
  ``imshow`` (plane ``(0, 1)``). In 3D, rotation about ``x`` uses plane ``(1, 2)``, about ``y`` plane ``(2, 0)`` and
  about ``z`` plane ``(0, 1)``: right-handed rotations. MONAI's ``Rotate`` turns the other way:
  ``rotate(x, angle)`` here equals ``monai.transforms.Rotate(-radians(angle), padding_mode="zeros")`` per image.
- **Resampling.** Zero fill outside the image, output size kept, ``align_corners=False`` (MONAI's default),
  ``bilinear`` (trilinear in 3D) by default or ``nearest``. Multiples of 90° in a square plane are exact
  ``torch.rot90`` calls, so their rows measure the network, not the interpolation.
- **Flips.** 2D: ``flip_vertical`` reverses spatial axis 0 (rows: upside down on screen), ``flip_horizontal``
  reverses spatial axis 1 (columns: mirrored left-right). 3D: ``flip_x``, ``flip_y``, ``flip_z``.
- **Cube rotations (3D).** The 24 proper rotations of the cube, exact compositions of ``torch.rot90``: the group of
  :mod:`monai_sre.transforms.symmetry`, shared with the rotation check of :mod:`monai_sre.inference`.

Every spec carries ``matrix``: the forward map of centred voxel coordinates (a voxel at offset ``p`` from the
centre moves to ``matrix @ p``), so a test or a report can check what each transform is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from monai_sre.transforms import symmetry
from monai_sre.transforms.symmetry import AXIS_PLANES, GridSymmetry, rotation_matrix

__all__ = ["AXIS_PLANES", "RotationSpec", "cube_rotations", "rotate", "rotation_transforms"]

_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}
_MODES = ("bilinear", "nearest")


@dataclass(frozen=True)
class RotationSpec:
    """One transform of the robustness evaluation.

    Attributes:
        name: unique row name, e.g. ``"rot_030"``, ``"rot_x_090"``, ``"cube_y90_x180"``, ``"flip_horizontal"``.
        kind: ``"angle"`` (rotation by an arbitrary angle), ``"cube"`` (exact cube rotation) or ``"flip"``.
        axis: ``"x"``/``"y"``/``"z"``: the rotation axis (3D angles) or the reversed axis (flips); ``""`` for
            in-plane 2D rotations and cube rotations.
        angle: rotation angle in degrees: the requested angle, or for a cube rotation the angle of the composite
            rotation (0, 90, 120 or 180); ``None`` for flips.
        matrix: forward map of centred voxel coordinates, ``(spatial_dims, spatial_dims)``.
        apply: function mapping a batch ``(B, C, *spatial)`` to the transformed batch of the same shape.
    """

    name: str
    kind: str
    axis: str
    angle: float | None
    matrix: np.ndarray = field(repr=False, compare=False)
    apply: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x)


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"interpolation must be one of {list(_MODES)}, got {mode!r}")
    return mode


def rotate(
    x: torch.Tensor,
    angle: float,
    plane: tuple[int, int] = (0, 1),
    mode: str = "bilinear",
    exact_quarter_turns: bool = True,
) -> torch.Tensor:
    """Rotate a batch about the centre of its spatial grid, zero fill outside, size kept.

    One ``F.affine_grid`` + ``F.grid_sample`` for the whole batch; it matches
    ``monai.transforms.Rotate(-math.radians(angle), padding_mode="zeros", mode=mode)`` image by image.

    Args:
        x: ``(B, C, *spatial)`` batch with 2 or 3 spatial dims.
        angle: degrees; positive turns spatial axis ``plane[0]`` towards ``plane[1]`` (as ``torch.rot90``).
        plane: the two spatial axes (0-based, not counting batch and channel) spanning the rotation plane.
        mode: ``"bilinear"`` (trilinear for 3D) or ``"nearest"``.
        exact_quarter_turns: multiples of 90° (in a square plane for odd multiples) use ``torch.rot90``, exact.

    Returns:
        the rotated batch, same shape; floating dtype (integer input is converted to float32).

    Raises:
        ValueError: for a batch without 2 or 3 spatial dims, an invalid plane or an unknown mode.
    """
    _check_mode(mode)
    spatial_dims = x.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(f"rotate expects a (B, C, *spatial) batch, 2 or 3 spatial dims; got shape {tuple(x.shape)}")
    a, b = plane
    if not (0 <= a < spatial_dims and 0 <= b < spatial_dims and a != b):
        raise ValueError(f"plane must be two different spatial axes in [0, {spatial_dims - 1}], got {plane}")
    if not x.is_floating_point():
        x = x.float()
    k = angle / 90
    if exact_quarter_turns and k == int(k) and (int(k) % 2 == 0 or x.shape[2 + a] == x.shape[2 + b]):
        return torch.rot90(x, int(k) % 4, dims=(2 + a, 2 + b))

    sizes = torch.tensor(x.shape[2:], dtype=torch.float64)
    # grid_sample needs, for each output point, the input point: the inverse (= transpose) rotation, expressed in
    # normalised coordinates where unit length is half the axis size (align_corners=False), in reversed axis order.
    inverse = torch.from_numpy(rotation_matrix(spatial_dims, plane, angle).T)
    scale = sizes / 2
    theta = (inverse * scale[None, :] / scale[:, None]).flip(0, 1)
    theta = torch.cat([theta, torch.zeros(spatial_dims, 1, dtype=theta.dtype)], dim=1)
    theta = theta.to(device=x.device, dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, 1, *x.shape[2:]], align_corners=False)
    grid = grid.expand(x.shape[0], *grid.shape[1:])
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)



def _angle_spec(spatial_dims: int, angle: float, axis: str, mode: str, exact: bool) -> RotationSpec:
    plane = (0, 1) if spatial_dims == 2 else AXIS_PLANES[axis]
    degrees = f"{round(angle):03d}" if angle == round(angle) else f"{angle:g}"
    name = f"rot_{degrees}" if spatial_dims == 2 else f"rot_{axis}_{degrees}"

    def apply(x: torch.Tensor) -> torch.Tensor:
        return rotate(x, angle, plane, mode=mode, exact_quarter_turns=exact)

    return RotationSpec(name, "angle", axis, float(angle), rotation_matrix(spatial_dims, plane, angle), apply)



def _symmetry_spec(element: GridSymmetry, kind: str, axis: str, name: str) -> RotationSpec:
    """A spec applying an exact element of the grid's symmetry group to a batch."""

    layout = "(B, C, H, W)" if element.spatial_dims == 2 else "(B, C, D, H, W)"

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != element.spatial_dims + 2:
            raise ValueError(f"{name} needs a {layout} batch, got shape {tuple(x.shape)}")
        return element(x)

    return RotationSpec(name, kind, axis, element.angle, element.matrix, apply)


def _flip_spec(spatial_dims: int, axis_index: int, name: str, axis: str) -> RotationSpec:
    return _symmetry_spec(symmetry.axis_flip(spatial_dims, axis_index, name), "flip", axis, name)


def cube_rotations() -> list[RotationSpec]:
    """The 24 proper rotations of the cube as specs (3D batches with a cubic grid).

    The elements of :func:`monai_sre.transforms.symmetry.cube_rotations`, in its order and with its names.

    Returns:
        24 specs of kind ``"cube"``, the identity first, named ``cube_identity`` or as a composition whose rightmost
        turn is applied first: ``cube_z90_x180`` turns 180° about ``x``, then 90° about ``z``; ``angle`` is the angle
        of the composite rotation (0, 90, 120 or 180).
    """
    return [_symmetry_spec(g, "cube", "", g.name) for g in symmetry.cube_rotations()]


def rotation_transforms(
    spatial_dims: int,
    angles: Sequence[float] | None = None,
    interpolation: str = "bilinear",
    axes: Sequence[str] = ("x", "y", "z"),
    include_cube: bool = True,
    include_flips: bool = True,
    exact_quarter_turns: bool = True,
) -> list[RotationSpec]:
    """The transform set of the rotation-robustness evaluation.

    Args:
        spatial_dims: 2 or 3.
        angles: rotation angles in degrees; default 0..350 by 10 (36) in 2D, 0..330 by 30 (12 per axis) in 3D.
        interpolation: ``"bilinear"`` (trilinear in 3D) or ``"nearest"`` for angles off the grid.
        axes: 3D rotation axes, a subset of ``("x", "y", "z")``; ignored in 2D.
        include_cube: add the 24 exact cube rotations (3D only).
        include_flips: add the flips (2D: vertical, horizontal; 3D: along x, y, z).
        exact_quarter_turns: multiples of 90° use exact ``torch.rot90`` (see :func:`rotate`).

    Returns:
        specs in this order: angles (per axis in 3D), cube rotations, flips; names are unique.
        Defaults give 38 specs in 2D (36 + 2) and 63 in 3D (3 × 12 + 24 + 3).

    Raises:
        ValueError: for ``spatial_dims`` other than 2/3, an unknown axis or interpolation, or repeated angles.
    """
    _check_mode(interpolation)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if angles is None:
        angles = range(0, 360, 10) if spatial_dims == 2 else range(0, 360, 30)
    angles = [float(a) for a in angles]
    if len(set(angles)) != len(angles):
        raise ValueError(f"angles must not repeat, got {angles}")
    specs: list[RotationSpec] = []
    if spatial_dims == 2:
        specs += [_angle_spec(2, a, "", interpolation, exact_quarter_turns) for a in angles]
        if include_flips:
            specs += [_flip_spec(2, 0, "flip_vertical", "x"), _flip_spec(2, 1, "flip_horizontal", "y")]
        return specs
    unknown = [ax for ax in axes if ax not in AXIS_PLANES]
    if unknown or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct names among {list(AXIS_PLANES)}, got {list(axes)}")
    for ax in axes:
        specs += [_angle_spec(3, a, ax, interpolation, exact_quarter_turns) for a in angles]
    if include_cube:
        specs += cube_rotations()
    if include_flips:
        specs += [_flip_spec(3, _AXIS_INDEX[ax], f"flip_{ax}", ax) for ax in ("x", "y", "z")]
    return specs

