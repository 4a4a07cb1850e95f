# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Inference folding of BatchNorm into SREConv: same numbers and gradients as the unfolded pair, and only where safe."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from monai_sre import SREConv
from monai_sre.layers import batch_norm_affine, conv_norm, sequential_conv_norm
from monai_sre.networks import sre_resnet18, sre_resnet50

_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _randomized(norm: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in norm.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.3)
                if m.affine:
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return norm


def _pair(dims: int, bias: bool, affine: bool, path: str = "decomposed") -> tuple[SREConv, nn.Module]:
    conv = SREConv(dims, 4, 6, 5, bias=bias, path=path).double()
    norm = _randomized(_NORMS[dims](6, affine=affine).double()).eval()
    return conv, norm


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bias,affine", [(False, True), (True, True), (True, False)])
def test_folded_equals_unfolded_in_value_and_gradient(dims, bias, affine):
    torch.manual_seed(dims)
    conv, norm = _pair(dims, bias, affine)
    x = torch.randn(2, 4, *([7] * dims), dtype=torch.float64, requires_grad=True)
    params = [x, *conv.parameters(), *norm.parameters()]
    expected = norm(conv(x))
    folded = conv_norm(conv, norm, x)
    torch.testing.assert_close(folded, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(expected, params, g), torch.autograd.grad(folded, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(conv_norm(conv, norm, x), expected, rtol=1e-12, atol=1e-12)


def test_dense_path_gives_the_same_result_through_forward_affine():
    conv, norm = _pair(2, True, True, path="dense")
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    scale, shift = batch_norm_affine(norm)
    torch.testing.assert_close(conv.forward_affine(x, scale, shift), norm(conv(x)), rtol=1e-12, atol=1e-12)


def test_batch_norm_affine_only_for_inference_batch_norms():
    bn = _randomized(nn.BatchNorm2d(3)).eval()
    scale, shift = batch_norm_affine(bn)
    y = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(y * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1), bn(y))
    assert batch_norm_affine(nn.BatchNorm2d(3).train()) is None
    assert batch_norm_affine(nn.BatchNorm2d(3, track_running_stats=False).eval()) is None
    assert batch_norm_affine(nn.InstanceNorm2d(3).eval()) is None
    assert batch_norm_affine(nn.Identity()) is None


def test_training_mode_is_not_folded_and_updates_running_statistics(monkeypatch):
    conv, norm = _pair(2, False, True)
    norm.train()
    calls = []
    monkeypatch.setattr(SREConv, "forward_affine", lambda *a, **k: calls.append(a))
    before = norm.running_mean.clone()
    conv_norm(conv, norm, torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert not calls
    assert not torch.equal(norm.running_mean, before)


def test_hooks_disable_folding():
    conv, norm = _pair(2, False, True)
    seen = []
    norm.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)))
    assert len(seen) == 2  # the hook saw the folded call too: it ran unfolded


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_dense_convolutions_fold_with_the_same_values_and_gradients(monkeypatch, dims, bias):
    torch.manual_seed(dims)
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](4, 6, 3, stride=2, padding=1, bias=bias).double()
    norm = _randomized(_NORMS[dims](6).double()).eval()
    x = torch.randn(2, 4, *([7] * dims), dtype=torch.float64, requires_grad=True)
    params = [x, *conv.parameters(), *norm.parameters()]
    expected = norm(conv(x))
    monkeypatch.setattr(_NORMS[dims], "forward", lambda *a: pytest.fail("the norm ran: not folded"))
    folded = conv_norm(conv, norm, x)
    torch.testing.assert_close(folded, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(expected, params, g), torch.autograd.grad(folded, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class _Doubled(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


@pytest.mark.parametrize("conv", [nn.ConvTranspose2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1,
                                  padding_mode="reflect"), _Doubled(4, 6, 3, padding=1)])
def test_other_modules_are_applied_unchanged(conv):
    conv = conv.double()
    norm = _randomized(nn.BatchNorm2d(6).double()).eval()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)), rtol=0, atol=0)


