# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Band-weight parameterisation (issue 14, part 1): ``band_scale="rsqrt_taps"`` gives every tap a dense tap's SGD step
whatever its band's size, ``"none"`` a dense tap's Adam step; state-dict version 2 records the scale, files written
before it load unchanged, and checkpoints convert between the two."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_sre.layers import SREConv, SREConv2d, SREConvTranspose, band_scale, set_band_scale_, upgrade_state_dict
from monai_sre.layers.rings import ring_index, ring_sizes
from monai_sre.networks import sre_resnet18
from monai_sre.optim import band_scale_for


def _legacy_state(conv: nn.Module, seed: int = 0) -> OrderedDict:
    """A state dict as code before version 2 wrote it: ``weight`` holds the band weights, no ``band_scale``."""
    torch.manual_seed(seed)
    state = OrderedDict((k, torch.randn_like(v)) for k, v in conv.state_dict().items() if k != "band_scale")
    state._metadata = {"": {"version": 1}}  # what torch wrote for a module without _version
    return state


def _tap_steps(conv: SREConv, optimizer: type, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of ``conv`` on a regression loss: the change of every tap of its dense kernel, and the
    gradient of the same loss with respect to the dense kernel's taps (what a dense layer would step along)."""
    torch.manual_seed(1)
    x = torch.randn(3, conv.in_channels, 12, 12, dtype=torch.float64)
    target = torch.randn(3, conv.out_channels, 12, 12, dtype=torch.float64)
    kernel = conv.dense_kernel().detach().requires_grad_()
    F.mse_loss(F.conv2d(x, kernel, conv.bias, padding=conv.padding), target).backward()
    F.mse_loss(conv(x), target).backward()
    before = conv.dense_kernel().detach()
    optimizer(conv.parameters(), lr=lr).step()
    return conv.dense_kernel().detach() - before, kernel.grad


def test_band_scale_values_and_buffer():
    sizes = ring_sizes(ring_index(9, 2), 5)
    torch.testing.assert_close(band_scale(sizes), sizes.double().rsqrt())
    assert torch.equal(band_scale(sizes, "none"), torch.ones(5, dtype=torch.float64))
    assert torch.equal(band_scale(torch.tensor([4, 0, 9])), torch.tensor([0.5, 1.0, 1 / 3], dtype=torch.float64))
    conv = SREConv2d(2, 3, 9, band_scale="rsqrt_taps")
    assert conv.band_scale.dtype == conv.weight.dtype and conv.band_scale.shape == (5,)
    assert "band_scale" in conv.state_dict() and "band_scale" not in dict(conv.named_parameters())
    assert "band_scale='rsqrt_taps'" in repr(conv) and "band_scale" not in repr(SREConv2d(2, 3, 9))
    with pytest.raises(ValueError, match="band_scale must be one of .*'sqrt'"):
        SREConv(2, 2, 3, 5, band_scale="sqrt")


@pytest.mark.parametrize("path", ["dense", "decomposed"])
def test_sgd_moves_each_tap_by_lr_times_the_mean_tap_gradient(path):
    """The defining property of ``rsqrt_taps``: one SGD step changes every tap of band b by -lr * the mean of its
    taps' dense-kernel gradients, the step a dense tap takes, for every band size (1 to 32 taps)."""
    torch.manual_seed(0)
    conv = SREConv(2, 4, 6, 9, path=path, dtype=torch.float64, band_scale="rsqrt_taps")
    lr = 0.1
    step, grad = _tap_steps(conv, torch.optim.SGD, lr)
    index = ring_index(9, 2)
    for b in range(conv.num_rings):
        taps = index == b
        expected = -lr * grad[:, :, taps].mean(-1, keepdim=True).expand(-1, -1, int(taps.sum()))
        torch.testing.assert_close(step[:, :, taps], expected, rtol=1e-9, atol=1e-12)


def test_sgd_without_the_scale_moves_wide_bands_n_times_further():
    """Under ``"none"`` the same step is ``n_b`` times the mean tap gradient: the band-size dependence removed."""
    torch.manual_seed(0)
    conv = SREConv(2, 4, 6, 9, dtype=torch.float64)
    step, grad = _tap_steps(conv, torch.optim.SGD, 0.1)
    index = ring_index(9, 2)
    for b in range(conv.num_rings):
        taps = index == b
        torch.testing.assert_close(step[:, :, taps], -0.1 * grad[:, :, taps].sum(-1, keepdim=True).expand_as(
            step[:, :, taps]), rtol=1e-9, atol=1e-12)


def test_adam_first_step_is_lr_per_tap_without_the_scale():
    """Adam's first step is ``lr`` times the gradient's sign per parameter: ``"none"`` moves every tap of every
    band by ``lr`` (a dense tap's step), ``"rsqrt_taps"`` by ``lr / sqrt(n_b)``; hence band_scale_for."""
    index = ring_index(9, 2)
    sizes = ring_sizes(index, 5).double()
    for mode, expected in (("none", torch.ones(5, dtype=torch.float64)), ("rsqrt_taps", sizes.rsqrt())):
        torch.manual_seed(0)
        conv = SREConv(2, 4, 6, 9, dtype=torch.float64, band_scale=mode)
        step, _ = _tap_steps(conv, torch.optim.Adam, 1e-3)
        for b in range(5):
            torch.testing.assert_close(step[:, :, index == b].abs(), torch.full_like(step[:, :, index == b],
                                       1e-3 * float(expected[b])), rtol=1e-4, atol=0)
    assert band_scale_for("adam") == "none" and band_scale_for("sgd") == "rsqrt_taps"


def test_the_scale_changes_no_output_initialisation_or_invariance():
    torch.manual_seed(3)
    plain = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.25).eval()
    torch.manual_seed(3)
    scaled = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.25,
                          band_scale="rsqrt_taps").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), plain(x))  # same band weights drawn, same function
        torch.testing.assert_close(scaled(torch.rot90(x, 1, (2, 3))), scaled(x), rtol=1e-4, atol=1e-5)
    assert scaled.layer1[0].conv1.band_scale_mode == "rsqrt_taps"
    assert not torch.equal(scaled.layer1[0].conv1.weight, plain.layer1[0].conv1.weight)
    set_band_scale_(scaled, "none")  # and back: the stored weights become the band weights again
    torch.testing.assert_close(scaled.layer1[0].conv1.weight, plain.layer1[0].conv1.weight)


