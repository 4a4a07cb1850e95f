# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Execution paths of SREConv: the ring-decomposed path must equal the dense one in outputs and gradients."""

from __future__ import annotations

import copy
import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from monai_sre import SREConv, SREConv2d
from monai_sre.layers.rings import ring_index, ring_sizes
from monai_sre.networks import sre_resnet10, sre_resnet18, sre_resnet50
from monai_sre.transforms import full_grid_group

_MODES = ("zeros", "reflect", "replicate", "circular")
_KERNELS = {1: (3, 5, 7, 9, 11), 2: (3, 5, 7, 9, 11), 3: (3, 5, 7)}
# Every (stride, dilation, groups, padding mode, input-size parity); each (dims, k) takes 4 of them in turn, so every
# level of every factor meets every dimensionality.
_OPTIONS = list(itertools.product((1, 2, 3), (1, 2), (1, 3), _MODES, ("odd", "even")))


def _matrix() -> list[tuple]:
    cases, turn = [], 0
    for dims, kernels in _KERNELS.items():
        for k in kernels:
            for _ in range(4):
                cases.append((dims, k) + _OPTIONS[turn % len(_OPTIONS)])
                turn += 7  # coprime with len(_OPTIONS): walks through all combinations
    return cases


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-300)
    return (a - b).abs().max().item() / scale


def _both_paths(dims: int, in_ch: int, out_ch: int, k, **kwargs) -> tuple[SREConv, SREConv]:
    dense = SREConv(dims, in_ch, out_ch, k, path="dense", **kwargs).double()
    decomposed = copy.deepcopy(dense)
    decomposed.path = "decomposed"
    return dense, decomposed


def _assert_same_outputs_and_gradients(dense: nn.Module, decomposed: nn.Module, x: torch.Tensor) -> None:
    x = x.detach().requires_grad_()
    y1, y2 = dense(x), decomposed(x)
    assert y1.shape == y2.shape
    assert _relative_error(y1, y2) < 1e-10
    g = torch.randn_like(y1)
    params1 = [p for p in dense.parameters()]
    params2 = [p for p in decomposed.parameters()]
    grads1 = torch.autograd.grad(y1, [x] + params1, g)
    grads2 = torch.autograd.grad(y2, [x] + params2, g)
    for a, b in zip(grads1, grads2):
        assert a.shape == b.shape
        assert _relative_error(a, b) < 1e-10


@pytest.mark.parametrize("dims,k,stride,dilation,groups,padding_mode,parity", _matrix())
def test_decomposed_equals_dense_matrix(dims, k, stride, dilation, groups, padding_mode, parity):
    torch.manual_seed(k * 31 + dims)
    dense, decomposed = _both_paths(
        dims, 3, 6, k, stride=stride, dilation=dilation, groups=groups, padding_mode=padding_mode,
        bias=(k + stride) % 2 == 0,
    )
    size = (k - 1) * dilation + 3 + (parity == "even") - (k - 1) * dilation % 2
    assert size % 2 == (parity == "odd")
    x = torch.randn(2, 3, *([size] * dims), dtype=torch.float64)
    _assert_same_outputs_and_gradients(dense, decomposed, x)


@pytest.mark.parametrize(
    "dims,k,padding,stride,dilation",
    [
        (2, 9, 0, 1, 1),  # 'valid': every band but the outer one crops the input
        (2, 7, 1, 2, 1),  # less padding than the radius, strided
        (2, 5, 4, 1, 1),  # more padding than the radius
        (2, 5, 3, 3, 2),  # more padding than the radius, strided and dilated
        (3, 5, 0, 2, 1),
        (1, 11, 7, 2, 1),
    ],
)
def test_decomposed_equals_dense_for_unusual_padding(dims, k, padding, stride, dilation):
    torch.manual_seed(3)
    dense, decomposed = _both_paths(dims, 4, 4, k, padding=padding, stride=stride, dilation=dilation)
    x = torch.randn(2, 4, *([13] * dims), dtype=torch.float64)
    _assert_same_outputs_and_gradients(dense, decomposed, x)


@pytest.mark.parametrize(
    "dims,k,num_rings",
    [(3, (3, 7, 7), None), (2, (3, 5), None), (2, 9, 7), (2, 9, 2), (3, 5, 1), (1, 9, 8)],
)
def test_decomposed_equals_dense_for_anisotropic_kernels_and_custom_bands(dims, k, num_rings):
    torch.manual_seed(4)
    dense, decomposed = _both_paths(dims, 3, 5, k, num_rings=num_rings)
    x = torch.randn(2, 3, *([10] * dims), dtype=torch.float64)
    _assert_same_outputs_and_gradients(dense, decomposed, x)


