# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The symmetry groups of the voxel grid: the 8 symmetries of the square, the 24 proper rotations of the cube, and
the full group of every flip and axis permutation (2, 8 or 48 elements in 1D, 2D, 3D).

The one copy of these groups in the package: the rotation-robustness evaluation (:mod:`monai_sre.evaluation`), the
rotation check of a prediction (:mod:`monai_sre.inference`) and the equivariance tests build their exact transforms
from here.

Conventions (a transform acts on the last ``spatial_dims`` axes of a tensor, e.g. ``(B, C, *spatial)``):

- **Axes.** Spatial axes are named as in MONAI: ``x``, ``y``, ``z`` are spatial dims 0, 1, 2.
- **Quarter turns.** A turn by ``k`` quarters in the plane ``(a, b)`` turns axis ``a`` towards axis ``b``, as
  ``np.rot90(x, k, axes=(a, b))`` / ``torch.rot90`` do. In 3D, a turn about ``x`` uses plane ``(1, 2)``, about ``y``
  plane ``(2, 0)`` and about ``z`` plane ``(0, 1)`` (:data:`AXIS_PLANES`): right-handed rotations.
- **Matrix.** Every element carries ``matrix``: the forward map of centred voxel coordinates (a voxel at offset
  ``p`` from the centre moves to ``matrix @ p``); composing two elements multiplies their matrices.
- **Exactness.** Elements are compositions of ``torch.rot90`` and ``torch.flip``: no interpolation. Odd quarter
  turns need equal sizes in their plane (a square or cubic grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "AXIS_PLANES",
    "GridSymmetry",
    "axis_flip",
    "cube_rotations",
    "full_grid_group",
    "grid_group",
    "grid_symmetries",
    "rotation_matrix",
    "square_symmetries",
]

# Plane (from-axis, to-axis) in spatial dims for a right-handed rotation about each 3D axis.
AXIS_PLANES: dict[str, tuple[int, int]] = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}


def rotation_matrix(spatial_dims: int, plane: tuple[int, int], angle: float) -> np.ndarray:
    """Forward rotation matrix turning spatial axis ``plane[0]`` towards ``plane[1]`` by ``angle`` degrees.

    Args:
        spatial_dims: size of the matrix.
        plane: the two spatial axes spanning the rotation plane.
        angle: degrees; multiples of 90 give exact integer entries, so matrices of exact transforms compare exactly.

    Returns:
        a ``(spatial_dims, spatial_dims)`` float64 array.
    """
    a, b = plane
    rad = math.radians(angle)
    c, s = math.cos(rad), math.sin(rad)
    if angle % 90 == 0:
        c, s = round(c), round(s)
    m = np.eye(spatial_dims)
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


