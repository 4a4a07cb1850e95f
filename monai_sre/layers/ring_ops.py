# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ring-decomposed SRE convolution as pure functions: band sums, their adjoint, batch chunking, the autograd
Function and the cost model that says when the decomposition pays off.

An SRE kernel with band weights ``W_b`` and 0/1 band masks ``M_b`` convolves as ``y = sum_b W_b (M_b * x)``: every
input channel is summed over each band (a depthwise correlation with the band's mask, cropped to the band's own
bounding box ``k_b = 2b + 1``; the centre band is the input itself), and bands and channels are mixed by matrix
products. That costs ``Cin * sum_b k_b^d + Cin/g * n * Cout`` multiply-adds per output voxel instead of the dense
kernel's ``Cin/g * Cout * k^d``. One band at a time is summed and folded into the output, so only one band-sum map is
alive at once. The backward (:class:`RingDecomposedConv`) keeps only the input: the output gradient is lifted through
each band's adjoint (correlation with the same symmetric mask), and both the input and the weight gradient come from
that by matrix products, so no band sums are stored.

On CUDA the same operator also runs as fused Triton kernels (:mod:`monai_sre.layers.ring_triton`, imported only when
that path runs: :func:`triton_available`, :func:`ring_conv_triton`), and :func:`time_call` measures the paths for
``path="auto"``. Under autocast, :func:`autocast_dtype` names the dtype the operands are cast to (the custom
operators then run with autocast off, on operands of one dtype).

Everything here is a function of tensors and ints (no module state). :class:`~monai_sre.layers.SREConv` holds the
band masks, caches the per-band filters and chooses the path; the functions used by its scripted forward
(:func:`ring_conv_forward`, :func:`ring_conv_portable`, :func:`conv_nd`, ...) are TorchScript-compatible.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "PASS_COST",
    "CPU_CHUNK_BYTES",
    "decomposition_pays_off",
    "band_boxes",
    "band_taps",
    "band_padding",
    "band_filters",
    "conv_nd",
    "conv_transpose_nd",
    "channels_last",
    "channels_last_strides",
    "band_sum",
    "band_sum_adjoint",
    "cpu_chunk_bytes",
    "batch_chunks",
    "ring_conv_forward",
    "ring_conv_backward",
    "RingDecomposedConv",
    "ring_conv_portable",
    "autocast_dtype",
    "band_tap_offsets",
    "triton_available",
    "ring_conv_triton",
    "time_call",
]

#: Cost of one pass over a channel of a feature map (read and write), in multiply-adds of a large matrix product, the
#: unit of the cost model. Measured on a 2-core AVX-512 CPU (oneDNN): a depthwise 3x3 filter costs about as much as
#: 30 GEMM multiply-adds per channel and voxel, a 9x9 one about 100, which this pass cost plus one unit per tap fits.
PASS_COST = 20.0
#: Batch chunk of the decomposed path on CPU, per thread: band-sum maps of about this size stay in L2 cache between
#: the depthwise filter that writes them and the matrix product that reads them, and far below glibc's 32 MiB mmap
#: threshold (larger blocks go back to the system when freed and are page-faulted in again on every allocation).
#: Measured on 2 cores: 1 MiB per thread trains the 64-channel 32x32 and 32^3 layers 1.3-1.4x faster than no chunking.
CPU_CHUNK_BYTES = 2**20


