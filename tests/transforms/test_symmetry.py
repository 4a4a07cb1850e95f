# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The grid's symmetry groups: exactly the 8 square symmetries and 24 cube rotations, a group, acting as stated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monai_sre.transforms.symmetry import (
    AXIS_PLANES,
    axis_flip,
    cube_rotations,
    full_grid_group,
    grid_group,
    grid_symmetries,
    rotation_matrix,
    square_symmetries,
)


def _signed_permutations(dims: int, proper_only: bool) -> set[bytes]:
    """Every signed permutation matrix (the full symmetry group of the square/cube), optionally det +1 only."""
    out = set()
    for perm in itertools.permutations(range(dims)):
        for signs in itertools.product((1, -1), repeat=dims):
            m = np.zeros((dims, dims), dtype=np.int64)
            m[list(perm), range(dims)] = signs
            if not proper_only or round(np.linalg.det(m)) == 1:
                out.add(m.tobytes())
    return out


@pytest.mark.parametrize(
    "group, dims, size, proper_only",
    [(square_symmetries(), 2, 8, False), (cube_rotations(), 3, 24, True), (full_grid_group(1), 1, 2, False),
     (full_grid_group(2), 2, 8, False), (full_grid_group(3), 3, 48, False)],
    ids=["square", "cube", "full_1d", "full_2d", "full_3d"],
)
def test_the_group_is_every_symmetry_once(group, dims, size, proper_only):
    keys = [g.matrix.tobytes() for g in group]
    assert len(group) == size and len(set(keys)) == size
    assert set(keys) == _signed_permutations(dims, proper_only)  # all of them: 8 of the square, 24 rotations
    assert group[0].name.endswith("identity") and np.array_equal(group[0].matrix, np.eye(dims))
    assert len({g.name for g in group}) == size
    for g in group:
        assert g.matrix.dtype == np.int64 and np.array_equal(g.matrix @ g.matrix.T, np.eye(dims))
        assert g.spatial_dims == dims
    for a, b in itertools.product(group, repeat=2):
        assert (a.matrix @ b.matrix).tobytes() in set(keys)  # closed under composition
    for g in group:
        assert g.matrix.T.tobytes() in set(keys)  # the inverse of an orthogonal matrix is its transpose


@pytest.mark.parametrize("group", [grid_group(2), grid_group(3), full_grid_group(1), full_grid_group(3)],
                         ids=["square", "cube", "full_1d", "full_3d"])
def test_each_element_moves_voxels_as_its_matrix_says(group):
    size, c, dims = 5, 2, group[0].spatial_dims
    for g in group:
        for offset in itertools.chain(np.eye(dims, dtype=int), [np.arange(1, dims + 1) % 3]):
            x = torch.zeros(1, 1, *([size] * dims))
            x[(0, 0, *(c + offset))] = 1
            found = torch.nonzero(g(x)[0, 0]).tolist()
            assert found == [(c + g.matrix @ offset).tolist()], (g.name, offset)


@pytest.mark.parametrize("group", [grid_group(2), grid_group(3), full_grid_group(3)], ids=["square", "cube", "full_3d"])
def test_applying_two_elements_is_applying_their_product(group):
    """The action is a group action: g(h(x)) is the element whose matrix is G @ H, and g^-1 undoes g."""
    dims = group[0].spatial_dims
    by_matrix = {g.matrix.tobytes(): g for g in group}
    x = torch.randperm(2 * 5**dims).reshape(2, *([5] * dims)).float()  # distinct values: distinct images
    images = {g.name: g(x) for g in group}
    assert len({t.numpy().tobytes() for t in images.values()}) == len(group)
    for g, h in itertools.product(group, repeat=2):
        product = by_matrix[(g.matrix @ h.matrix).tobytes()]
        assert torch.equal(g(images[h.name]), images[product.name]), (g.name, h.name)
    for g in group:
        assert torch.equal(by_matrix[g.matrix.T.tobytes()](images[g.name]), x), g.name


def test_angles_and_reflections():
    cube = cube_rotations()
    assert sorted(g.angle for g in cube) == [0.0] + [90.0] * 6 + [120.0] * 8 + [180.0] * 9
    assert all(g.proper for g in cube)
    square = square_symmetries()
    assert [g.angle for g in square[:4]] == [0.0, 90.0, 180.0, 90.0]  # the unsigned angle of each turn
    assert [g.proper for g in square] == [True] * 4 + [False] * 4 and all(g.angle is None for g in square[4:])
    assert [g.name for g in square] == [
        "square_identity", "square_rot90", "square_rot180", "square_rot270", "square_flip_horizontal",
        "square_flip_horizontal_rot90", "square_flip_horizontal_rot180", "square_flip_horizontal_rot270",
    ]  # fmt: skip
    names = {g.name: g for g in cube}
    np.testing.assert_array_equal(
        names["cube_z90_x180"].matrix, rotation_matrix(3, AXIS_PLANES["z"], 90) @ rotation_matrix(3, (1, 2), 180)
    )


def test_flips_and_the_image_list():
    flip = axis_flip(2, 1, "flip_horizontal")
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert flip(x)[0, 0].tolist() == [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]] and not flip.proper
    assert axis_flip(3, 2).name == "flip_z" and axis_flip(3, 2).matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, -1]]
    volume = torch.rand(2, 4, 4, 4)  # (C, *spatial): the trailing axes are the spatial ones
    listed = grid_symmetries(volume, 3)
    assert len(listed) == 24 and torch.equal(listed[0], volume)
    assert all(torch.equal(t, g(volume[None])[0]) for t, g in zip(listed, cube_rotations(), strict=True))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 4"):
        grid_group(4)
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3, got 0"):
        full_grid_group(0)
    with pytest.raises(ValueError, match=r"axis must be a spatial axis in \[0, 1\], got 2"):
        axis_flip(2, 2)
    with pytest.raises(ValueError, match=r"3D grid symmetry needs at least 3 axes, got shape \(4, 4\)"):
        cube_rotations()[1](torch.zeros(4, 4))
