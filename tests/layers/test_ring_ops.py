# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ring-decomposed operator as pure functions, checked against plain dense convolutions (no SREConv module)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_sre.layers import ring_ops
from monai_sre.layers.ring_ops import (
    RingDecomposedConv,
    band_boxes,
    band_filters,
    band_padding,
    band_sum,
    band_sum_adjoint,
    band_taps,
    batch_chunks,
    conv_nd,
    conv_transpose_nd,
    decomposition_pays_off,
    ring_conv_forward,
    ring_conv_portable,
)
from monai_sre.layers.rings import OUTSIDE, num_rings_default, ring_index


class _Operands:
    """Everything the functions need for one kernel, built from the band map alone."""

    def __init__(self, dims: int, k: int, in_ch: int, out_ch: int, groups: int, padding: int, stride: int,
                 dilation: int, num_rings: int | None = None) -> None:
        self.index = ring_index(k, dims, num_rings)
        self.num_rings = num_rings_default(k, dims) if num_rings is None else num_rings
        self.masks = torch.stack([(self.index == b) for b in range(self.num_rings)]).unsqueeze(1).double()
        self.boxes = band_boxes(self.index, self.num_rings)
        self.bands = [b for b in range(self.num_rings) if self.boxes[b]]
        self.kernel = [k] * dims
        self.stride, self.dilation, self.padding = [stride] * dims, [dilation] * dims, [padding] * dims
        self.paddings = [band_padding(self.boxes[b], self.kernel, self.dilation, self.padding) for b in self.bands]
        self.groups = groups
        self.weight = torch.randn(out_ch, in_ch // groups, self.num_rings, dtype=torch.float64)
        self.bias = torch.randn(out_ch, dtype=torch.float64)

    def filters(self, channels: int) -> list[torch.Tensor]:
        return [band_filters(self.masks[b : b + 1], self.boxes[b], channels, torch.float64) for b in self.bands]

    def dense(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Reference: expand the band weights into the dense kernel (0 outside the circle) and convolve."""
        kernel = F.pad(weight, (0, 1))[:, :, torch.where(self.index == OUTSIDE, self.num_rings, self.index)]
        return conv_nd(x, kernel, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor, budget: int = 0) -> torch.Tensor:
        return ring_conv_forward(x, self.weight, self.bias, self.filters(x.shape[1]), self.paddings, self.bands,
                                 self.stride, self.dilation, self.groups, budget)

    def assert_autograd_equals_dense(self, x: torch.Tensor, budget: int) -> None:
        """:class:`RingDecomposedConv` gives the dense output and the dense gradients of input, weight and bias."""
        leaves = [t.clone().requires_grad_() for t in (x, self.weight, self.bias)]
        y = RingDecomposedConv.apply(*leaves, self.filters(x.shape[1]), self.filters(self.weight.shape[0]),
                                     self.paddings, self.bands, self.stride, self.dilation, self.groups, budget)
        reference = [t.clone().requires_grad_() for t in (x, self.weight, self.bias)]
        y_ref = self.dense(*reference)
        torch.testing.assert_close(y, y_ref)
        g = torch.randn_like(y)
        for a, b in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(y_ref, reference, g)):
            torch.testing.assert_close(a, b)


# The same padding, less padding than the radius (bands crop the input), more padding, strided and dilated.
_CASES = [  # dims, k, padding, stride, dilation, groups
    (1, 7, 3, 1, 1, 1),
    (2, 5, 2, 2, 1, 2),
    (2, 9, 0, 1, 1, 1),
    (2, 7, 1, 2, 1, 3),
    (2, 5, 3, 3, 2, 1),
    (3, 5, 2, 2, 1, 2),
]


def test_band_geometry_of_a_5x5_kernel():
    index = ring_index(5, 2)
    boxes = band_boxes(index, 3)
    assert boxes == [[0, 0], [1, 1], [2, 2]]
    assert band_taps(boxes) == [1, 9, 25]
    assert band_taps([[0, 0], [], [1, 2]]) == [1, 0, 15]
    # band 1 (3x3 box) of a 5x5 kernel padded by 2: one less padding; unpadded: crop one voxel per side
    assert band_padding(boxes[1], [5, 5], [1, 1], [2, 2]) == [1, 1]
    assert band_padding(boxes[1], [5, 5], [2, 1], [0, 0]) == [-2, -1]
    filters = band_filters(index.eq(1)[None, None].double(), boxes[1], 4, torch.float32)
    assert filters.shape == (4, 1, 3, 3) and filters.dtype == torch.float32 and filters.is_contiguous()
    expected = torch.ones(3, 3)
    expected[1, 1] = 0
    assert torch.equal(filters[3, 0], expected)


@pytest.mark.parametrize("dims,k,padding,stride,dilation,channels", [c[:5] + (3,) for c in _CASES])
def test_band_sum_is_the_masked_depthwise_convolution(dims, k, padding, stride, dilation, channels):
    torch.manual_seed(dims * k)
    ops = _Operands(dims, k, channels, channels, 1, padding, stride, dilation)
    x = torch.randn(2, channels, *([11] * dims), dtype=torch.float64)
    for band, filters, pad in zip(ops.bands, ops.filters(channels), ops.paddings):
        full_mask = ops.masks[band : band + 1].expand(channels, *ops.masks.shape[1:])
        expected = conv_nd(x, full_mask, None, ops.stride, ops.padding, ops.dilation, channels)
        torch.testing.assert_close(band_sum(x, filters, ops.stride, pad, ops.dilation), expected)


@pytest.mark.parametrize("dims,k,padding,stride,dilation,channels", [c[:5] + (2,) for c in _CASES])
def test_band_sum_adjoint_is_the_adjoint(dims, k, padding, stride, dilation, channels):
    # <B x, g> == <x, B^T g> for every band, also where strides leave input voxels unread.
    torch.manual_seed(dims + k)
    ops = _Operands(dims, k, channels, channels, 1, padding, stride, dilation)
    for size in (11, 12):
        x = torch.randn(2, channels, *([size] * dims), dtype=torch.float64)
        for filters, pad in zip(ops.filters(channels), ops.paddings):
            y = band_sum(x, filters, ops.stride, pad, ops.dilation)
            g = torch.randn_like(y)
            back = band_sum_adjoint(g, filters, ops.stride, pad, ops.dilation, x.shape[2:])
            assert back.shape == x.shape
            torch.testing.assert_close((y * g).sum(), (x * back).sum())


@pytest.mark.parametrize("dims,k,padding,stride,dilation,groups", _CASES)
def test_forward_equals_dense_convolution_in_one_chunk_and_in_many(dims, k, padding, stride, dilation, groups):
    torch.manual_seed(7 * k + dims)
    ops = _Operands(dims, k, 6, 3 * groups, groups, padding, stride, dilation)
    x = ring_ops.channels_last(torch.randn(5, 6, *([10] * dims), dtype=torch.float64))
    expected = ops.dense(x, ops.weight, ops.bias)
    one_pass = ops.forward(x, budget=0)
    torch.testing.assert_close(one_pass, expected)
    assert len(batch_chunks(x, 6, 1)) == 5
    torch.testing.assert_close(ops.forward(x, budget=1), one_pass)  # one sample per chunk: the same numbers


@pytest.mark.parametrize("budget", [0, 1])
@pytest.mark.parametrize("dims,k,padding,stride,dilation,groups", _CASES)
def test_autograd_function_gradients_equal_the_dense_ones(dims, k, padding, stride, dilation, groups, budget):
    torch.manual_seed(3 * k + dims)
    ops = _Operands(dims, k, 6, 3 * groups, groups, padding, stride, dilation)
    x = torch.randn(3, 6, *([9] * dims), dtype=torch.float64)
    ops.assert_autograd_equals_dense(x, budget)


def test_autograd_function_passes_gradcheck():
    torch.manual_seed(0)
    ops = _Operands(2, 5, 2, 2, 1, 1, 2, 1)
    inputs = (torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True),
              ops.weight.requires_grad_(), ops.bias.requires_grad_())

    def fn(x, w, b):
        return RingDecomposedConv.apply(x, w, b, ops.filters(2), ops.filters(2), ops.paddings, ops.bands, ops.stride,
                                        ops.dilation, 1, 0)

    assert torch.autograd.gradcheck(fn, inputs)


def test_empty_bands_are_skipped_and_get_no_gradient():
    # 8 equal-width bands over the 5 distinct radii of a 9-tap 1D kernel leave some bands without taps.
    ops = _Operands(1, 9, 2, 3, 1, 4, 1, 1, num_rings=8)
    assert len(ops.bands) < 8
    x = torch.randn(2, 2, 12, dtype=torch.float64)
    weight = ops.weight.clone().requires_grad_()
    y = RingDecomposedConv.apply(x, weight, None, ops.filters(2), ops.filters(3), ops.paddings, ops.bands,
                                 ops.stride, ops.dilation, 1, 0)
    torch.testing.assert_close(y, ops.dense(x, ops.weight, None))
    (grad,) = torch.autograd.grad(y.square().sum(), weight)
    empty = [b for b in range(8) if b not in ops.bands]
    assert torch.all(grad[:, :, empty] == 0)
    assert torch.all(grad[:, :, ops.bands].abs().sum((0, 1)) > 0)


@pytest.mark.parametrize("dims,k,padding,stride,dilation,groups", _CASES)
def test_portable_form_equals_dense_convolution(dims, k, padding, stride, dilation, groups):
    torch.manual_seed(k)
    ops = _Operands(dims, k, 6, 3 * groups, groups, padding, stride, dilation)
    x = torch.randn(2, 6, *([10] * dims), dtype=torch.float64)
    out = ring_conv_portable(x, ops.masks, ops.weight, ops.bias, ops.stride, ops.padding, ops.dilation, groups)
    torch.testing.assert_close(out, ops.dense(x, ops.weight, ops.bias))


def test_batch_chunks():
    x = torch.zeros(10, 4, 8, 8)  # 256 bytes per channel and sample
    assert batch_chunks(x, 4, 0) == [(0, 10)]
    assert batch_chunks(x, 4, 3 * 4 * 256) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert batch_chunks(x, 4, 1) == [(i, i + 1) for i in range(10)]
    assert batch_chunks(x.to("meta"), 4, 1) == [(0, 10)]  # accelerators: the whole batch at once



# same padding, cropping bands, padding beyond the kernel, dilation, groups
_GEOMETRIES = [  # dims, k, padding, dilation, groups
    (1, 7, 3, 1, 1),
    (2, 9, 0, 1, 1),
    (2, 3, 3, 1, 2),
    (2, 5, 6, 2, 1),
    (3, 5, 2, 1, 1),
    (3, 5, 1, 2, 3),
]


@pytest.mark.parametrize("dims,k,padding,dilation,groups", _GEOMETRIES)
def test_one_sample_chunks_give_the_dense_output_and_gradients(dims, k, padding, dilation, groups):
    torch.manual_seed(5 * k + dims)
    ops = _Operands(dims, k, 6, 3 * groups, groups, padding, 1, dilation)
    x = ring_ops.channels_last(torch.randn(2, 6, *([11] * dims), dtype=torch.float64))
    per_row = 6 * 8 * 11 ** (dims - 1)  # bytes of one row of 6 channels in float64
    budget = 2 * per_row  # smaller than one sample: one sample per chunk
    assert batch_chunks(x, 6, budget) == [(0, 1), (1, 2)]
    torch.testing.assert_close(ops.forward(x, budget=budget), ops.dense(x, ops.weight, ops.bias))
    ops.assert_autograd_equals_dense(x, budget)

@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_dispatch_by_rank(dims):
    torch.manual_seed(dims)
    x = torch.randn(1, 2, *([5] * dims))
    w = torch.randn(2, 2, *([3] * dims))
    convs = (F.conv1d, F.conv2d, F.conv3d)
    transposes = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
    ones, twos = [1] * dims, [2] * dims
    torch.testing.assert_close(conv_nd(x, w, None, twos, ones, ones, 1), convs[dims - 1](x, w, None, 2, 1, 1, 1))
    torch.testing.assert_close(conv_transpose_nd(x, w, None, twos, ones, ones, 1, ones),
                               transposes[dims - 1](x, w, None, 2, 1, 1, 1, 1))


def test_cost_model():
    # 64 -> 64 channels with a 9x9 kernel: ~13x fewer multiply-adds; 1 -> 8 channels with a 3x3 kernel: dense wins.
    for training in (False, True):
        assert decomposition_pays_off(64, 64, 1, 5, 81, band_taps=[1, 9, 25, 49, 81], training=training)
        assert decomposition_pays_off(64, 64, 1, 5, 81, training=training)  # even charging every band 81 taps
        assert not decomposition_pays_off(1, 8, 1, 2, 9, band_taps=[1, 9], training=training)
        # depthwise: the dense kernel has no channel mixing to save
        assert not decomposition_pays_off(16, 16, 16, 2, 9, band_taps=[1, 9], training=training)
    # One input channel, many outputs: the backward sums the 64 output-gradient channels over 6 bands, which
    # costs more than the dense kernel's gradients, while inference only sums the single input channel.
    taps = [1, 9, 25, 49, 81, 121]
    assert decomposition_pays_off(1, 64, 1, 6, 121, band_taps=taps)
    assert not decomposition_pays_off(1, 64, 1, 6, 121, band_taps=taps, training=True)
