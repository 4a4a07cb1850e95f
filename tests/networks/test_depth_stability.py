# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fresh SRE-ResNets of every depth stay finite and bounded in train and eval mode, in 1D, 2D and 3D.

Before the norms accounted for the zero-frequency gain of SRE kernels, untrained deep networks reached 1e28 and NaN
in eval mode (SRE-ResNet-200, 3D, MONAI's test input). Narrow widths keep the suite fast: the gains per layer do not
depend on the width.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_sre.layers import SREConv
from monai_sre.networks import sre_resnet, sre_resnet200
from monai_sre.networks.sre_resnet import SRE_RESNET_PARAMS, smooth_input_gain

STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")
SIZES = {1: 32, 2: 16, 3: 8}
FAST = {(d, 1) for d in SRE_RESNET_PARAMS} | {(10, 2), (200, 2), (50, 3)}


def _cases():
    return [
        (depth, dims) if (depth, dims) in FAST else pytest.param(depth, dims, marks=pytest.mark.slow)
        for depth in SRE_RESNET_PARAMS for dims in (1, 2, 3)
    ]


def _stage_rms(net: nn.Module, x: torch.Tensor) -> dict[str, float]:
    rms: dict[str, float] = {}
    hooks = [
        getattr(net, name).register_forward_hook(
            lambda _m, _i, out, name=name: rms.__setitem__(name, float(out.pow(2).mean().sqrt()))
        )
        for name in STAGES
    ]
    with torch.no_grad():
        rms["logits"] = float(net(x).abs().max())
    for hook in hooks:
        hook.remove()
    return rms


@pytest.mark.parametrize("depth, spatial_dims", _cases())
def test_fresh_networks_stay_bounded_in_train_and_eval_mode(depth, spatial_dims):
    torch.manual_seed(depth)
    kwargs = {"spatial_dims": spatial_dims, "n_input_channels": 1, "num_classes": 3, "widen_factor": 0.125}
    x = torch.randn((2, 1) + (SIZES[spatial_dims],) * spatial_dims)
    zero_init = getattr(sre_resnet, f"sre_resnet{depth}")(zero_init_residual=True, **kwargs)
    default = getattr(sre_resnet, f"sre_resnet{depth}")(**kwargs)
    for train in (False, True):
        # zero_init_residual: every block starts as its shortcut, so activations are O(1) at every depth
        rms = _stage_rms(zero_init.train(train), x)
        assert all(1e-3 < v < 10 for v in rms.values()), (train, rms)
        # default (MONAI's) initialisation: O(1) up to 50 layers; in eval mode the deeper networks grow with the
        # number of blocks (about 1.4x each, 66 blocks in SRE-ResNet-200), as MONAI's ResNet does
        rms = _stage_rms(default.train(train), x)
        bound = 1e12 if depth > 50 and not train else 100
        assert all(v < bound for v in rms.values()), (train, rms)


def test_norm_running_variance_starts_at_the_smooth_input_gain():
    net = sre_resnet.sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125)
    block = net.layer2[0]
    # 9x9 kernels: sum n_b^2 / sum n_b = 1489 / 69 = 21.6 for random band weights
    gain = smooth_input_gain(block.conv1)
    assert 12 < gain < 35
    assert torch.equal(block.bn1.running_var, torch.full_like(block.bn1.running_var, gain))
    assert torch.equal(net.bn1.running_var, torch.full_like(net.bn1.running_var, smooth_input_gain(net.conv1)))
    shortcut_norm = block.downsample[1]  # after a dense 1x1 convolution: MONAI's 1
    assert torch.equal(shortcut_norm.running_var, torch.ones_like(shortcut_norm.running_var))
    assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))


