# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The gradient-norm nonlinearity: its values, its exact grid symmetry, its split of the channels, its bf16 gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_sre.layers import GradientNormActivation, gradient_norm, gradient_norm_activation
from monai_sre.transforms import full_grid_group


def _reference(x: np.ndarray, eps: float) -> np.ndarray:
    """sqrt(eps + sum over spatial axes of ((x[i + 1] - x[i - 1]) / 2)^2), zero outside, with numpy."""
    squares = np.full(x.shape, eps)
    for axis in range(2, x.ndim):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        p = np.pad(x, pad)
        n = x.shape[axis]
        diff = (np.take(p, range(2, n + 2), axis) - np.take(p, range(0, n), axis)) / 2
        squares += diff**2
    return np.sqrt(squares)


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 6, 5), (1, 2, 4, 5, 3)])
def test_gradient_norm_matches_central_differences(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = gradient_norm(x, eps=1e-3)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.numpy(), _reference(x.numpy(), 1e-3), rtol=1e-12)


def test_gradient_norm_of_a_ramp_is_its_slope_inside_and_counts_the_zero_border():
    # f(i, j) = 2 i + 0 j: interior gradient (2, 0); at the first row the zero padding gives (f(1) - 0) / 2 = 1
    x = (2.0 * torch.arange(5.0))[:, None].expand(5, 4)[None, None]
    out = gradient_norm(x, eps=0.0)[0, 0]
    assert torch.allclose(out[1:4, 1:3], torch.full((3, 2), 2.0))
    assert out[0, 1] == pytest.approx(1.0)  # (2 * 1 - 0) / 2
    assert out[4, 1] == pytest.approx(3.0)  # |0 - 2 * 3| / 2: the row below the last is padding
    assert out[2, 0] == pytest.approx(8.0**0.5)  # vertical 2, horizontal (f(2, 1) - 0) / 2 = 2 from the padding


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_gradient_norm_commutes_exactly_with_every_grid_symmetry(spatial_dims):
    # axis permutations need equal sizes
    x = torch.randn((2, 3) + (6,) * spatial_dims, generator=torch.Generator().manual_seed(1))
    out = gradient_norm(x)
    for g in full_grid_group(spatial_dims):
        # equal up to the order of the float sum of squares, which a permutation of the axes changes
        torch.testing.assert_close(gradient_norm(g(x)), g(out), rtol=1e-6, atol=0, msg=g.name)


def test_activation_splits_the_channels():
    x = torch.randn(2, 5, 6, 6, generator=torch.Generator().manual_seed(2))
    act = GradientNormActivation("relu", channels=5, gradient_channels=2)
    out = act(x.clone())
    assert torch.equal(out[:, :3], torch.relu(x[:, :3]))
    assert torch.equal(out[:, 3:], gradient_norm(x[:, 3:]))
    assert act.gradient_index.tolist() == [3, 4]
    assert "gradient_channels=2" in repr(act)


def test_activation_refuses_bad_splits_and_inputs():
    with pytest.raises(ValueError, match="gradient_channels must be between 0 and channels=4"):
        GradientNormActivation("relu", channels=4, gradient_channels=4)
    with pytest.raises(ValueError, match="gradient_fraction must be in"):
        gradient_norm_activation("relu", 8, 1.0)
    with pytest.raises(ValueError, match="expects 4 channels"):
        GradientNormActivation("relu", 4, 1)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="a spatial axis"):
        gradient_norm(torch.zeros(2, 3))


def test_fraction_rounds_to_channels_and_zero_gives_the_plain_activation():
    assert isinstance(gradient_norm_activation("relu", 8, 0.0), torch.nn.ReLU)
    assert isinstance(gradient_norm_activation("relu", 8, 0.05), torch.nn.ReLU)  # rounds to no channel
    assert gradient_norm_activation("relu", 8, 0.5).gradient_index.tolist() == [4, 5, 6, 7]
    assert gradient_norm_activation("relu", 2, 0.9).gradient_index.tolist() == [1]  # one channel keeps the activation


def test_bf16_flat_input_has_finite_gradient():
    x = torch.zeros(1, 2, 6, 6, dtype=torch.bfloat16, requires_grad=True)
    out = gradient_norm(x)
    assert out.dtype == torch.bfloat16
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() == 0