def decomposition_pays_off(
    in_channels: int,
    out_channels: int,
    groups: int,
    num_rings: int,
    kernel_taps: int,
    *,
    band_taps: Sequence[int] | None = None,
    training: bool = False,
) -> bool:
    """Cost model of the execution paths: is the ring-decomposed path cheaper than the dense one?

    Costs are counted per output voxel in multiply-adds of a large matrix product, plus :data:`PASS_COST` for every
    pass over a channel of a feature map (what bounds small filters and thin matrix products on real hardware):

    - dense: ``Cout * (Cin/g * kernel_taps + pass)`` per convolution; training runs three (forward, input and weight
      gradients);
    - decomposed: ``sum_b (band_taps[b] + pass)`` per channel for the depthwise band sums (of the ``Cin`` input
      channels, and in training also of the ``Cout`` output-gradient channels) plus ``num_rings * Cout * (Cin/g +
      pass)`` per matrix product folding the bands into the output (three in training).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        groups: convolution groups.
        num_rings: number of bands.
        kernel_taps: taps of the dense kernel (``prod(kernel_size)``).
        band_taps: taps of the depthwise filter of each band (its bounding box; 0 for an empty band); None charges
            every band the full ``kernel_taps``.
        training: compare forward+backward costs instead of forward (inference) costs.

    Returns:
        True when the decomposed path is estimated to be faster.
    """
    taps = [kernel_taps] * num_rings if band_taps is None else [int(t) for t in band_taps]
    used = [t for t in taps if t > 0]
    products = 3 if training else 1
    dense = products * out_channels * (in_channels // groups * kernel_taps + PASS_COST)
    band_sum_channels = in_channels + out_channels if training else in_channels
    band_sums = band_sum_channels * sum(t + PASS_COST for t in used)
    mixing = products * len(used) * out_channels * (in_channels // groups + PASS_COST)
    return band_sums + mixing < dense


# ------------------------------------------------------------------------------------------------ band geometry
def band_boxes(index: torch.Tensor, num_rings: int) -> list[list[int]]:
    """Half-extent per axis of each band's bounding box around the kernel centre (``[]`` for an empty band).

    Band ``b`` of a default map fits in a ``(2b + 1)^d`` box, so the decomposed path filters it with that box only.

    Args:
        index: band map from :func:`~monai_sre.layers.rings.ring_index`.
        num_rings: number of bands.

    Returns:
        one list of ``index.dim()`` half-extents per band.
    """
    centre = torch.tensor([k // 2 for k in index.shape])
    boxes = []
    for band in range(num_rings):
        offsets = torch.nonzero(index == band) - centre
        boxes.append(offsets.abs().amax(0).tolist() if len(offsets) else [])
    return boxes


def band_taps(boxes: Sequence[Sequence[int]]) -> list[int]:
    """Taps of each band's depthwise filter (its bounding box), 0 for an empty band: the cost model's ``band_taps``.

    Args:
        boxes: half-extents from :func:`band_boxes`.

    Returns:
        one count per band.
    """
    return [math.prod(2 * e + 1 for e in box) if box else 0 for box in boxes]


def band_padding(box: list[int], kernel_size: list[int], dilation: list[int], padding: list[int]) -> list[int]:
    """Signed padding of one band's filter: its box is smaller than the kernel, so it pads less, or crops.

    Args:
        box: the band's half-extents (:func:`band_boxes`).
        kernel_size: the full kernel size.
        dilation: the convolution's dilation.
        padding: the convolution's (symmetric) padding.

    Returns:
        the padding per axis for the band's filter; negative where the input must be cropped.
    """
    out: list[int] = []
    for a in range(len(padding)):
        out.append(padding[a] - (kernel_size[a] // 2 - box[a]) * dilation[a])
    return out


def band_filters(mask: torch.Tensor, box: list[int], channels: int, dtype: torch.dtype) -> torch.Tensor:
    """One band's 0/1 mask cropped to its box and repeated for ``channels``: a depthwise filter ``(channels, 1, *k_b)``.

    Args:
        mask: the band's mask over the whole kernel, shape ``(1, 1, *kernel_size)``.
        box: the band's half-extents (:func:`band_boxes`).
        channels: number of channels the filter is applied to.
        dtype: dtype of the filter.

    Returns:
        a contiguous tensor of shape ``(channels, 1, *(2 * box + 1))``.
    """
    spatial = mask.dim() - 2
    for axis in range(spatial):
        mask = mask.narrow(2 + axis, mask.shape[2 + axis] // 2 - box[axis], 2 * box[axis] + 1)
    shape = [channels, 1]
    for axis in range(spatial):
        shape.append(mask.shape[2 + axis])
    return mask.to(dtype).expand(shape).contiguous()


# ------------------------------------------------------------------------------------------------ plain convolutions
def conv_nd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int], padding: list[int],
            dilation: list[int], groups: int) -> torch.Tensor:
    """``F.conv1d/2d/3d`` chosen by the rank of ``x`` (``(batch, channels, *spatial)``)."""
    if x.dim() == 3:
        return F.conv1d(x, weight, bias, stride, padding, dilation, groups)
    if x.dim() == 4:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return F.conv3d(x, weight, bias, stride, padding, dilation, groups)


def conv_transpose_nd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                      padding: list[int], output_padding: list[int], groups: int, dilation: list[int]) -> torch.Tensor:
    """``F.conv_transpose1d/2d/3d`` chosen by the rank of ``x`` (torch's argument order)."""
    if x.dim() == 3:
        return F.conv_transpose1d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    if x.dim() == 4:
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return F.conv_transpose3d(x, weight, bias, stride, padding, output_padding, groups, dilation)


# ------------------------------------------------------------------------------------------------ memory layout
def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (batch, channels, *spatial) stored with channels innermost; no copy when it already is."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def channels_last_strides(size: list[int]) -> list[int]:
    """Strides of a ``(batch, channels, *spatial)`` tensor of ``size`` stored with channels innermost."""
    strides = [1] * len(size)
    step = size[1]
    for axis in range(len(size) - 1, 1, -1):
        strides[axis] = step
        step *= size[axis]
    strides[0] = step
    return strides


def _rows(x: torch.Tensor) -> torch.Tensor:
    """View a channels-last ``(batch, channels, *spatial)`` tensor as the matrix ``(batch * voxels, channels)``."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _groups(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """Split the columns of ``(voxels, channels)`` into ``(groups, voxels, channels / groups)`` (a view)."""
    return rows.view(rows.shape[0], groups, -1).transpose(0, 1)


# ------------------------------------------------------------------------------------------------ band sums
def band_sum(x: torch.Tensor, filters: torch.Tensor, stride: list[int], padding: list[int],
             dilation: list[int]) -> torch.Tensor:
    """Sum every channel of ``x`` over one band: a depthwise correlation with ``filters`` ``(channels, 1, *k_b)``,
    the band's 0/1 mask for every channel (:func:`band_filters`).

    ``padding`` may be negative (the band's box is smaller than the kernel and the layer pads less than the kernel
    radius); that crops the input instead. A centre band without padding or stride is the input itself.
    """
    identity = True
    for axis in range(x.dim() - 2):
        if padding[axis] != 0 or filters.shape[2 + axis] != 1 or stride[axis] != 1:
            identity = False
    if identity:
        return x
    positive: list[int] = []
    for axis in range(x.dim() - 2):
        if padding[axis] < 0:
            x = x.narrow(2 + axis, -padding[axis], x.shape[2 + axis] + 2 * padding[axis])
        positive.append(max(padding[axis], 0))
    return conv_nd(x, filters, None, stride, positive, dilation, x.shape[1])


def band_sum_adjoint(grad: torch.Tensor, filters: torch.Tensor, stride: list[int], padding: list[int],
                     dilation: list[int], size: Sequence[int]) -> torch.Tensor:
    """Adjoint of :func:`band_sum`: maps a gradient over its output to a gradient over an input of spatial ``size``."""
    span = [(k - 1) * d for k, d in zip(filters.shape[2:], dilation)]
    if all(s == 1 for s in stride):
        # The masks are symmetric under every flip, so the adjoint correlation uses the same mask, mirrored padding.
        return band_sum(grad, filters, stride, [e - p for e, p in zip(span, padding)], dilation)
    crop = [max(-p, 0) for p in padding]
    pad = [max(p, 0) for p in padding]
    inner = [n - 2 * c for n, c in zip(size, crop)]
    reached = [(o - 1) * s - 2 * p + e + 1 for o, s, p, e in zip(grad.shape[2:], stride, pad, span)]
    out = conv_transpose_nd(grad, filters, None, stride, pad, [i - r for i, r in zip(inner, reached)], grad.shape[1],
                            dilation)
    if any(crop):
        out = F.pad(out, [c for c in reversed(crop) for _ in range(2)])
    return out


# ------------------------------------------------------------------------------------------------ batch chunks
@torch.jit.unused
@torch.compiler.assume_constant_result
def cpu_chunk_bytes() -> int:
    """The decomposed path's batch-chunk budget on CPU: :data:`CPU_CHUNK_BYTES` per thread."""
    return CPU_CHUNK_BYTES * torch.get_num_threads()


def batch_chunks(x: torch.Tensor, channels: int, budget: int) -> list[tuple[int, int]]:
    """Batch ranges for the decomposed path: on CPU a band-sum map of ``channels`` stays near ``budget`` bytes, so it
    is still in cache when the matrix product reads it; elsewhere (GPU caching allocators), or without a budget, the
    whole batch at once."""
    batch = x.shape[0]
    if x.device.type != "cpu" or budget <= 0:
        return [(0, batch)]
    per_sample = max(1, channels * x[:1, :1].numel() * x.element_size())
    step = max(1, budget // per_sample)
    return [(i, min(i + step, batch)) for i in range(0, batch, step)]


# ------------------------------------------------------------------------------------------------ the operator
def ring_conv_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    filters: list[torch.Tensor],
    paddings: list[list[int]],
    bands: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    budget: int,
) -> torch.Tensor:
    """Ring-decomposed convolution without autograd: sum one band at a time and fold it into the output rows with a
    (grouped) matrix product, so only one band-sum map of one batch chunk is alive at once.

    Args:
        x: input ``(batch, in_channels, *spatial)``, best stored channels-last (:func:`channels_last`).
        weight: band weights ``(out_channels, in_channels / groups, num_rings)``.
        bias: ``(out_channels,)`` or None.
        filters: the depthwise filter of every band in ``bands`` for ``in_channels`` (:func:`band_filters`).
        paddings: the signed padding of every band in ``bands`` (:func:`band_padding`).
        bands: the non-empty bands, indices into the last axis of ``weight``.
        stride: convolution stride.
        dilation: convolution dilation.
        groups: convolution groups.
        budget: batch-chunk budget in bytes (:func:`batch_chunks`); 0 for one chunk.

    Returns:
        the output ``(batch, out_channels, *spatial_out)``, stored channels-last.
    """
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    # (groups, in/groups, out/groups) per band: the mixing matrices, from one contiguous copy of the band-major
    # weight (a band's strided slice would be copied by every product)
    by_band = weight.permute(2, 0, 1).contiguous()
    mixes = [by_band[band].view(groups, -1, in_per_group).transpose(1, 2) for band in bands]
    out = torch.empty(0)
    rows = out
    for start, stop in batch_chunks(x, max(x.shape[1], out_channels), budget):
        target = out
        for i in range(len(bands)):
            sums = band_sum(x[start:stop], filters[i], stride, paddings[i], dilation)
            if i == 0:
                if start == 0:  # the first band sum tells the output size
                    size = [x.shape[0], out_channels] + list(sums.shape[2:])
                    # Channels-last storage, but a tensor of its own rather than a view of one, so that callers
                    # (a residual add) may update it in place even when it is a custom autograd output.
                    out = torch.empty_strided(size, channels_last_strides(size), dtype=x.dtype, device=x.device)
                    rows = out.movedim(1, -1).view(-1, out_channels)
                voxels = sums[:1, :1].numel()
                target = _groups(rows[start * voxels : stop * voxels], groups)
                torch.bmm(_groups(_rows(sums), groups), mixes[i], out=target)
            else:
                target.baddbmm_(_groups(_rows(sums), groups), mixes[i])
    if bias is not None:
        rows.add_(bias)
    return out


def ring_conv_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    filters: list[torch.Tensor],
    paddings: list[list[int]],
    bands: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    budget: int,
    needs_input_grad: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`ring_conv_forward` from the input and the weight only.

    With ``S_b = M_b * x`` the band sums and ``y = sum_b W_b S_b``, the gradients are ``dW_b = G_b x^T`` and
    ``dx = sum_b W_b^T G_b`` where ``G_b = M_b^T dy`` is the output gradient lifted through the band's adjoint. So
    the output gradient is summed over each band once and no band sums are needed.

    Args:
        grad: gradient of the output.
        x: the channels-last input of the forward call.
        weight, paddings, bands, stride, dilation, groups, budget: as for :func:`ring_conv_forward`.
        filters: the bands' depthwise filters for ``out_channels`` (the forward's are for ``in_channels``).
        needs_input_grad: whether the gradients of ``x``, ``weight`` and the bias are wanted.

    Returns:
        ``(grad_x, grad_weight, grad_bias)``, None where not wanted.
    """
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    grad = channels_last(grad)
    voxels = x[:1, :1].numel()
    grad_x = x.new_empty((x.shape[0],) + x.shape[2:] + (x.shape[1],)) if needs_input_grad[0] else None
    # weight gradient per band, (groups, out/groups, in/groups) each, accumulated in place over the chunks
    grad_w = weight.new_zeros((weight.shape[2], groups, out_channels // groups, in_per_group)) if (
        needs_input_grad[1]) else None
    filters = [f if f.dtype == grad.dtype else f.to(grad.dtype) for f in filters]
    # (groups, out/groups, in/groups) per band: the transposed mixing matrices, from one contiguous copy of the
    # band-major weight (a band's strided slice would be copied by every product)
    by_band = weight.permute(2, 0, 1).contiguous()
    unmixes = [by_band[band].view(groups, -1, in_per_group) for band in bands]
    for start, stop in batch_chunks(x, max(x.shape[1], out_channels), budget):
        target = _groups(grad_x.view(-1, x.shape[1])[start * voxels : stop * voxels], groups) if (
            grad_x is not None) else None
        x_groups = _groups(_rows(x[start:stop]), groups)
        for i, band in enumerate(bands):
            lifted = band_sum_adjoint(grad[start:stop], filters[i], stride, paddings[i], dilation, x.shape[2:])
            lifted_groups = _groups(_rows(lifted), groups)  # (groups, voxels, out/groups)
            if target is not None:
                if i == 0:
                    torch.bmm(lifted_groups, unmixes[i], out=target)
                else:
                    target.baddbmm_(lifted_groups, unmixes[i])
            if grad_w is not None:
                grad_w[band].baddbmm_(lifted_groups.transpose(1, 2), x_groups)
    grad_b = _rows(grad).sum(0) if needs_input_grad[2] else None
    if grad_w is not None:
        grad_w = grad_w.view(weight.shape[2], out_channels, in_per_group).permute(1, 2, 0)
    return (grad_x.movedim(-1, 1) if grad_x is not None else None), grad_w, grad_b


class RingDecomposedConv(torch.autograd.Function):
    """:func:`ring_conv_forward` with the backward of :func:`ring_conv_backward`: the graph keeps only the input and
    the weight.

    ``apply(x, weight, bias, in_filters, out_filters, paddings, bands, stride, dilation, groups, budget)``:
    ``in_filters`` are the bands' filters for the input channels (forward), ``out_filters`` for the output channels
    (backward); the other arguments are those of :func:`ring_conv_forward`.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, in_filters: list[torch.Tensor],
        out_filters: list[torch.Tensor], paddings: list[list[int]], bands: list[int], stride: list[int],
        dilation: list[int], groups: int, budget: int,
    ) -> torch.Tensor:
        x = channels_last(x)
        ctx.save_for_backward(x, weight)
        ctx.operands = (out_filters, paddings, bands, stride, dilation, groups, budget)
        ctx.has_bias = bias is not None
        # The operands share one dtype (the caller casts them under autocast); autocast must not recast them.
        with torch.autocast(x.device.type, enabled=False):
            return ring_conv_forward(x, weight, bias, in_filters, paddings, bands, stride, dilation, groups, budget)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        # On CPU the backward runs on the caller's thread, inside the caller's autocast region if any.
        with torch.autocast(x.device.type, enabled=False):
            grads = ring_conv_backward(grad.to(x.dtype), x, weight, *ctx.operands, needs_input_grad=needs)
        return grads + (None,) * 8


def ring_conv_portable(
    x: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """The ring-decomposed convolution from standard, differentiable convolutions only (TorchScript, tracing, ONNX).

    Args:
        x: input ``(batch, in_channels, *spatial)``.
        masks: the 0/1 band masks ``(num_rings, 1, *kernel_size)``.
        weight: band weights ``(out_channels, in_channels / groups, num_rings)``.
        bias: ``(out_channels,)`` or None.
        stride: convolution stride.
        padding: convolution padding (symmetric).
        dilation: convolution dilation.
        groups: convolution groups.

    Returns:
        the output ``(batch, out_channels, *spatial_out)``.
    """
    batch, channels, spatial = x.shape[0], x.shape[1], x.dim() - 2
    # Every channel is summed over each band by one shared 0/1 filter bank: treat channels as batch entries.
    sums = conv_nd(x.reshape([batch * channels, 1] + list(x.shape[2:])), masks.to(x.dtype), None, stride, padding,
                   dilation, 1)
    sums = sums.reshape([batch, channels * masks.shape[0]] + list(sums.shape[2:]))
    mix = weight.reshape([weight.shape[0], -1] + [1] * spatial)
    return conv_nd(sums, mix, bias, [1] * spatial, [0] * spatial, [1] * spatial, groups)


# ------------------------------------------------------------------------------------------------ mixed precision
@torch.jit.unused
def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs convolutions in on ``device_type`` (e.g. ``torch.bfloat16``), None when it is off.

    Args:
        device_type: ``"cpu"``, ``"cuda"``, ...

    Returns:
        the autocast dtype, or None.
    """
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


# ------------------------------------------------------------------------------------------------ Triton kernels
def band_tap_offsets(index: torch.Tensor, bands: Sequence[int], dilation: Sequence[int],
                     padding: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input offsets of every kernel tap, grouped by band: the geometry of the Triton kernels.

    Output voxel ``o`` of a stride-1 convolution reads input voxel ``o + offset`` at a tap, with ``offset = tap *
    dilation - padding`` per axis; offsets are padded to three axes (depth, height, width) in front.

    Args:
        index: band map from :func:`~monai_sre.layers.rings.ring_index`.
        bands: the bands to list, in this order.
        dilation: the convolution's dilation.
        padding: the convolution's (symmetric) padding.

    Returns:
        ``offsets`` int32 ``(taps, 3)`` and ``starts`` int32 ``(len(bands) + 1,)``: band ``bands[i]`` owns taps
        ``starts[i]:starts[i + 1]``.
    """
    scale = torch.tensor(list(dilation))
    shift = torch.tensor(list(padding))
    rows, starts = [], [0]
    for band in bands:
        taps = torch.nonzero(index == band) * scale - shift
        rows.append(F.pad(taps, (3 - taps.shape[1], 0)))
        starts.append(starts[-1] + len(taps))
    return torch.cat(rows).to(torch.int32), torch.tensor(starts, dtype=torch.int32)


@torch.jit.unused
def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA with Triton installed, or CPU tensors in Triton's
    interpreter (``TRITON_INTERPRET=1``, how the tests check the kernels without a GPU)."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    if device.type not in ("cpu", "cuda"):
        return False
    return importlib.util.find_spec("triton") is not None


@torch.jit.unused
def ring_conv_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, bands: list[int],
                     offsets: torch.Tensor, starts: torch.Tensor, out_spatial: list[int]) -> torch.Tensor:
    """The ring-decomposed convolution (stride 1, groups 1) through the fused Triton kernels, with autograd.

    Args:
        x: input ``(batch, in_channels, *spatial)``.
        weight: band weights ``(out_channels, in_channels, num_rings)``, the dtype of ``x``.
        bias: ``(out_channels,)`` or None.
        bands: the non-empty bands.
        offsets: tap offsets on ``x``'s device (:func:`band_tap_offsets`).
        starts: band starts on ``x``'s device (:func:`band_tap_offsets`).
        out_spatial: the output's spatial shape.

    Returns:
        the output ``(batch, out_channels, *out_spatial)``, stored channels-last.
    """
    from monai_sre.layers.ring_triton import RingTritonConv  # Triton only when this path runs

    with torch.autocast(x.device.type, enabled=False):
        return RingTritonConv.apply(x, weight, bias, bands, offsets, starts, out_spatial)


# ------------------------------------------------------------------------------------------------ measured choice
@torch.jit.unused
def time_call(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` on ``device`` (synchronised), after one untimed warm-up call (kernel
    compilation, allocator, cuDNN algorithm search).

    Args:
        fn: what to time.
        device: the device ``fn`` runs on.
        repeats: timed calls.

    Returns:
        the median seconds.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