def test_smooth_input_gain_measures_the_kernel():
    conv = SREConv(2, 4, 4, 5, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[..., 0] = 1.0  # centre tap only: a constant and white noise pass alike
    assert smooth_input_gain(conv) == pytest.approx(1.0)
    with torch.no_grad():
        conv.weight.fill_(1.0)  # 21 equal taps: (21)^2 / 21
    assert smooth_input_gain(conv) == pytest.approx(21.0)
    state = torch.get_rng_state()
    smooth_input_gain(conv)
    assert torch.equal(torch.get_rng_state(), state)  # the measurement draws nothing from the caller's stream


def test_zero_init_residual_zeroes_the_last_norm_of_every_branch():
    net = sre_resnet.sre_resnet50(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125,
                                  zero_init_residual=True)
    blocks = [b for i in range(1, 5) for b in getattr(net, f"layer{i}")]
    assert all(not b.bn3.weight.any() and b.bn2.weight.eq(1).all() for b in blocks)
    assert net.bn1.weight.eq(1).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_mean_init_removes_every_kernels_mean_and_keeps_its_norm(spatial_dims):
    torch.manual_seed(5)
    he = sre_resnet.sre_resnet18(spatial_dims=spatial_dims, n_input_channels=1, num_classes=2, widen_factor=0.125)
    torch.manual_seed(5)
    free = sre_resnet.sre_resnet18(spatial_dims=spatial_dims, n_input_channels=1, num_classes=2, widen_factor=0.125,
                                   zero_mean_init=True)
    pairs = [(a, b) for a, b in zip(he.modules(), free.modules()) if isinstance(a, SREConv)]
    assert len(pairs) == 17
    axes = tuple(range(2, 2 + spatial_dims))
    for a, b in pairs:
        k_he, k_free = a.dense_kernel(), b.dense_kernel()
        scale = k_he.abs().amax(axes)
        assert (k_he.mean(axes).abs() > 1e-3 * scale).any()  # He's kernels have a mean ...
        assert (k_free.mean(axes).abs() <= 1e-5 * scale).all()  # ... these have none,
        torch.testing.assert_close(k_free.square().sum(axes), k_he.square().sum(axes))  # at the same norm
        # the norms' running variances keep the drawn kernels' gain (an untrained network in eval mode stays bounded)
    assert all(torch.equal(x, y) for (n, x), y in zip(he.state_dict().items(), free.state_dict().values())
               if "running_var" in n)


def test_center_band_weight_keeps_a_share_of_the_mean_under_any_band_scale():
    torch.manual_seed(6)
    conv = SREConv(2, 3, 4, 7, band_scale="rsqrt_taps")
    n = torch.tensor(conv.band_sizes, dtype=torch.float64)
    w = conv.band_weight().detach().double()  # (out, in, bands)
    mean = (w * n).sum(-1, keepdim=True) / n.sum()  # each kernel's mean over its taps
    shifted = w - 0.75 * mean
    want = shifted * ((w.square() * n).sum(-1, keepdim=True) / (shifted.square() * n).sum(-1, keepdim=True)).sqrt()
    conv.center_band_weight_(0.25)
    got = conv.band_weight().detach().double()  # the band weights moved, not the stored (scaled) ones
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    kernel = conv.dense_kernel().detach()  # the dense kernel keeps its norm over the taps
    torch.testing.assert_close(kernel.square().sum((2, 3)), (w.square() * n).sum(-1).float())
    single = SREConv(2, 3, 4, 3, num_rings=1)
    before = single.weight.detach().clone()
    single.center_band_weight_(0.0)  # one band: its mean is its only weight, left alone
    assert torch.equal(single.weight, before)


@pytest.mark.slow
def test_sre_resnet200_3d_monai_case_is_finite_and_bounded_in_eval_mode():
    # MONAI's case 1 (returned NaN for 3 of 3 seeds, activations 3.8e20 after layer2)
    for seed in range(2):
        torch.manual_seed(seed)
        net = sre_resnet200(spatial_dims=3, n_input_channels=2, num_classes=3, conv1_t_size=7,
                            conv1_t_stride=(2, 2, 2)).eval()
        with torch.no_grad():
            out = net(torch.randn(3, 2, 32, 64, 48))
        assert torch.isfinite(out).all() and out.abs().max() < 1e7
