# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Converted MONAI segmentation networks are exactly equivariant, ``net(T x) = T net(x)``, and a converted
EfficientNet exactly invariant, under the 8 (2D) and 48 (3D) rot90/flip symmetries at 64 px and 32^3, eval mode.

The 3D cases are slow (48 symmetries at 32^3). Each case also checks the unconverted network (control: the measurement sees a broken symmetry) and that the
conversion leaves nothing that breaks the symmetry (no warning). Narrow feature counts keep the suite fast.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import BasicUNet, EfficientNetBN, UNet
from torch import nn

from monai_sre import convert_to_sre
from monai_sre.layers import SREConv
from monai_sre.networks import sre_basic_unet, sre_unet
from monai_sre.transforms import full_grid_group

TOL = 1e-5
SIZES = {2: 64, 3: 32}


def _basic_unet(dims: int) -> nn.Module:
    return BasicUNet(spatial_dims=dims, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))


def _unet(dims: int) -> nn.Module:
    return UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=(4, 8, 16, 32), strides=(2, 2, 2),
                num_res_units=1)


def _efficientnet(dims: int) -> nn.Module:
    return EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=dims, in_channels=1, num_classes=3)


def _error(net: nn.Module, dims: int, segmentation: bool, randomize_norms) -> float:
    """max over all symmetries T of |net(T x) - T net(x)| (segmentation) or |net(T x) - net(x)| (classification),
    relative to the output (segmentation) or to how much the logits of two different inputs differ (a deep random
    classifier's logits hardly depend on its input: relative to their size every network would look invariant)."""
    if segmentation:
        randomize_norms(net)
    net.eval()
    x, other = torch.randn((2, 1) + (SIZES[dims],) * dims, generator=torch.Generator().manual_seed(0))[:, None]
    worst = 0.0
    with torch.no_grad():
        y = net(x)
        assert torch.isfinite(y).all()
        scale = y.abs().max() if segmentation else (net(other) - y).abs().max()
        assert scale > 0
        for transform in full_grid_group(dims):
            expected = transform(y) if segmentation else y
            worst = max(worst, float((net(transform(x)) - expected).abs().max() / scale))
    return worst


CASES = {
    "basic_unet": (_basic_unet, True),
    "unet": (_unet, True),
    "efficientnet": (_efficientnet, False),
}


def _cases():
    fast = {("basic_unet", 2), ("unet", 2), ("efficientnet", 2)}
    return [
        (name, dims) if (name, dims) in fast else pytest.param(name, dims, marks=pytest.mark.slow)
        for name in CASES for dims in (2, 3)
    ]


@pytest.mark.parametrize("name, dims", _cases())
def test_converted_network_is_exactly_equivariant(name, dims, randomize_norms):
    factory, segmentation = CASES[name]
    torch.manual_seed(0)
    dense = factory(dims)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left that breaks the symmetry
        net = convert_to_sre(dense, replace_pooling=True)
    assert not any(isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)) for m in net.modules())
    assert _error(net, dims, segmentation, randomize_norms) < TOL
    assert _error(dense, dims, segmentation, randomize_norms) > 1e-3  # control


@pytest.mark.parametrize("dims", [2])
def test_builders_give_equivariant_segmentation_networks(dims, randomize_norms):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        basic = sre_basic_unet(spatial_dims=dims, features=(4, 4, 8, 8, 16, 4))
        unet = sre_unet(dims, 1, 2, channels=(4, 8, 16), strides=(2, 2))
    for net in (basic, unet):
        assert any(isinstance(m, SREConv) for m in net.modules())
        assert _error(net, dims, True, randomize_norms) < TOL
    assert {m.kernel_size for m in sre_basic_unet(2, features=(4, 4, 8, 8, 16, 4), kernel_size=5).modules()
            if isinstance(m, SREConv)} == {(5, 5)}


def test_sre_basic_unet_is_a_bundle_target():
    parser = ConfigParser({"network_def": {"_target_": "monai_sre.networks.sre_basic_unet", "spatial_dims": 2,
                                           "in_channels": 1, "out_channels": 3, "features": [4, 4, 8, 8, 16, 4]}})
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)
