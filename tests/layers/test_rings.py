# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
from __future__ import annotations

import itertools

import pytest
import torch

from monai_sre.layers.rings import (
    OUTSIDE,
    num_rings_default,
    per_axis,
    ring_index,
    ring_sizes,
    same_padding,
    taps_inside,
)

X = OUTSIDE

EXPECTED_2D = {
    3: [[1, 1, 1], [1, 0, 1], [1, 1, 1]],
    5: [
        [X, 2, 2, 2, X],
        [2, 1, 1, 1, 2],
        [2, 1, 0, 1, 2],
        [2, 1, 1, 1, 2],
        [X, 2, 2, 2, X],
    ],
    9: [
        [X, X, 4, 4, 4, 4, 4, X, X],
        [X, 4, 4, 3, 3, 3, 4, 4, X],
        [4, 4, 3, 2, 2, 2, 3, 4, 4],
        [4, 3, 2, 1, 1, 1, 2, 3, 4],
        [4, 3, 2, 1, 0, 1, 2, 3, 4],
        [4, 3, 2, 1, 1, 1, 2, 3, 4],
        [4, 4, 3, 2, 2, 2, 3, 4, 4],
        [X, 4, 4, 3, 3, 3, 4, 4, X],
        [X, X, 4, 4, 4, 4, 4, X, X],
    ],
}


@pytest.mark.parametrize("k", sorted(EXPECTED_2D))
def test_band_maps_match_tables(k):
    assert torch.equal(ring_index(k, 2), torch.tensor(EXPECTED_2D[k]))
    assert num_rings_default(k, 2) == k // 2 + 1


def test_1d_band_map():
    assert ring_index(5, 1).tolist() == [2, 1, 0, 1, 2]


@pytest.mark.parametrize("dims,k", [(1, 7), (2, 3), (2, 7), (2, 11), (3, 3), (3, 5), (3, 7)])
@pytest.mark.parametrize("num_rings", [None, 1, 2, 6])
def test_invariant_under_flips_and_permutations(dims, k, num_rings):
    idx = ring_index(k, dims, num_rings)
    for perm in itertools.permutations(range(dims)):
        for flips in itertools.product((False, True), repeat=dims):
            g = idx.permute(*perm).flip([i for i, f in enumerate(flips) if f])
            assert torch.equal(g, idx), (perm, flips)


def test_custom_ring_count_covers_all_bands():
    idx = ring_index(9, 2, num_rings=3)
    assert set(idx[idx != OUTSIDE].unique().tolist()) == {0, 1, 2}
    assert ring_sizes(idx, 3).sum() == int((idx != OUTSIDE).sum())
    assert torch.equal(ring_index(9, 2, num_rings=1) != OUTSIDE, ring_index(9, 2) != OUTSIDE)


def test_anisotropic_kernel_keeps_taps_meaningful():
    idx = ring_index((3, 7, 7), 3)
    # every axis reaches the full radius: the centre column along the short axis is the outer band
    assert idx[0, 3, 3] == idx[1, 3, 0] == 3
    assert int((idx != OUTSIDE).sum()) == 55  # of 147, vs 19 in sre-conv 1.0.2
    assert set(idx[idx != OUTSIDE].unique().tolist()) == {0, 1, 2, 3}
    for flips in itertools.product((False, True), repeat=3):
        assert torch.equal(idx.flip([i for i, f in enumerate(flips) if f]), idx)
    assert torch.equal(idx.transpose(1, 2), idx)  # the two equal-sized axes may swap


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kernel_size": 4, "spatial_dims": 2}, "odd"),
        ({"kernel_size": (3, 4), "spatial_dims": 2}, "odd"),
        ({"kernel_size": 0, "spatial_dims": 2}, "odd"),
        ({"kernel_size": (3, 3), "spatial_dims": 3}, "3 entries"),
        ({"kernel_size": 3, "spatial_dims": 4}, "spatial_dims"),
        ({"kernel_size": 3, "spatial_dims": 2, "num_rings": 0}, "num_rings"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ring_index(**kwargs)


def test_geometry_helpers():
    assert per_axis(3, 2, "stride") == (3, 3)
    assert per_axis([1, 2, 3], 3) == (1, 2, 3)
    with pytest.raises(ValueError, match=r"dilation must be one int or 2 entries .* got \[1, 2, 3\]"):
        per_axis([1, 2, 3], 2, "dilation")
    assert same_padding((3, 5, 9), (1, 2, 3)) == (1, 4, 12)
    # 5x5: the 4 corners lie outside the circle; 9x9: 12 corner taps (see EXPECTED_2D)
    assert taps_inside(5, 2) == 21
    assert taps_inside(9, 2) == 81 - 12
    assert taps_inside((3, 5), 2) == int((ring_index((3, 5), 2) != OUTSIDE).sum())