def test_empty_bands_get_zero_gradient():
    # 8 equal-width bands over the 5 distinct radii of a 9-tap 1D kernel leave some bands without taps.
    _, decomposed = _both_paths(1, 2, 3, 9, num_rings=8)
    empty = ring_sizes(ring_index(9, 1, 8), 8) == 0
    assert empty.any()
    y = decomposed(torch.randn(1, 2, 12, dtype=torch.float64))
    y.square().sum().backward()
    assert torch.all(decomposed.weight.grad[:, :, empty] == 0)
    assert torch.all(decomposed.weight.grad[:, :, ~empty].abs().sum((0, 1)) > 0)


def test_backward_saves_only_input_and_weight():
    # The band sums are recomputed from the output gradient, so the graph holds nothing but the input and the weight.
    conv = SREConv2d(8, 16, 9, padding=4, bias=True, path="decomposed")
    x = torch.randn(4, 8, 12, 12).contiguous(memory_format=torch.channels_last).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = conv(x)
    assert sum(t.numel() for t in saved) == x.numel() + conv.weight.numel()
    assert any(t.data_ptr() == x.data_ptr() for t in saved)  # the input itself, not a copy
    y.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and conv.bias.grad is not None


def test_input_without_grad_gives_only_parameter_gradients():
    torch.manual_seed(6)
    dense, decomposed = _both_paths(2, 3, 8, 5)
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    for m in (dense, decomposed):
        m(x).square().sum().backward()
    assert _relative_error(dense.weight.grad, decomposed.weight.grad) < 1e-10
    assert _relative_error(dense.bias.grad, decomposed.bias.grad) < 1e-10


def test_inference_and_memory_formats_give_the_same_result():
    torch.manual_seed(7)
    dense, decomposed = _both_paths(2, 4, 4, 7)
    x = torch.randn(3, 4, 10, 10, dtype=torch.float64)
    reference = dense(x)
    with torch.no_grad():
        assert _relative_error(decomposed(x), reference) < 1e-10
        assert _relative_error(decomposed(x.contiguous(memory_format=torch.channels_last)), reference) < 1e-10
        assert _relative_error(decomposed(x.transpose(2, 3)).transpose(2, 3), dense(x.transpose(2, 3)).transpose(
            2, 3)) < 1e-10


def test_decomposed_path_is_equivariant_in_training_mode_with_gradients():
    # The gradient of an invariant loss is itself equivariant: check it on the input gradient of the fast backward.
    torch.manual_seed(8)
    conv = SREConv2d(3, 4, 9, padding=4, path="decomposed").double()
    x = torch.randn(1, 3, 13, 13, dtype=torch.float64)
    for g in full_grid_group(2):
        a = x.clone().requires_grad_()
        b = g(x).requires_grad_()
        conv(a).square().sum().backward()
        conv(b).square().sum().backward()
        assert _relative_error(g(a.grad), b.grad) < 1e-10


