# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SymmetricDownsample: window rule, output size, exact rot90/flip equivariance for odd and even sizes."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn

from monai_sre.layers import SymmetricDownsample, symmetric_output_size, symmetric_window


def _transforms(spatial_dims: int):
    """Every rot90/flip of the grid as (axis permutation, flipped axes) acting on dims 2.."""
    axes = list(range(2, 2 + spatial_dims))
    for perm in itertools.permutations(axes):
        for flips in itertools.product((False, True), repeat=spatial_dims):
            yield [0, 1, *perm], [a for a, f in zip(axes, flips) if f]


def _apply(x: torch.Tensor, perm: list[int], flips: list[int]) -> torch.Tensor:
    y = x.permute(perm)
    return y.flip(flips) if flips else y


@pytest.mark.parametrize(
    "size, stride, expected",
    [(28, 2, (2, 0)), (7, 2, (3, 1)), (1, 2, (3, 1)), (9, 3, (3, 0)), (7, 3, (3, 1)), (8, 3, (4, 1)), (5, 1, (1, 0))],
)
def test_symmetric_window(size, stride, expected):
    assert symmetric_window(size, stride) == expected


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_output_size_is_ceil(mode, stride):
    down = SymmetricDownsample(1, stride, mode)
    for n in range(1, 21):
        assert down(torch.randn(1, 1, n)).shape[-1] == symmetric_output_size(n, stride) == -(-n // stride)


def test_values_odd_and_even():
    avg, mx = SymmetricDownsample(1, 2, "avg"), SymmetricDownsample(1, 2, "max")
    odd = torch.arange(7.0).view(1, 1, 7)
    even = torch.arange(6.0).view(1, 1, 6)
    # Odd: windows centred on 0, 2, 4, 6 (padding not counted); even: pairs {0,1}, {2,3}, {4,5}.
    assert avg(odd).flatten().tolist() == [0.5, 2.0, 4.0, 5.5]
    assert mx(odd).flatten().tolist() == [1.0, 3.0, 5.0, 6.0]
    assert avg(even).flatten().tolist() == [0.5, 2.5, 4.5]
    assert mx(-even).flatten().tolist() == [0.0, -2.0, -4.0]  # padding never wins a max


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("shape", [(7,), (8,), (7, 8), (9, 9), (14, 14), (5, 6, 7), (7, 7, 7)])
def test_equivariant_to_every_rot90_and_flip(mode, stride, shape):
    down = SymmetricDownsample(len(shape), stride, mode)
    x = torch.randn((2, 3) + shape, generator=torch.Generator().manual_seed(0))
    y = down(x)
    for perm, flips in _transforms(len(shape)):
        torch.testing.assert_close(down(_apply(x, perm, flips)), _apply(y, perm, flips), rtol=1e-6, atol=1e-6)


def test_anchored_pooling_is_not_equivariant_on_odd_sizes():
    # Why the module exists: torch's AvgPool(2) on 7 drops index 6, so a flip changes the result.
    x = torch.randn(1, 1, 7, 7)
    pool = nn.AvgPool2d(2)
    assert not torch.allclose(pool(x.flip(-1)), pool(x).flip(-1))


def test_per_axis_stride():
    down = SymmetricDownsample(3, (1, 2, 2))
    assert down(torch.randn(1, 2, 5, 9, 8)).shape == (1, 2, 5, 5, 4)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_torchscript(spatial_dims):
    for mode in ("avg", "max"):
        down = SymmetricDownsample(spatial_dims, 2, mode)
        scripted = torch.jit.script(down)
        x = torch.randn((2, 3) + (7, 8, 5)[:spatial_dims])
        assert torch.equal(scripted(x), down(x))


@pytest.mark.parametrize(
    "args, match",
    [
        ({"spatial_dims": 2, "mode": "median"}, r"mode must be one of \('avg', 'max'\), got 'median'"),
        ({"spatial_dims": 2, "stride": 0}, r"stride must be a positive int .* got 0"),
        ({"spatial_dims": 2, "stride": (2, 2, 2)}, r"spatial_dims=2, got \(2, 2, 2\)"),
        ({"spatial_dims": 4}, r"spatial_dims must be 1, 2 or 3, got 4"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        SymmetricDownsample(**args)


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"must have 4 dims .* got shape \[1, 7, 7\]"):
        SymmetricDownsample(2)(torch.randn(1, 7, 7))
    with pytest.raises(ValueError, match=r"size >= 1 and stride >= 1, got size=0"):
        symmetric_window(0, 2)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("shape,stride", [((7, 8, 9), 2), ((16, 16, 16), 2), ((9, 10, 11), (1, 2, 3)), ((5, 6, 7), 3)])
def test_channels_last_volumes_pool_in_channels_last(mode, shape, stride):
    # A channels-last 3D map is pooled as two channels-last 2D poolings: same values and gradients as the 3D pooling
    # of the contiguous copy, and the output stays channels-last for the next SRE convolution.
    torch.manual_seed(0)
    down = SymmetricDownsample(3, stride, mode)
    x = torch.randn(2, 5, *shape, dtype=torch.float64)
    x_last = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    x = x.requires_grad_()
    y, y_last = down(x), down(x_last)
    assert y_last.is_contiguous(memory_format=torch.channels_last_3d) and not y_last.is_contiguous()
    torch.testing.assert_close(y_last, y, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    (gx,), (gx_last,) = torch.autograd.grad(y, [x], g), torch.autograd.grad(y_last, [x_last], g)
    torch.testing.assert_close(gx_last, gx, rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(down)
    torch.testing.assert_close(scripted(x_last.detach()), y.detach(), rtol=1e-12, atol=1e-12)
