# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""convert_to_sre: layer replacement rules, weight projection, symmetry breakers, MONAI networks."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import DenseNet121, SEResNet50, resnet18
from torch import nn

from monai_sre import convert_to_sre
from monai_sre.layers import (
    OUTSIDE,
    SREConv,
    SREConvTranspose,
    SymmetricDownsample,
    find_symmetry_breakers,
    project_dense_kernel,
    ring_index,
)


def _band_means_by_loop(dense: torch.Tensor, index: torch.Tensor, bands: int) -> torch.Tensor:
    """Reference projection: average the taps of each band one by one."""
    out = torch.zeros(dense.shape[:2] + (bands,), dtype=torch.float64)
    for b in range(bands):
        taps = [pos for pos in itertools.product(*[range(k) for k in index.shape]) if index[pos] == b]
        for pos in taps:
            out[..., b] += dense[(slice(None), slice(None)) + pos].double()
        out[..., b] /= max(len(taps), 1)
    return out


def _invariance_error(net: nn.Module, x: torch.Tensor) -> float:
    spatial = list(range(2, x.dim()))
    copies = [
        x.permute([0, 1, *perm]).flip([a for a, f in zip(spatial, flips) if f])
        for perm in itertools.permutations(spatial)
        for flips in itertools.product((False, True), repeat=len(spatial))
    ]
    with torch.no_grad():
        y = net.eval()(torch.cat(copies))
    return float((y - y[:1]).abs().max() / y[0].abs().max())


@pytest.mark.parametrize("kernel, spatial_dims", [((5, 5), 2), ((3, 3, 3), 3), ((3, 7, 7), 3), ((7,), 1)])
def test_projection_is_the_band_mean(kernel, spatial_dims):
    dense = torch.randn((4, 3) + kernel)
    index = ring_index(kernel, spatial_dims)
    bands = int(index.max()) + 1
    projected = project_dense_kernel(dense)
    assert projected.shape == (4, 3, bands)
    torch.testing.assert_close(projected.double(), _band_means_by_loop(dense, index, bands), rtol=1e-5, atol=1e-6)
    # Least squares: the residual is orthogonal to every band indicator.
    residual = dense - torch.nn.functional.pad(projected, (0, 1))[:, :, torch.where(index == OUTSIDE, bands, index)]
    for b in range(bands):
        assert residual[:, :, index == b].sum(-1).abs().max() < 1e-4


def test_projection_into_a_larger_kernel_centres_the_dense_kernel():
    dense = torch.randn(2, 2, 3, 3)
    padded = torch.nn.functional.pad(dense, (1, 1, 1, 1))
    index = ring_index(5, 2)
    expected = _band_means_by_loop(padded, index, 3)
    torch.testing.assert_close(project_dense_kernel(dense, kernel_size=5).double(), expected, rtol=1e-5, atol=1e-6)


def test_projection_of_a_radial_kernel_is_exact():
    sre = SREConv(2, 3, 4, 7)
    torch.testing.assert_close(project_dense_kernel(sre.dense_kernel().detach()), sre.weight.detach())


