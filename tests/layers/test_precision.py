# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Mixed precision (autocast), channels-last inputs and torch.compile on every CPU execution path of SREConv."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from monai_sre import SREConv
from monai_sre.layers import ring_cpp
from monai_sre.networks import sre_resnet10

_PATHS = ("dense", "decomposed")


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _outputs_and_grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor, dtype: torch.dtype | None):
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        y = module(x)
    (y.float() * g).sum().backward()
    return y, [x.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("path", _PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims,k", [(2, 9), (3, 5)])
def test_autocast_computes_in_half_precision_close_to_float32(path, dtype, dims, k):
    torch.manual_seed(dims * k)
    conv = SREConv(dims, 12, 20, k, path=path)
    x = torch.randn(3, 12, *([9] * dims))
    g = torch.randn(3, 20, *([9] * dims))
    reference, reference_grads = _outputs_and_grads(conv, x, g, None)
    y, grads = _outputs_and_grads(conv, x, g, dtype)
    # as torch.nn.Conv under autocast: the output in the autocast dtype, gradients in the parameters' and input's
    assert y.dtype == dtype and y.shape == reference.shape
    assert [t.dtype for t in grads] == [torch.float32] * len(grads)
    # 8 and 11 mantissa bits, sums over ~500 terms. bfloat16 on a CPU without native bfloat16 (AVX2 only) is
    # coarser: there oneDNN's bfloat16 convolution gives the dense path's input gradient 0.0219 (3D) and 0.0185 (2D)
    # off float32 in this norm (the decomposed path 0.0033 and 0.0065); below 0.02 on the AVX-512 hosts before
    tolerance = 3e-2 if dtype == torch.bfloat16 else 4e-3
    assert _relative_error(y, reference) < tolerance
    for a, b in zip(grads, reference_grads):
        assert _relative_error(a, b) < tolerance
    # not the float32 result by accident: the rounding of the half-precision inputs shows
    assert _relative_error(y, reference) > 1e-6


def test_autocast_inference_and_forward_affine_on_the_decomposed_path():
    torch.manual_seed(3)
    conv = SREConv(2, 16, 16, 9, path="decomposed").eval()
    x = torch.randn(2, 16, 11, 11)
    scale, shift = torch.rand(16) + 0.5, torch.randn(16)
    with torch.no_grad():
        reference = conv.forward_affine(x, scale, shift)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv.forward_affine(x, scale, shift)
            plain = conv(x)
    assert y.dtype == plain.dtype == torch.bfloat16
    assert _relative_error(y, reference) < 2e-2
    assert _relative_error(plain.float() * scale.view(-1, 1, 1) + shift.view(-1, 1, 1), reference) < 2e-2


@pytest.mark.parametrize("path", _PATHS)
def test_network_trains_under_bfloat16_autocast(path):
    torch.manual_seed(4)
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.25)
    for m in net.modules():
        if isinstance(m, SREConv):
            m.path = path
    x, target = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 1])
    reference = copy.deepcopy(net)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(reference(x), target).backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x)
        loss = loss_fn(logits, target)
    loss.backward()
    assert logits.dtype == torch.bfloat16
    with torch.no_grad():
        assert _relative_error(logits, copy.deepcopy(reference)(x)) < 5e-2
    for (name, a), b in zip(net.named_parameters(), reference.parameters()):
        assert a.grad is not None and a.grad.dtype == torch.float32, name
    # the whole gradient, as one vector, points the same way as in float32
    flat = torch.cat([p.grad.flatten() for p in net.parameters()])
    flat_ref = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert torch.nn.functional.cosine_similarity(flat, flat_ref, dim=0) > 0.99


@pytest.mark.parametrize("path", _PATHS)
@pytest.mark.parametrize("dims,k,stride", [(2, 7, 1), (2, 5, 2), (3, 5, 1)])
def test_channels_last_inputs_give_the_contiguous_result_forward_and_backward(path, dims, k, stride):
    torch.manual_seed(5 + dims)
    conv = SREConv(dims, 6, 10, k, stride=stride, path=path).double()
    x = torch.randn(2, 6, *([10] * dims), dtype=torch.float64)
    g = torch.randn_like(conv(x))
    memory_format = torch.channels_last if dims == 2 else torch.channels_last_3d
    results = []
    for inp in (x, x.contiguous(memory_format=memory_format)):
        assert inp.is_contiguous(memory_format=memory_format) == (inp is not x)
        y, grads = _outputs_and_grads(conv, inp, g, None)
        results.append((y, grads))
    (y1, grads1), (y2, grads2) = results
    assert _relative_error(y2, y1) < 1e-12
    for a, b in zip(grads2, grads1):
        assert _relative_error(a, b) < 1e-12
    if path == "decomposed":  # its output is channels-last whatever the input, so the next layer needs no copy
        assert y2.is_contiguous(memory_format=memory_format)


def test_channels_last_under_autocast():
    torch.manual_seed(6)
    conv = SREConv(2, 8, 8, 9, path="decomposed")
    x = torch.randn(2, 8, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = conv(x)
        b = conv(x.contiguous(memory_format=torch.channels_last))
    assert a.dtype == b.dtype == torch.bfloat16
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("path", _PATHS)
def test_dynamo_traces_the_layer_without_graph_breaks(path):
    torch.manual_seed(7)
    conv = SREConv(2, 8, 8, 9, path=path)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(conv)(x)  # training mode, autograd on: the decomposed path's own backward
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    with torch.no_grad():
        explained = torch._dynamo.explain(conv.eval())(x)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    torch._dynamo.reset()


def test_compiled_layer_with_fullgraph_matches_eager():
    torch.manual_seed(8)
    conv = SREConv(2, 8, 8, 9, path="decomposed")
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    y = conv(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    torch._dynamo.reset()
    compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")  # the graph capture, without C++ builds
    y2 = compiled(x)
    (gx2,) = torch.autograd.grad(y2.square().sum(), x)
    torch._dynamo.reset()
    assert _relative_error(y2, y) < 1e-6 and _relative_error(gx2, gx) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("path", ["decomposed", "auto"])
def test_compiled_network_trains_like_eager(path):
    # torch.compile's default backend (inductor) on a tiny SRE-ResNet with the decomposed path in every SRE layer, or
    # the automatic choice (on CPU the C++ kernel's operators in the deeper layers).
    torch.manual_seed(9)
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125)
    for m in net.modules():
        if isinstance(m, SREConv):
            m.path = path
    eager = copy.deepcopy(net)
    chosen = []
    for m in eager.modules():
        if isinstance(m, SREConv):
            m.register_forward_pre_hook(lambda module, args: chosen.append(module.select_path(args[0])))
    x, target = torch.randn(2, 1, 16, 16), torch.tensor([0, 2])
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True)
    for model in (eager, compiled):
        nn.functional.cross_entropy(model(x), target).backward()
    torch._dynamo.reset()
    assert ("cpp" in chosen) == (path == "auto" and ring_cpp.cpp_available()), chosen
    # Relative to the largest gradient: biases followed by a BatchNorm have a zero gradient up to rounding.
    scale = max(p.grad.abs().max().item() for p in eager.parameters())
    for (name, a), b in zip(net.named_parameters(), eager.parameters()):
        assert (a.grad - b.grad).abs().max().item() < 1e-4 * scale, name