def test_torchscript_runs_the_decomposed_path():
    conv = SREConv(3, 2, 4, 5, path="decomposed").eval()
    x = torch.randn(2, 2, 7, 7, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(conv)
    dense = copy.deepcopy(conv)
    dense.path = "dense"
    with torch.no_grad():
        assert _relative_error(scripted(x), dense(x)) < 1e-5
    scripted(x.requires_grad_()).sum().backward()  # the portable form is differentiable too
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_onnx_export_of_the_decomposed_path(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    conv = SREConv2d(4, 8, 9, padding=4, path="decomposed").eval()
    x = torch.randn(2, 4, 12, 12)
    path = tmp_path / "decomposed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(conv, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, conv(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_of_the_decomposed_path():
    torch.manual_seed(9)
    conv = SREConv2d(8, 8, 9, padding=4, path="decomposed")
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    y = conv(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    compiled = torch.compile(conv)
    y2 = compiled(x)
    (gx2,) = torch.autograd.grad(y2.square().sum(), x)
    assert _relative_error(y, y2) < 1e-5 and _relative_error(gx, gx2) < 1e-5


# ------------------------------------------------------------------------------------------------- auto choice
# (the cost model itself: tests/layers/test_ring_ops.py)
def test_automatic_path_is_dense_off_cpu():
    # The cost model is calibrated on CPUs; on accelerators (cuDNN, tensor cores) the dense kernel is faster.
    conv = SREConv2d(64, 64, 9, padding=4)
    assert conv.use_decomposed()
    assert not conv.to("meta").use_decomposed()
    assert conv.to("meta").to_empty(device="cpu").use_decomposed()
    forced = SREConv2d(64, 64, 9, padding=4, path="decomposed", device="meta")
    assert forced.use_decomposed()


def test_automatic_path_follows_grad_mode():
    conv = SREConv2d(1, 64, 11, padding=5)
    assert conv.use_decomposed() is False  # training: dense
    with torch.no_grad():
        assert conv.use_decomposed() is True  # inference: decomposed
    x = torch.randn(2, 1, 12, 12)
    dense = copy.deepcopy(conv)
    dense.path = "dense"
    with torch.no_grad():
        assert _relative_error(conv(x), dense(x)) < 1e-5


def _family() -> list[nn.Module]:
    nets = []
    for dims in (2, 3):
        nets.append(sre_resnet18(spatial_dims=dims, n_input_channels=3 if dims == 2 else 1, num_classes=3))
        nets.append(sre_resnet10(spatial_dims=dims, n_input_channels=1, num_classes=3, conv1_t_size=7,
                                 kernel_size=3))
        nets.append(sre_resnet50(spatial_dims=dims, n_input_channels=1, num_classes=3, widen_factor=0.25))
    return nets


def test_auto_choice_is_valid_for_every_layer_of_the_sre_resnet_family():
    configs = {}
    for net in _family():
        for m in net.modules():
            if isinstance(m, SREConv):
                key = (m.spatial_dims, m.in_channels, m.out_channels, m.kernel_size, m.groups, m.num_rings)
                configs[key] = m
    assert len(configs) > 20
    chosen = {key: m.use_decomposed() for key, m in configs.items()}
    assert all(isinstance(v, bool) for v in chosen.values())
    # The layers that carry the cost (wide, large kernels) take the decomposed path.
    for (dims, cin, cout, k, _, _), decomposed in chosen.items():
        if cin >= 64 and max(k) >= 5:
            assert decomposed, (dims, cin, cout, k)
    # Whatever path the cost model takes computes the dense result at the layer's real channel counts.
    for key, m in configs.items():
        dense = copy.deepcopy(m)
        dense.path = "dense"
        x = torch.randn(1, m.in_channels, *([3] * m.spatial_dims))
        with torch.no_grad():
            assert _relative_error(m(x), dense(x)) < 1e-5, key


def _set_path(net: nn.Module, path: str) -> nn.Module:
    for m in net.modules():
        if isinstance(m, SREConv):
            m.path = path
    return net


def _randomize_norms(net: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return net


@pytest.mark.parametrize("path", ["dense", "decomposed"])
@pytest.mark.parametrize("dims,size", [(2, 28), (2, 65), (3, 28)])
def test_network_invariance_holds_on_both_paths(path, dims, size):
    torch.manual_seed(10)
    builder = sre_resnet18 if dims == 2 else sre_resnet10
    net = _set_path(_randomize_norms(builder(spatial_dims=dims, n_input_channels=1, num_classes=3,
                                             widen_factor=0.125)), path).eval()
    x = torch.randn(1, 1, *([size] * dims))
    with torch.no_grad():
        copies = torch.cat([g(x) for g in full_grid_group(dims)])
        y = net(copies)
    assert _relative_error(y, y[:1].expand_as(y)) < 1e-5


def test_network_gradients_agree_on_both_paths():
    torch.manual_seed(11)
    dense = sre_resnet10(spatial_dims=2, n_input_channels=2, num_classes=3, widen_factor=0.125).double()
    _set_path(dense, "dense")
    decomposed = _set_path(copy.deepcopy(dense), "decomposed")
    x = torch.randn(3, 2, 20, 20, dtype=torch.float64)
    for net in (dense, decomposed):
        net.train()
        net(x).logsumexp(1).sum().backward()
    # Relative to the largest gradient: biases followed by a BatchNorm have a zero gradient up to rounding.
    scale = max(p.grad.abs().max().item() for p in dense.parameters())
    for (name, a), b in zip(dense.named_parameters(), decomposed.parameters()):
        assert (a.grad - b.grad).abs().max().item() < 1e-10 * scale, name