def _radial_stack(spatial_dims: int) -> nn.Sequential:
    """Stride-1 MONAI convolution blocks whose dense kernels are set to radially symmetric ones."""
    torch.manual_seed(0)
    net = nn.Sequential(
        Convolution(spatial_dims, 2, 6, kernel_size=3, norm="batch", act="relu"),
        Convolution(spatial_dims, 6, 6, kernel_size=5, norm="batch", act="prelu", bias=True),
        Convolution(spatial_dims, 6, 4, kernel_size=1, act="relu"),
        nn.Conv1d(4, 4, 3, padding=1) if spatial_dims == 1 else nn.Identity(),
        {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[spatial_dims](1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and max(m.kernel_size) > 1:
                radial = SREConv(spatial_dims, m.in_channels, m.out_channels, m.kernel_size)
                m.weight.copy_(radial.dense_kernel())
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_projection_of_radial_kernels_is_lossless(spatial_dims):
    dense = _radial_stack(spatial_dims)
    converted = convert_to_sre(dense)
    assert sum(isinstance(m, SREConv) for m in converted.modules()) == (3 if spatial_dims == 1 else 2)
    x = torch.randn((2, 2) + (9,) * spatial_dims)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), dense(x), rtol=1e-5, atol=1e-5)


def test_project_weights_false_keeps_fresh_initialisation():
    dense = _radial_stack(2)
    converted = convert_to_sre(dense, project_weights=False)
    x = torch.randn(2, 2, 9, 9)
    with torch.no_grad():
        assert not torch.allclose(converted(x), dense(x))


def test_replacement_rules_and_output_sizes():
    dense = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2, padding=0),  # strided, no padding: size (n - 4) / 2 rounded up
        nn.Conv2d(4, 4, 3, padding=1),  # stride 1
        nn.Conv2d(4, 8, 1, stride=2),  # strided 1x1
        nn.Conv2d(8, 8, 1),  # 1x1 stays as it is
        nn.MaxPool2d(3, 2, 1),
    )
    with pytest.warns(UserWarning, match=r"4: strided MaxPool2d"):
        converted = convert_to_sre(dense)
    assert isinstance(converted[0], nn.Sequential)
    assert isinstance(converted[0][0], SREConv) and isinstance(converted[0][1], SymmetricDownsample)
    assert converted[0][0].stride == (1, 1) and converted[0][0].padding == (0, 0)
    assert isinstance(converted[1], SREConv) and converted[1].padding == (1, 1)
    assert isinstance(converted[2][0], SymmetricDownsample) and converted[2][1].stride == (1, 1)
    torch.testing.assert_close(converted[2][1].weight, dense[2].weight)
    assert type(converted[3]) is nn.Conv2d
    assert isinstance(converted[4], nn.MaxPool2d)  # left in place without replace_pooling
    assert isinstance(convert_to_sre(dense, replace_pooling=True)[4], SymmetricDownsample)
    for n in (17, 18, 28, 29):
        x = torch.randn(1, 1, n, n)
        with torch.no_grad():
            assert converted[:4](x).shape == dense[:4](x).shape
    # The original is untouched.
    assert all(type(m) in (nn.Conv2d, nn.MaxPool2d) for m in dense)


def test_kernel_size_override_keeps_output_size():
    dense = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=0, dilation=2))
    converted = convert_to_sre(dense, kernel_size=7, num_rings=3)
    assert [converted[0].kernel_size, converted[1].kernel_size] == [(7, 7), (7, 7)]
    assert [converted[0].padding, converted[1].padding] == [(3, 3), (4, 4)]
    assert converted[0].weight.shape == (2, 1, 3)
    x = torch.randn(1, 1, 15, 15)
    with torch.no_grad():
        assert converted(x).shape == dense(x).shape


def test_shared_layers_stay_shared():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    converted = convert_to_sre(nn.Sequential(conv, nn.ReLU(), conv))
    assert converted[0] is converted[2] and isinstance(converted[0], SREConv)


def test_a_single_conv_converts():
    conv = nn.Conv3d(2, 3, 5, padding=2, bias=True).double()
    sre = convert_to_sre(conv)
    assert isinstance(sre, SREConv) and sre.weight.dtype == torch.float64
    torch.testing.assert_close(sre.bias, conv.bias)


