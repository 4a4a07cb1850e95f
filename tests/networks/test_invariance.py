# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Exact invariance of the logits to all rot90/flip symmetries, in eval mode with non-trivial BatchNorm statistics.

Every case stacks the 8 (2D) or 48 (3D) transformed copies of one input into one batch and requires all logits to
agree with the untransformed ones to a relative 1e-5. Narrow widths (``widen_factor``) keep the suite fast; the
symmetry argument does not depend on the width.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks.nets import resnet18

from monai_sre import convert_to_sre
from monai_sre.networks import sre_resnet10, sre_resnet18, sre_resnet50

TOL = 1e-5


def _input(spatial_dims: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((1, 1) + (size,) * spatial_dims, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [28, 32, 64, 65])
def test_sre_resnet18_2d_default_is_invariant(size, randomize_norms, max_symmetry_error):
    torch.manual_seed(0)
    net = randomize_norms(sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125))
    assert max_symmetry_error(net, _input(2, size)) < TOL


@pytest.mark.parametrize("size", [65])
def test_sre_resnet50_2d_strided_stem_and_max_pool_is_invariant(size, randomize_norms, max_symmetry_error):
    torch.manual_seed(1)
    net = sre_resnet50(
        spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125, conv1_t_size=7, conv1_t_stride=2,
        no_max_pool=False, downsample_mode="max", shortcut_type="A",
    )
    assert max_symmetry_error(randomize_norms(net), _input(2, size)) < TOL


def test_sre_resnet10_3d_28_is_invariant_under_48_symmetries(randomize_norms, max_symmetry_error, symmetric_copies):
    torch.manual_seed(2)
    net = randomize_norms(sre_resnet10(spatial_dims=3, n_input_channels=1, num_classes=3, widen_factor=0.125))
    x = _input(3, 28)
    assert symmetric_copies(x).shape[0] == 48
    assert max_symmetry_error(net, x) < TOL


def test_sre_resnet10_3d_64_strided_stem_is_invariant(randomize_norms, max_symmetry_error):
    torch.manual_seed(3)
    net = sre_resnet10(spatial_dims=3, n_input_channels=1, num_classes=3, widen_factor=0.0625, conv1_t_stride=2)
    assert max_symmetry_error(randomize_norms(net), _input(3, 64)) < TOL


@pytest.mark.slow
@pytest.mark.parametrize("size", [28, 64])
def test_sre_resnet18_3d_default_is_invariant(size, randomize_norms, max_symmetry_error):
    torch.manual_seed(4)
    net = randomize_norms(sre_resnet18(spatial_dims=3, n_input_channels=1, num_classes=3, widen_factor=0.125))
    assert max_symmetry_error(net, _input(3, size)) < TOL


@pytest.mark.parametrize("size", [28, 65])
def test_sre_resnet18_2d_with_gradient_norm_channels_is_invariant(size, randomize_norms, max_symmetry_error):
    torch.manual_seed(6)
    net = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125, gradient_fraction=0.5)
    assert max_symmetry_error(randomize_norms(net), _input(2, size)) < TOL


def test_sre_resnet50_2d_and_resnet10_3d_with_gradient_norm_channels_are_invariant(
    randomize_norms, max_symmetry_error
):
    torch.manual_seed(7)
    net = sre_resnet50(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125, gradient_fraction=0.25)
    assert max_symmetry_error(randomize_norms(net), _input(2, 33)) < TOL
    net = sre_resnet10(spatial_dims=3, n_input_channels=1, num_classes=3, widen_factor=0.125, gradient_fraction=0.5)
    assert max_symmetry_error(randomize_norms(net), _input(3, 20)) < TOL


def _converted_resnet18(spatial_dims: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(5)
    dense = resnet18(spatial_dims=spatial_dims, n_input_channels=1, num_classes=3, widen_factor=0.125, **kwargs)
    return convert_to_sre(dense, replace_pooling=True)


def test_dense_monai_resnet18_is_not_invariant(randomize_norms, max_symmetry_error):
    # Control: the same measurement on the unconverted network must see the broken symmetry.
    torch.manual_seed(5)
    dense = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125, conv1_t_stride=2)
    assert max_symmetry_error(randomize_norms(dense), _input(2, 28)) > 1e-3


def test_converted_without_pool_replacement_warns_and_is_not_invariant(randomize_norms, max_symmetry_error):
    torch.manual_seed(5)
    dense = resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125, conv1_t_stride=2)
    with pytest.warns(UserWarning, match=r"maxpool: strided MaxPool2d.*replace_pooling=True"):
        net = convert_to_sre(dense)
    # 28 -> 14 after the stem: MaxPool2d(3, 2, 1) on an even size samples a grid anchored at index 0.
    assert max_symmetry_error(randomize_norms(net), _input(2, 28)) > 1e-4


@pytest.mark.parametrize("size", [28, 32, 64, 65])
def test_converted_monai_resnet18_2d_is_invariant(size, randomize_norms, max_symmetry_error):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left that breaks the symmetry
        net = _converted_resnet18(2, conv1_t_stride=2)
    assert max_symmetry_error(randomize_norms(net), _input(2, size)) < TOL


def test_converted_monai_resnet18_3d_28_is_invariant(randomize_norms, max_symmetry_error):
    net = _converted_resnet18(3)
    assert max_symmetry_error(randomize_norms(net), _input(3, 28)) < TOL


@pytest.mark.slow
def test_converted_monai_resnet18_3d_64_is_invariant(randomize_norms, max_symmetry_error):
    net = _converted_resnet18(3)
    assert max_symmetry_error(randomize_norms(net), _input(3, 64)) < TOL