@dataclass(frozen=True)
class GridSymmetry:
    """One exact symmetry of the grid: quarter turns and axis flips applied in order.

    Attributes:
        name: e.g. ``"cube_z90_x180"`` (turn 180° about ``x``, then 90° about ``z``: the rightmost step first),
            ``"square_flip_horizontal_rot90"`` or ``"flip_x"``.
        spatial_dims: 2 or 3 (the number of trailing axes it acts on).
        steps: ``((a, b), k)`` turns ``k`` quarters in the plane ``(a, b)``; ``((a,), 1)`` reverses axis ``a``.
        matrix: integer forward map of centred voxel coordinates, ``(spatial_dims, spatial_dims)``.
    """

    name: str
    spatial_dims: int
    steps: tuple[tuple[tuple[int, ...], int], ...]
    matrix: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        matrix = np.eye(self.spatial_dims, dtype=np.int64)
        for axes, k in self.steps:  # applied in order: later steps multiply on the left
            if len(axes) == 2:
                step = rotation_matrix(self.spatial_dims, axes, 90 * k).round().astype(np.int64)
            else:
                step = np.eye(self.spatial_dims, dtype=np.int64)
                step[axes[0], axes[0]] = -1
            matrix = step @ matrix
        object.__setattr__(self, "matrix", matrix)

    @property
    def proper(self) -> bool:
        """Whether this is a rotation (determinant +1) rather than a reflection."""
        return round(float(np.linalg.det(self.matrix))) == 1

    @property
    def angle(self) -> float | None:
        """The rotation angle in degrees (0, 90, 120 or 180), from the trace; ``None`` for a reflection."""
        if not self.proper:
            return None
        cos = (np.trace(self.matrix) - (self.spatial_dims - 2)) / 2  # trace = (d - 2) + 2 cos(angle)
        return float(round(math.degrees(math.acos(max(-1.0, min(1.0, cos))))))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the symmetry to the last ``spatial_dims`` axes of ``x``.

        Args:
            x: a tensor with at least ``spatial_dims`` axes, e.g. ``(B, C, *spatial)`` or ``(C, *spatial)``.

        Returns:
            the transformed tensor (a new tensor; same shape when the turned planes are square).

        Raises:
            ValueError: when ``x`` has fewer than ``spatial_dims`` axes.
        """
        if x.ndim < self.spatial_dims:
            raise ValueError(
                f"a {self.spatial_dims}D grid symmetry needs at least {self.spatial_dims} axes, "
                f"got shape {tuple(x.shape)}"
            )
        first = x.ndim - self.spatial_dims
        if not self.steps:
            return x.clone()  # a new tensor, as every other element gives
        for axes, k in self.steps:
            if len(axes) == 2:
                x = torch.rot90(x, k, dims=(first + axes[0], first + axes[1]))
            else:
                x = torch.flip(x, dims=(first + axes[0],))
        return x


def axis_flip(spatial_dims: int, axis: int, name: str | None = None) -> GridSymmetry:
    """The reflection reversing one spatial axis.

    Args:
        spatial_dims: 2 or 3.
        axis: the reversed spatial axis (0-based).
        name: the element's name; default ``"flip_<x|y|z>"``.

    Returns:
        the flip as a :class:`GridSymmetry`.

    Raises:
        ValueError: when ``axis`` is not a spatial axis.
    """
    if not 0 <= axis < spatial_dims:
        raise ValueError(f"axis must be a spatial axis in [0, {spatial_dims - 1}], got {axis}")
    return GridSymmetry(name or f"flip_{'xyz'[axis]}", spatial_dims, (((axis,), 1),))


def square_symmetries() -> list[GridSymmetry]:
    """The 8 symmetries of the square: 4 quarter turns in the plane ``(0, 1)``, then the same mirrored left-right.

    Returns:
        ``square_identity``, ``square_rot90/180/270``, then ``square_flip_horizontal`` and
        ``square_flip_horizontal_rot90/180/270`` (the turn first, then spatial axis 1 reversed).
    """
    out = []
    for mirrored in (False, True):
        for k in range(4):
            steps = (((0, 1), k),) if k else ()
            parts = [f"rot{90 * k}"] if k else []
            if mirrored:
                steps += (((1,), 1),)
                parts.insert(0, "flip_horizontal")
            out.append(GridSymmetry("square_" + ("_".join(parts) or "identity"), 2, steps))
    return out


def cube_rotations() -> list[GridSymmetry]:
    """The 24 proper rotations of the cube as exact ``torch.rot90`` compositions.

    Built as a quarter turn about ``x`` (4 choices) followed by the turn that sends the ``x`` axis to one of the 6
    face directions (identity, ``y`` 90/180/270, ``z`` 90/270): every rotation of the cube exactly once.

    Returns:
        24 elements, the identity first, named ``cube_identity`` or as a composition whose rightmost turn is applied
        first: ``cube_z90_x180`` turns 180° about ``x``, then 90° about ``z``.
    """
    faces: list[tuple[str, int]] = [("", 0), ("y", 1), ("y", 2), ("y", 3), ("z", 1), ("z", 3)]
    out = []
    for face_axis, face_k in faces:
        for x_k in range(4):
            turns = [(ax, k) for ax, k in (("x", x_k), (face_axis, face_k)) if ax and k]
            name = "cube_" + ("_".join(f"{ax}{90 * k}" for ax, k in reversed(turns)) or "identity")
            out.append(GridSymmetry(name, 3, tuple((AXIS_PLANES[ax], k) for ax, k in turns)))
    return out


def grid_group(spatial_dims: int) -> list[GridSymmetry]:
    """The rot90 symmetry group of the grid, the identity first.

    Args:
        spatial_dims: 2 for the 8 symmetries of the square (rotations and their mirror images), 3 for the 24 proper
            rotations of the cube.

    Returns:
        :func:`square_symmetries` or :func:`cube_rotations`.

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3.
    """
    if spatial_dims == 2:
        return square_symmetries()
    if spatial_dims == 3:
        return cube_rotations()
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def full_grid_group(spatial_dims: int) -> list[GridSymmetry]:
    """Every symmetry of the grid, reflections included: all flips and permutations of the spatial axes, the identity
    first: 2 elements in 1D, 8 in 2D (:func:`square_symmetries`), 48 in 3D (:func:`cube_rotations`, then each of them
    after the mirror image ``flip_x``). The group SRE layers and networks are exactly equivariant or invariant to.

    Args:
        spatial_dims: 1, 2 or 3.

    Returns:
        the elements as :class:`GridSymmetry`.

    Raises:
        ValueError: when ``spatial_dims`` is not 1, 2 or 3.
    """
    if spatial_dims == 1:
        return [GridSymmetry("line_identity", 1, ()), axis_flip(1, 0)]
    if spatial_dims == 2:
        return square_symmetries()
    if spatial_dims == 3:
        rotations = cube_rotations()
        # the mirror image first, then the rotation (names read right to left, as the rotations' do)
        names = ["cube_flip_x" if not g.steps else f"{g.name}_flip_x" for g in rotations]
        mirrored = [GridSymmetry(n, 3, (((0,), 1),) + g.steps) for n, g in zip(names, rotations)]
        return rotations + mirrored
    raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")


def grid_symmetries(image: torch.Tensor, spatial_dims: int) -> list[torch.Tensor]:
    """The image under every element of :func:`grid_group`, the identity first.

    Args:
        image: a tensor whose last ``spatial_dims`` axes are spatial, e.g. ``(C, H, W, D)`` or ``(B, C, H, W)``.
        spatial_dims: 3 for the 24 proper rotations of the cube, 2 for the 4 rotations of the square and their
            mirror images (8).

    Returns:
        the transformed tensors (24 or 8).

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3 or the tensor has too few axes.
    """
    return [g(image) for g in grid_group(spatial_dims)]