@pytest.mark.parametrize(
    "model, kwargs, error, match",
    [
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 4)),
            {},
            ValueError,
            r"layer '1' \(Conv2d\) has an even kernel_size \(4, 4\)",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 5)),
            {"kernel_size": 3},
            ValueError,
            r"layer '0' has padding \(0, 0\) .* negative padding",
        ),
        (nn.Sequential(nn.Conv2d(1, 2, 3)), {"kernel_size": 4}, ValueError, r"kernel_size must be odd"),
        ("resnet18", {}, TypeError, r"model must be a torch.nn.Module, got str"),
    ],
)
def test_bad_input_is_named(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        convert_to_sre(model, **kwargs)


def test_symmetry_breakers_are_listed():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ZeroPad2d((0, 1, 0, 1)),
        nn.AdaptiveAvgPool2d(7),
        nn.AvgPool2d(2),
        nn.ConvTranspose2d(2, 2, 3),
        nn.AdaptiveAvgPool2d(1),
    )
    reasons = dict(find_symmetry_breakers(model))
    assert sorted(reasons) == ["0", "1", "2", "3", "4"]
    assert "dense (3, 3) kernel" in reasons["0"]
    assert "not the same on every side" in reasons["1"]
    assert "adaptive pooling to 7" in reasons["2"]
    assert "strided AvgPool2d" in reasons["3"]
    assert "transposed" in reasons["4"]
    assert find_symmetry_breakers(nn.Sequential(SREConv(3, 1, 1, (3, 5, 5))))[0][1].startswith("anisotropic")


def test_monai_resnet18_breakers_before_and_after():
    dense = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125)
    before = dict(find_symmetry_breakers(dense))
    assert "conv1" in before and "maxpool" in before and "layer2.0.downsample.0" in before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = convert_to_sre(dense, replace_pooling=True)
    assert find_symmetry_breakers(converted) == []


@pytest.mark.parametrize(
    "factory, pools",
    [
        (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=2),
         {"features.pool0", "features.transition1.pool", "features.transition2.pool", "features.transition3.pool"}),
        (lambda: SEResNet50(spatial_dims=2, in_channels=1, num_classes=2), {"layer0.pool"}),
    ],
    ids=["DenseNet121", "SEResNet50"],
)
def test_monai_densenet_and_seresnet_convert_and_become_invariant(factory, pools):
    torch.manual_seed(0)
    dense = factory()
    strided_pools = {name for name, reason in find_symmetry_breakers(dense) if "strided" in reason and "Pool" in reason}
    assert strided_pools == pools
    converted = convert_to_sre(dense, replace_pooling=True)
    assert find_symmetry_breakers(converted) == []
    assert not any(isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in converted.modules())
    # 21 -> 11 -> 6 -> 3 -> 2 -> 1: odd and even sizes at the successive downsamplings.
    assert _invariance_error(converted, torch.randn(1, 1, 21, 21)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory",
    [
        lambda: DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
        lambda: SEResNet50(spatial_dims=3, in_channels=1, num_classes=2),
    ],
    ids=["DenseNet121", "SEResNet50"],
)
def test_monai_3d_densenet_and_seresnet_become_invariant(factory):
    torch.manual_seed(0)
    converted = convert_to_sre(factory(), replace_pooling=True)
    assert _invariance_error(converted, torch.randn(1, 1, 28, 28, 28)) < 1e-5


def test_pool_feeding_an_unpool_is_left_in_place():
    model = nn.Sequential(nn.MaxPool2d(2, return_indices=True))
    with pytest.warns(UserWarning, match=r"0: strided MaxPool2d"):
        converted = convert_to_sre(model, replace_pooling=True)
    assert isinstance(converted[0], nn.MaxPool2d)


def _radial_dense(out_channels: int, in_channels: int, k: int, dims: int = 2) -> torch.Tensor:
    """A dense kernel that is already radially symmetric: constant on every band, zero outside the circle."""
    index = ring_index(k, dims)
    bands = torch.randn(out_channels, in_channels, int(index.max()) + 2)
    return torch.nn.functional.pad(bands[..., :-1], (0, 1))[..., torch.where(index == OUTSIDE, bands.shape[-1] - 1,
                                                                              index)]


def test_stride_1_transposed_convolution_becomes_sre_conv_transpose():
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(3, 4, 5, padding=2)
    with torch.no_grad():
        deconv.weight.copy_(_radial_dense(3, 4, 5))
    converted = convert_to_sre(nn.Sequential(deconv))
    assert isinstance(converted[0], SREConvTranspose) and converted[0].padding == (2, 2)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), deconv(x), rtol=1e-5, atol=1e-5)  # a radial kernel is kept exactly
    assert find_symmetry_breakers(converted) == []


