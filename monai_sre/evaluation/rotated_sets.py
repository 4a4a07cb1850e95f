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
- **Variants** of every rotation by an angle, which separate the three causes of a rotated-test drop:
  ``full`` (the rotated image: orientation + interpolation + lost corners), ``disk`` (the same with every voxel
  outside the inscribed disk/ball set to zero, on the upright image too: orientation + interpolation, no corners
  lost) and ``control`` (turned by the angle and back by minus the angle, in the same plane: interpolation twice and
  lost corners, no change of orientation). Quarter turns stay exact in every variant (the disk is symmetric under
  them, and a quarter turn and back is the identity). Flips and cube rotations have no variants.

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

__all__ = [
    "AXIS_PLANES",
    "VARIANTS",
    "RotationSpec",
    "cube_rotations",
    "inscribed_mask",
    "rotate",
    "rotation_transforms",
]

_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}
_MODES = ("bilinear", "nearest")
#: Variants of the rotations by an angle (see the module docstring); ``full`` is the plain rotated test set.
VARIANTS: tuple[str, ...] = ("full", "disk", "control")


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
        variant: one of :data:`VARIANTS`; ``"full"`` for every transform that is not a variant of a rotation.
    """

    name: str
    kind: str
    axis: str
    angle: float | None
    matrix: np.ndarray = field(repr=False, compare=False)
    apply: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False)
    variant: str = "full"

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
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Rotate a batch about the centre of its spatial grid, zero fill outside (by default), size kept.

    One ``F.affine_grid`` + ``F.grid_sample`` for the whole batch; it matches
    ``monai.transforms.Rotate(-math.radians(angle), padding_mode="zeros", mode=mode)`` image by image.

    Args:
        x: ``(B, C, *spatial)`` batch with 2 or 3 spatial dims.
        angle: degrees; positive turns spatial axis ``plane[0]`` towards ``plane[1]`` (as ``torch.rot90``).
        plane: the two spatial axes (0-based, not counting batch and channel) spanning the rotation plane.
        mode: ``"bilinear"`` (trilinear for 3D) or ``"nearest"``.
        exact_quarter_turns: multiples of 90° (in a square plane for odd multiples) use ``torch.rot90``, exact.
        padding_mode: what fills the corners that come from outside the grid, as ``F.grid_sample``'s: ``"zeros"``
            (the rotated test sets), ``"border"`` or ``"reflection"`` (``benchmarks/corner_padding.py`` compares them).

    Returns:
        the rotated batch, same shape; floating dtype (integer input is converted to float32).

    Raises:
        ValueError: for a batch without 2 or 3 spatial dims, an invalid plane, an unknown mode or padding mode.
    """
    _check_mode(mode)
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"padding_mode must be one of zeros, border, reflection, got {padding_mode!r}")
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
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def inscribed_mask(spatial_shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """The inscribed disk (2D) or ball (3D) of a grid: voxels whose centre lies within ``(min(size) - 1) / 2`` of
    the grid centre, as a boolean tensor of ``spatial_shape``.

    Rotating an image about the grid centre keeps this region inside the grid, so rotated and upright images masked
    with it hold the same content in another orientation. The mask is symmetric under every flip and quarter turn.

    Args:
        spatial_shape: the grid size, 2 or 3 positive ints.
        device: where to create the mask.

    Returns:
        the boolean mask.

    Raises:
        ValueError: for a shape that is not 2 or 3 positive sizes.
    """
    shape = [int(n) for n in spatial_shape]
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"spatial_shape must be 2 or 3 positive sizes, got {tuple(spatial_shape)}")
    radius = (min(shape) - 1) / 2
    axes = [torch.arange(n, dtype=torch.float64, device=device) - (n - 1) / 2 for n in shape]
    squared = sum(g**2 for g in torch.meshgrid(*axes, indexing="ij"))
    return squared <= radius**2 + 1e-9


def _variant_spec(spec: RotationSpec, variant: str, plane: tuple[int, int], mode: str, exact: bool) -> RotationSpec:
    """The ``disk`` or ``control`` variant of the rotation ``spec`` by ``spec.angle`` in ``plane``."""
    angle = float(spec.angle or 0.0)
    if variant == "disk":

        def apply(x: torch.Tensor) -> torch.Tensor:
            turned = spec(x)
            return turned * inscribed_mask(x.shape[2:], x.device).to(turned.dtype)

        matrix = spec.matrix
    else:

        def apply(x: torch.Tensor) -> torch.Tensor:
            turned = rotate(x, angle, plane, mode=mode, exact_quarter_turns=exact)
            return rotate(turned, -angle, plane, mode=mode, exact_quarter_turns=exact)

        matrix = np.eye(len(spec.matrix))
    return RotationSpec(f"{spec.name}_{variant}", spec.kind, spec.axis, spec.angle, matrix, apply, variant)


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
    variants: Sequence[str] = ("full",),
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
        variants: which of :data:`VARIANTS` to give for every rotation by an angle; must include ``"full"``.

    Returns:
        specs in this order: angles (per axis in 3D), cube rotations, flips, then the ``disk`` and the ``control``
        variants of the angles (named ``rot_030_disk``, ``rot_x_030_control``); names are unique.
        Defaults give 38 specs in 2D (36 + 2) and 63 in 3D (3 × 12 + 24 + 3); each further variant adds one spec
        per angle (and axis): 36 in 2D, 36 in 3D.

    Raises:
        ValueError: for ``spatial_dims`` other than 2/3, an unknown axis, interpolation or variant, variants
            without ``"full"``, or repeated angles.
    """
    _check_mode(interpolation)
    variants = list(variants)
    if [v for v in variants if v not in VARIANTS] or "full" not in variants or len(set(variants)) != len(variants):
        raise ValueError(f"variants must be distinct names among {list(VARIANTS)} including 'full', got {variants}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if angles is None:
        angles = range(0, 360, 10) if spatial_dims == 2 else range(0, 360, 30)
    angles = [float(a) for a in angles]
    if len(set(angles)) != len(angles):
        raise ValueError(f"angles must not repeat, got {angles}")
    rotations: list[tuple[RotationSpec, tuple[int, int]]] = []
    extra: list[RotationSpec] = []
    if spatial_dims == 2:
        rotations = [(_angle_spec(2, a, "", interpolation, exact_quarter_turns), (0, 1)) for a in angles]
        if include_flips:
            extra = [_flip_spec(2, 0, "flip_vertical", "x"), _flip_spec(2, 1, "flip_horizontal", "y")]
    else:
        unknown = [ax for ax in axes if ax not in AXIS_PLANES]
        if unknown or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct names among {list(AXIS_PLANES)}, got {list(axes)}")
        for ax in axes:
            rotations += [(_angle_spec(3, a, ax, interpolation, exact_quarter_turns), AXIS_PLANES[ax]) for a in angles]
        if include_cube:
            extra += cube_rotations()
        if include_flips:
            extra += [_flip_spec(3, _AXIS_INDEX[ax], f"flip_{ax}", ax) for ax in ("x", "y", "z")]
    specs = [spec for spec, _ in rotations] + extra
    for variant in (v for v in VARIANTS[1:] if v in variants):
        specs += [_variant_spec(spec, variant, plane, interpolation, exact_quarter_turns) for spec, plane in rotations]
    return specs