def test_sequential_conv_norm_folds_a_projection_shortcut_and_calls_anything_else():
    shortcut = nn.Sequential(nn.Conv2d(4, 6, 1, bias=False), _randomized(nn.BatchNorm2d(6))).double().eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    seen = []
    shortcut[1].register_forward_pre_hook(lambda *a: seen.append(1))
    torch.testing.assert_close(sequential_conv_norm(shortcut, x), shortcut(x), rtol=1e-12, atol=1e-12)
    assert len(seen) == 2  # a hook on the norm: run unfolded, so the hook sees both calls
    plain = nn.Sequential(nn.Conv2d(4, 6, 1), _randomized(nn.BatchNorm2d(6))).double().eval()
    norm_runs = []
    monkey = plain[1].forward
    plain[1].forward = lambda y: norm_runs.append(1) or monkey(y)  # an instance attribute, not a hook
    torch.testing.assert_close(sequential_conv_norm(plain, x), nn.Sequential(plain[0], nn.Identity())(x) *
                               batch_norm_affine(plain[1])[0].view(1, 6, 1, 1) +
                               batch_norm_affine(plain[1])[1].view(1, 6, 1, 1), rtol=1e-12, atol=1e-12)
    assert not norm_runs  # folded: the norm's own forward never ran
    three = nn.Sequential(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6), nn.ReLU()).double().eval()
    torch.testing.assert_close(sequential_conv_norm(three, x), three(x), rtol=0, atol=0)
    identity = nn.Identity()
    assert sequential_conv_norm(identity, x) is x


@pytest.mark.parametrize("builder,dims", [(sre_resnet18, 2), (sre_resnet18, 3), (sre_resnet50, 2)])
def test_networks_fold_in_eval_with_the_same_outputs_and_gradients(monkeypatch, builder, dims):
    torch.manual_seed(2)
    net = _randomized(builder(spatial_dims=dims, n_input_channels=1, num_classes=3, widen_factor=0.25)).double()
    net.eval()
    x = torch.randn(2, 1, *([12] * dims), dtype=torch.float64, requires_grad=True)
    folds = []
    forward_affine = SREConv.forward_affine
    monkeypatch.setattr(SREConv, "forward_affine", lambda *a, **k: folds.append(1) or forward_affine(*a, **k))
    folded = net(x)
    assert len(folds) >= 4  # the wide SRE layers take the decomposed path and fold their norms
    (gx_folded,) = torch.autograd.grad(folded.sum(), x)  # eval with gradients (saliency): in-place residual add
    calls = []
    unfolded_net = copy.deepcopy(net)
    for m in unfolded_net.modules():  # a hook on every norm turns folding off
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            m.register_forward_hook(lambda *a: calls.append(1))
    unfolded = unfolded_net(x)
    (gx,) = torch.autograd.grad(unfolded.sum(), x)
    assert calls
    torch.testing.assert_close(folded, unfolded, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx_folded, gx, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("path", ["decomposed", "dense"])
@pytest.mark.parametrize("act", [None, nn.ReLU(inplace=True), nn.LeakyReLU(0.1)])
def test_residual_and_activation_are_applied_after_the_norm(path, act):
    torch.manual_seed(5)
    conv, norm = _pair(2, True, True, path=path)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True)
    expected = norm(conv(x)) + residual
    expected = act(expected) if act is not None else expected
    got = conv_norm(conv, norm, x, residual=residual, act=act)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(expected, [x, residual], g), torch.autograd.grad(got, [x, residual], g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if isinstance(act, nn.LeakyReLU):
        assert (got < 0).any()  # the activation itself ran, not a ReLU in its place


def test_a_hook_on_the_activation_sees_its_call():
    conv, norm = _pair(2, False, True)
    seen = []
    act = nn.ReLU()
    act.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(conv_norm(conv, norm, x, act=act), torch.relu(norm(conv(x))))
    assert seen == [torch.Size([2, 6, 8, 8])]