def test_kernel_equal_to_stride_becomes_nearest_upsampling_and_the_tap_mean():
    torch.manual_seed(0)
    deconv = nn.ConvTranspose3d(3, 4, 2, stride=2)  # BasicUNet's deconv
    converted = convert_to_sre(deconv)
    assert isinstance(converted[0], nn.Upsample) and converted[0].mode == "nearest"
    assert isinstance(converted[1], nn.Conv3d) and converted[1].kernel_size == (1, 1, 1)
    torch.testing.assert_close(converted[1].weight[..., 0, 0, 0], deconv.weight.mean((2, 3, 4)).T)
    with torch.no_grad():
        deconv.weight.copy_(deconv.weight.mean((2, 3, 4), keepdim=True).expand_as(deconv.weight))
        converted = convert_to_sre(deconv)
        x = torch.randn(1, 3, 4, 5, 6)
        torch.testing.assert_close(converted(x), deconv(x))  # all 8 taps equal: exactly the same layer


def test_strided_odd_transposed_convolution_becomes_upsampling_and_sre_conv():
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, groups=1)  # MONAI UNet's up-conv
    converted = convert_to_sre(deconv)
    assert isinstance(converted[0], nn.Upsample) and isinstance(converted[1], SREConv)
    x = torch.ones(1, 2, 6, 6)
    with torch.no_grad():
        y, z = deconv(x), converted(x)
    assert y.shape == z.shape == (1, 3, 12, 12)
    # the gain is kept: on a constant input the interiors have the same mean per channel
    torch.testing.assert_close(z[..., 2:-2, 2:-2].mean((2, 3)), y[..., 2:-2, 2:-2].mean((2, 3)), rtol=1e-4, atol=1e-5)
    assert find_symmetry_breakers(converted) == []


def test_monai_upsample_deconv_mode_converts():
    from monai.networks.blocks import UpSample

    up = UpSample(2, 4, 2, scale_factor=2, mode="deconv")
    converted = convert_to_sre(up)
    assert find_symmetry_breakers(converted) == []
    assert torch.equal(torch.tensor(converted(torch.randn(1, 4, 5, 5)).shape), torch.tensor([1, 2, 10, 10]))


def test_transposed_convolution_without_symmetric_form_is_reported():
    model = nn.Sequential(nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1), nn.PixelShuffle(2))
    with pytest.warns(UserWarning, match=r"0: dense transposed convolution \(kernel \(4, 4\), stride \(2, 2\).*"
                      r"1: PixelShuffle assigns channels"):
        converted = convert_to_sre(model)
    assert isinstance(converted[0], nn.ConvTranspose2d)


class _SamePadded(nn.Module):
    """MONAI EfficientNet's pattern: a convolution ``conv`` fed by its TensorFlow-style padder ``conv_padding``."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=stride, bias=False)
        self.conv_padding = nn.ConstantPad2d((0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1), 0.0)
        self.other_padding = nn.ZeroPad2d((0, 1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_padding(x))


@pytest.mark.parametrize("stride", [1, 2])
def test_uneven_same_padding_becomes_symmetric(stride):
    torch.manual_seed(0)
    model = _SamePadded(stride)
    with pytest.warns(UserWarning, match=r"other_padding: padding \(0, 1, 0, 0\) is not the same") as record:
        converted = convert_to_sre(model)
    assert len(record) == 1 and "conv_padding" not in str(record[0].message)  # fixed, the stray padder reported
    assert isinstance(converted.conv_padding, nn.Identity)
    sre = converted.conv if stride == 1 else converted.conv[0]
    assert isinstance(sre, SREConv) and sre.padding == (1, 1)
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        assert converted(x).shape == model(x).shape == (1, 3, 8 // stride, 8 // stride)
        if stride == 1:  # symmetric "same" padding moved into the convolution: the same function
            reference = convert_to_sre(nn.Sequential(model.conv_padding, model.conv))
            torch.testing.assert_close(converted(x), reference(x))
