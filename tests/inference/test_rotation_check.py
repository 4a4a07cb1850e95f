# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The rotation check: exactly the grid's rot90 symmetries, and zero spread for an invariant model."""

from __future__ import annotations

import pytest
import torch

from monai_sre.inference.rotation_check import grid_symmetries, symmetry_spread


def _closure(x: torch.Tensor, planes: list[list[int]], flips: list[int]) -> set[bytes]:
    """Every tensor reachable from ``x`` by rot90 in ``planes`` and flips of ``flips`` axes (breadth first)."""
    seen, todo = {x.numpy().tobytes()}, [x]
    while todo:
        t = todo.pop()
        for nxt in [torch.rot90(t, 1, p) for p in planes] + [torch.flip(t, [a]) for a in flips]:
            key = nxt.numpy().tobytes()
            if key not in seen:
                seen.add(key)
                todo.append(nxt)
    return seen


def test_3d_gives_the_24_proper_cube_rotations():
    x = torch.randperm(4 * 5 * 5 * 5).reshape(4, 5, 5, 5)  # all values distinct: every symmetry looks different
    rotated = grid_symmetries(x, spatial_dims=3)
    keys = [r.numpy().tobytes() for r in rotated]
    assert len(rotated) == 24 and len(set(keys)) == 24 and torch.equal(rotated[0], x)
    assert set(keys) == _closure(x, planes=[[1, 2], [1, 3], [2, 3]], flips=[])  # rotations only, no mirror image


def test_2d_gives_the_8_rotations_and_flips_of_the_square():
    x = torch.randperm(2 * 3 * 6 * 6).reshape(2, 3, 6, 6)
    flipped = grid_symmetries(x, spatial_dims=2)
    keys = [r.numpy().tobytes() for r in flipped]
    assert len(set(keys)) == 8 and set(keys) == _closure(x, planes=[[2, 3]], flips=[3])


def test_spread_is_zero_for_an_invariant_model_and_positive_for_a_cnn():
    torch.manual_seed(0)
    image = torch.rand(1, 8, 8, 8)
    pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(1, 3))
    conv = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    conv(image[None])  # materialise the lazy layer

    def proba(model):
        return lambda batch: torch.softmax(model(batch), dim=1).detach()

    invariant = symmetry_spread(proba(pooled), image, spatial_dims=3)
    assert invariant["rotation_spread"] < 1e-6 and invariant["rotation_agreement"] == 1.0
    assert symmetry_spread(proba(conv), image, spatial_dims=3)["rotation_spread"] > 1e-3


def test_bad_dimensions_are_refused():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        grid_symmetries(torch.zeros(4, 4), spatial_dims=1)
    with pytest.raises(ValueError, match=r"needs at least 3 axes, got shape \(4, 4\)"):
        grid_symmetries(torch.zeros(4, 4), spatial_dims=3)


def test_old_module_name_still_imports_the_same_functions():
    from monai_sre.inference import rotations

    assert rotations.grid_symmetries is grid_symmetries and rotations.symmetry_spread is symmetry_spread