@pytest.mark.parametrize("cls", [SREConv, SREConvTranspose])
@pytest.mark.parametrize("mode", ["none", "rsqrt_taps"])
def test_state_dict_written_before_version_2_loads_with_the_same_band_weights(cls, mode):
    conv = cls(2, 4, 6, 7, band_scale=mode)
    legacy = _legacy_state(conv)
    conv.load_state_dict(legacy)
    torch.testing.assert_close(conv.band_weight(), legacy["weight"], rtol=1e-6, atol=0)
    torch.testing.assert_close(conv.band_scale, band_scale(ring_sizes(ring_index(7, 2), 4), mode).float())
    if cls is SREConv:  # the old meaning of the file: the expanded kernel is its weight, band by band
        x = torch.randn(2, 4, 10, 10)
        expected = F.conv2d(x, F.pad(legacy["weight"], (0, 1))[:, :, conv.ring_map], legacy["bias"], padding=3)
        with torch.no_grad():
            torch.testing.assert_close(conv.eval()(x), expected, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_without_metadata():
    """A current state dict whose ``_metadata`` was lost (prefix stripped by a dict comprehension) is not taken for a
    legacy one: ``band_scale`` in the file decides."""
    torch.manual_seed(1)
    net = nn.Sequential(SREConv(2, 2, 3, 5, band_scale="rsqrt_taps"), nn.ReLU(), SREConv(2, 3, 2, 9))
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    stripped = {k[len("module."):]: v for k, v in state.items()}
    other = nn.Sequential(SREConv(2, 2, 3, 5, band_scale="rsqrt_taps"), nn.ReLU(), SREConv(2, 3, 2, 9))
    other.load_state_dict(stripped)
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


def test_a_checkpoint_trained_under_one_scale_loads_into_the_other():
    """What the bundles rely on: an SGD run (``rsqrt_taps``) evaluated or served by a network built with ``none``."""
    torch.manual_seed(4)
    trained = SREConv2d(2, 3, 5, band_scale="rsqrt_taps")
    served = SREConv2d(2, 3, 5)
    served.load_state_dict(trained.state_dict())
    torch.testing.assert_close(served.band_weight(), trained.band_weight())
    assert torch.equal(served.band_scale, torch.ones(3)) and served.band_scale_mode == "none"
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(served(x), trained(x))


def test_version_2_file_without_band_scale_is_refused():
    conv = SREConv2d(2, 3, 5)
    state = conv.state_dict()
    del state["band_scale"]
    state._metadata = {"": {"version": 2}}
    with pytest.raises(RuntimeError, match="Missing key.*band_scale"):
        conv.load_state_dict(state)


def test_upgrade_state_dict_converter():
    def make() -> nn.Sequential:
        return nn.Sequential(SREConv(2, 2, 3, 5, band_scale="rsqrt_taps"), nn.BatchNorm2d(3),
                             SREConv(2, 3, 2, 9, bias=False, band_scale="rsqrt_taps")).eval()

    torch.manual_seed(2)
    net = make()
    legacy = OrderedDict((k, torch.rand_like(v) + 0.5 if v.is_floating_point() else v)
                         for k, v in net.state_dict().items() if not k.endswith("band_scale"))
    legacy._metadata = {"0": {"version": 1}, "1": {"version": 2}, "2": {"version": 1}}
    kept = {k: v.clone() for k, v in legacy.items()}
    upgraded = upgrade_state_dict(legacy, net)
    assert all(torch.equal(v, kept[k]) for k, v in legacy.items()) and set(legacy) == set(kept)  # input unchanged
    assert set(upgraded) == set(net.state_dict())
    assert upgraded._metadata["0"]["version"] == 2 and upgraded._metadata["1"] == {"version": 2}
    for i in (0, 2):
        torch.testing.assert_close(upgraded[f"{i}.weight"] * net[i].band_scale, legacy[f"{i}.weight"])
        assert not torch.allclose(upgraded[f"{i}.weight"], legacy[f"{i}.weight"])
    from_legacy, from_upgraded = make(), make()
    from_legacy.load_state_dict(legacy)
    from_upgraded.load_state_dict(upgraded)  # a file in the current format: nothing left to convert
    x = torch.randn(2, 2, 9, 9)
    with torch.no_grad():
        expected = F.conv2d(x, F.pad(legacy["0.weight"], (0, 1))[:, :, net[0].ring_map], legacy["0.bias"], padding=2)
        torch.testing.assert_close(from_legacy[0](x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(from_upgraded(x), from_legacy(x))
    assert upgrade_state_dict(upgraded, net)["2.weight"].equal(upgraded["2.weight"])  # idempotent
