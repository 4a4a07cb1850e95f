# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE convolutions: radially symmetric kernels with one learnable weight per distance band.

Two execution paths give the same result (to float tolerance):

- ``"dense"`` expands the band weights into a full kernel by indexing with the band map (a gather, whose backward is
  a scatter-add) and runs one ``F.convNd``; it costs ``Cin/g * Cout * k^d`` multiply-adds per output voxel.
- ``"decomposed"`` sums every input channel over each band (fixed 0/1 filters, not learned) and mixes bands and
  channels with matrix products: ``Cin * sum_b k_b^d + Cin/g * n * Cout`` multiply-adds, where band ``b`` is
  summed with a depthwise filter cropped to its own bounding box ``k_b = 2b + 1`` (the centre band is the input
  itself). One band at a time is summed and folded into the output, so only one band-sum map is alive at once.
  Its backward (:class:`_RingDecomposedConv`) keeps only the input: the output gradient is lifted through each
  band's adjoint (correlation with the same symmetric mask), and both the input and the weight gradient come from
  that by matrix products, so no band sums are stored for the backward pass.

``path="auto"`` (default) picks the cheaper one per layer with a cost model calibrated on CPU
(:func:`decomposition_pays_off`), separately for training (autograd enabled) and inference. In inference (no
autograd needed for the weight) the dense kernel is cached; the cache is keyed on the weight's version counter,
storage, device and dtype, so ``load_state_dict``, in-place updates and ``.to()`` all invalidate it, and it never
holds an autograd graph. The decomposed path keeps its fixed per-band filters per padding, dtype and device. Under
TorchScript and tracing (ONNX export) the decomposed path runs as plain convolutions, so exported graphs contain only
standard operators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_sre.layers.rings import OUTSIDE, normalize_kernel_size, ring_index, ring_sizes

__all__ = [
    "SREConv",
    "SREConv1d",
    "SREConv2d",
    "SREConv3d",
    "SREConvTranspose",
    "SREConvTranspose1d",
    "SREConvTranspose2d",
    "SREConvTranspose3d",
    "decomposition_pays_off",
]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PATHS = ("auto", "dense", "decomposed")
# Cost of one pass over a channel of a feature map (read and write), in multiply-adds of a large matrix product, the
# unit of the cost model. Measured on a 2-core AVX-512 CPU (oneDNN): a depthwise 3x3 filter costs about as much as
# 30 GEMM multiply-adds per channel and voxel, a 9x9 one about 100, which this pass cost plus one unit per tap fits.
_PASS_COST = 20.0
# Batch chunk of the decomposed path on CPU, per thread: band-sum maps of about this size stay in L2 cache between
# the depthwise filter that writes them and the matrix product that reads them, and far below glibc's 32 MiB mmap
# threshold (larger blocks go back to the system when freed and are page-faulted in again on every allocation).
# Measured on 2 cores: 1 MiB per thread trains the 64-channel 32x32 and 32^3 layers 1.3-1.4x faster than no chunking.
_CPU_CHUNK_BYTES = 2**20


def _tuple(value: Sequence[int] | int, spatial_dims: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(f"{name} must be an int or a sequence of {spatial_dims} ints, got {value!r}.")
    return out


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

    Costs are counted per output voxel in multiply-adds of a large matrix product, plus :data:`_PASS_COST` for every
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
    dense = products * out_channels * (in_channels // groups * kernel_taps + _PASS_COST)
    band_sum_channels = in_channels + out_channels if training else in_channels
    band_sums = band_sum_channels * sum(t + _PASS_COST for t in used)
    mixing = products * len(used) * out_channels * (in_channels // groups + _PASS_COST)
    return band_sums + mixing < dense


def _band_boxes(index: torch.Tensor, num_rings: int) -> list[list[int]]:
    """Half-extent per axis of each band's bounding box around the kernel centre (``[]`` for an empty band).

    Band ``b`` of a default map fits in a ``(2b + 1)^d`` box, so the decomposed path filters it with that box only.
    """
    centre = torch.tensor([k // 2 for k in index.shape])
    boxes = []
    for band in range(num_rings):
        offsets = torch.nonzero(index == band) - centre
        boxes.append(offsets.abs().amax(0).tolist() if len(offsets) else [])
    return boxes


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (batch, channels, *spatial) stored with channels innermost; no copy when it already is."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def _channels_last_strides(size: list[int]) -> list[int]:
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


def _conv_nd(x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int], dilation: list[int],
             groups: int) -> torch.Tensor:
    if x.dim() == 3:
        return F.conv1d(x, weight, None, stride, padding, dilation, groups)
    if x.dim() == 4:
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)
    return F.conv3d(x, weight, None, stride, padding, dilation, groups)


def _band_sum(x: torch.Tensor, filters: torch.Tensor, stride: list[int], padding: list[int],
              dilation: list[int]) -> torch.Tensor:
    """Sum every channel of ``x`` over one band: a depthwise correlation with ``filters`` ``(channels, 1, *k_b)``,
    the band's 0/1 mask for every channel.

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
    return _conv_nd(x, filters, stride, positive, dilation, x.shape[1])


def _band_sum_adjoint(grad: torch.Tensor, filters: torch.Tensor, stride: list[int], padding: list[int],
                      dilation: list[int], size: Sequence[int]) -> torch.Tensor:
    """Adjoint of :func:`_band_sum`: maps a gradient over its output to a gradient over an input of ``size``."""
    spatial = grad.dim() - 2
    span = [(k - 1) * d for k, d in zip(filters.shape[2:], dilation)]
    if all(s == 1 for s in stride):
        # The masks are symmetric under every flip, so the adjoint correlation uses the same mask, mirrored padding.
        return _band_sum(grad, filters, stride, [e - p for e, p in zip(span, padding)], dilation)
    crop = [max(-p, 0) for p in padding]
    pad = [max(p, 0) for p in padding]
    inner = [n - 2 * c for n, c in zip(size, crop)]
    reached = [(o - 1) * s - 2 * p + e + 1 for o, s, p, e in zip(grad.shape[2:], stride, pad, span)]
    transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
    out = transpose(grad, filters, None, stride, pad, [i - r for i, r in zip(inner, reached)], grad.shape[1], dilation)
    if any(crop):
        out = F.pad(out, [c for c in reversed(crop) for _ in range(2)])
    return out


@torch.jit.unused
def _cpu_chunk_bytes() -> int:
    return _CPU_CHUNK_BYTES * torch.get_num_threads()


def _batch_chunks(x: torch.Tensor, channels: int, budget: int) -> list[tuple[int, int]]:
    """Batch ranges for the decomposed path: on CPU a band-sum map of ``channels`` stays near ``budget`` bytes, so it
    is still in cache when the matrix product reads it; elsewhere (GPU caching allocators), or without a budget, the
    whole batch at once."""
    batch = x.shape[0]
    if x.device.type != "cpu" or budget <= 0:
        return [(0, batch)]
    per_sample = max(1, channels * x[:1, :1].numel() * x.element_size())
    step = max(1, budget // per_sample)
    return [(i, min(i + step, batch)) for i in range(0, batch, step)]


class _RingDecomposedConv(torch.autograd.Function):
    """Ring-decomposed convolution whose backward keeps only the input and the weight.

    With ``S_b = M_b * x`` the band sums and ``y = sum_b W_b S_b``, the gradients are ``dW_b = G_b x^T`` and
    ``dx = sum_b W_b^T G_b`` where ``G_b = M_b^T dy`` is the output gradient lifted through the band's adjoint. So
    the backward sums the output gradient over each band once and needs no stored band sums.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layer: _SREConvNd,
        padding: list[int],
    ) -> torch.Tensor:
        x = _channels_last(x)
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.padding, ctx.has_bias = layer, padding, bias is not None
        return layer._ring_forward(x, weight, bias, padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        layer: _SREConvNd = ctx.layer
        groups, (out_channels, in_per_group) = layer.groups, weight.shape[:2]
        stride, dilation = list(layer.stride), list(layer.dilation)
        grad = _channels_last(grad)
        voxels = x[:1, :1].numel()
        grad_x = x.new_empty((x.shape[0],) + x.shape[2:] + (x.shape[1],)) if ctx.needs_input_grad[0] else None
        # weight gradient per band, (groups, out/groups, in/groups) each, accumulated in place over the chunks
        grad_w = weight.new_zeros((weight.shape[2], groups, out_channels // groups, in_per_group)) if (
            ctx.needs_input_grad[1]) else None
        bands = layer._bands_in_use()
        filters = [layer._band_filters(band, out_channels, grad.dtype) for band in bands]
        paddings = [layer._band_padding(band, ctx.padding) for band in bands]
        # (groups, out/groups, in/groups) per band: the transposed mixing matrices, from one contiguous copy of the
        # band-major weight (a band's strided slice would be copied by every product)
        by_band = weight.permute(2, 0, 1).contiguous()
        unmixes = [by_band[band].view(groups, -1, in_per_group) for band in bands]
        for start, stop in _batch_chunks(x, max(x.shape[1], out_channels), _cpu_chunk_bytes()):
            target = _groups(grad_x.view(-1, x.shape[1])[start * voxels : stop * voxels], groups) if (
                grad_x is not None) else None
            x_groups = _groups(_rows(x[start:stop]), groups)
            for i, band in enumerate(bands):
                lifted = _band_sum_adjoint(grad[start:stop], filters[i], stride, paddings[i], dilation, x.shape[2:])
                lifted_groups = _groups(_rows(lifted), groups)  # (groups, voxels, out/groups)
                if target is not None:
                    if i == 0:
                        torch.bmm(lifted_groups, unmixes[i], out=target)
                    else:
                        target.baddbmm_(lifted_groups, unmixes[i])
                if grad_w is not None:
                    grad_w[band].baddbmm_(lifted_groups.transpose(1, 2), x_groups)
        grad_b = _rows(grad).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        if grad_w is not None:
            grad_w = grad_w.view(weight.shape[2], out_channels, in_per_group).permute(1, 2, 0)
        return (grad_x.movedim(-1, 1) if grad_x is not None else None), grad_w, grad_b, None, None


class _SREConvNd(nn.Module):
    """Shared implementation of the SRE convolutions (forward and transposed)."""

    __constants__ = ["spatial_dims", "in_channels", "out_channels", "groups", "num_rings", "padding_mode", "path"]
    # An eager-only cache (dtype and device keys): TorchScript builds the band filters on the fly.
    __jit_ignored_attributes__ = ("_band_filter_cache",)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int,
        padding: Sequence[int] | int | str,
        dilation: Sequence[int] | int,
        groups: int,
        bias: bool,
        padding_mode: str,
        num_rings: int | None,
        transposed: bool,
        output_padding: Sequence[int] | int,
        path: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        size = normalize_kernel_size(kernel_size, spatial_dims)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive int, got {value}.")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}."
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}.")
        if transposed and padding_mode != "zeros":
            raise ValueError(f"transposed SRE convolutions support only padding_mode='zeros', got {padding_mode!r}.")
        if path not in _PATHS:
            raise ValueError(f"path must be one of {_PATHS}, got {path!r}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = size
        self.stride = _tuple(stride, spatial_dims, "stride")
        self.dilation = _tuple(dilation, spatial_dims, "dilation")
        self.output_padding = _tuple(output_padding, spatial_dims, "output_padding")
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = transposed
        self.path = "dense" if transposed else path
        self.padding = self._resolve_padding(padding)

        index = ring_index(size, spatial_dims, num_rings)
        self.num_rings = int(num_rings) if num_rings is not None else max(size) // 2 + 1
        taps_inside = int(ring_sizes(index, self.num_rings).sum())
        # Taps outside the circle read an extra, always-zero weight column.
        self.register_buffer("ring_map", torch.where(index == OUTSIDE, self.num_rings, index), persistent=False)
        masks = torch.stack([(index == b) for b in range(self.num_rings)]).unsqueeze(1)
        self.register_buffer("ring_masks", masks.to(dtype or torch.get_default_dtype()), persistent=False)
        factory = {"device": device, "dtype": dtype}
        w_shape = (in_channels, out_channels // groups) if transposed else (out_channels, in_channels // groups)
        self.weight = nn.Parameter(torch.empty(*w_shape, self.num_rings, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._fan_in = (w_shape[1] * taps_inside) if not transposed else (out_channels // groups * taps_inside)
        self._band_boxes = _band_boxes(index, self.num_rings)
        self._band_filter_cache: dict[tuple, torch.Tensor] = {}
        band_taps = [math.prod(2 * e + 1 for e in box) if box else 0 for box in self._band_boxes]
        # The automatic choice, for inference and for training (forward+backward); both paths give the same result.
        costs = (in_channels, out_channels, groups, self.num_rings, math.prod(size))
        self._auto_decomposed_eval = not transposed and decomposition_pays_off(*costs, band_taps=band_taps)
        self._auto_decomposed_train = not transposed and decomposition_pays_off(
            *costs, band_taps=band_taps, training=True
        )
        self._cache_key: tuple | None = None
        self._cache: torch.Tensor | None = None
        self.reset_parameters()

    def _resolve_padding(self, padding: Sequence[int] | int | str) -> tuple[int, ...]:
        if isinstance(padding, str):
            if padding == "valid":
                return (0,) * self.spatial_dims
            if padding != "same" or self.transposed:
                raise ValueError(f"padding must be 'same', 'valid' or ints, got {padding!r}.")
            if any(s != 1 for s in self.stride):
                raise ValueError(f"padding='same' needs stride 1 (as torch.nn.Conv), got stride={self.stride}.")
            # Odd kernels make 'same' padding symmetric: (k - 1) * d / 2 on both sides.
            return tuple((k - 1) // 2 * d for k, d in zip(self.kernel_size, self.dilation))
        return _tuple(padding, self.spatial_dims, "padding")

    def reset_parameters(self) -> None:
        """Initialise as ``torch.nn.Conv`` does, but with the true fan-in (taps inside the circle)."""
        bound = 1.0 / math.sqrt(self._fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def dense_kernel(self) -> torch.Tensor:
        """Expand the band weights into a dense kernel of shape ``weight.shape[:2] + kernel_size``."""
        return self._expand(self.weight)

    def _expand(self, weight: torch.Tensor) -> torch.Tensor:
        return F.pad(weight, (0, 1))[:, :, self.ring_map]

    @torch.jit.unused
    def _cached_dense_kernel(self) -> torch.Tensor:
        w = self.weight
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and w.requires_grad):
            return self.dense_kernel()
        key = (w._version, w.data_ptr(), w.device, w.dtype, self.ring_map.data_ptr())
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.dense_kernel()
            self._cache_key = key
        return self._cache

    def _kernel(self) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.dense_kernel()
        return self._cached_dense_kernel()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                "SRE convolution: input must have {} dims (batch, channels, {} spatial), got shape {}.".format(
                    self.spatial_dims + 2, self.spatial_dims, list(x.shape)
                )
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                "SRE convolution: input must have in_channels={} channels (dim 1), got shape {}.".format(
                    self.in_channels, list(x.shape)
                )
            )

    def _pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        if self.padding_mode == "zeros":
            return x, list(self.padding)
        pad: list[int] = []
        for p in self.padding[::-1]:
            pad += [p, p]
        return F.pad(x, pad, mode=self.padding_mode), [0] * self.spatial_dims

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: list[int], padding: list[int],
              dilation: list[int], groups: int) -> torch.Tensor:
        if self.spatial_dims == 1:
            return F.conv1d(x, w, b, stride, padding, dilation, groups)
        if self.spatial_dims == 2:
            return F.conv2d(x, w, b, stride, padding, dilation, groups)
        return F.conv3d(x, w, b, stride, padding, dilation, groups)

    def use_decomposed(self) -> bool:
        """Whether a forward call runs the ring-decomposed path: ``path``, or for ``"auto"`` the CPU cost model's
        choice for training (autograd enabled) or inference (:func:`decomposition_pays_off`), and the dense path on
        accelerators."""
        if self.path == "auto":
            if self.weight.device.type != "cpu":
                # Measured on an H100: cuDNN runs the dense kernel on tensor cores 1.5-4x faster than the
                # decomposition's depthwise filters and batched products, at every SRE-ResNet-18 layer shape.
                return False
            return self._auto_decomposed_train if torch.is_grad_enabled() else self._auto_decomposed_eval
        return self.path == "decomposed"

    def _bands_in_use(self) -> list[int]:
        bands: list[int] = []
        for band in range(self.num_rings):
            if len(self._band_boxes[band]) > 0:
                bands.append(band)
        return bands

    def _band_padding(self, band: int, padding: list[int]) -> list[int]:
        """Signed padding of band ``band``'s filter (its box is smaller than the kernel: pad less, or crop)."""
        box = self._band_boxes[band]
        return [padding[a] - (self.kernel_size[a] // 2 - box[a]) * self.dilation[a] for a in range(self.spatial_dims)]

    def _make_band_filters(self, band: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
        """Band ``band``'s 0/1 mask cropped to its box, repeated for ``channels``: ``(channels, 1, *k_b)``."""
        mask = self.ring_masks[band : band + 1]
        box = self._band_boxes[band]
        for axis in range(self.spatial_dims):
            mask = mask.narrow(2 + axis, self.kernel_size[axis] // 2 - box[axis], 2 * box[axis] + 1)
        shape = [channels, 1]
        for axis in range(self.spatial_dims):
            shape.append(mask.shape[2 + axis])
        return mask.to(dtype).expand(shape).contiguous()

    @torch.jit.unused
    def _cached_band_filters(self, band: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
        # The filters are fixed: keep them, so that the convolution need not copy an expanded view on every call
        # (but leave the module untouched while torch.compile / torch.export trace it).
        if torch.compiler.is_compiling():
            return self._make_band_filters(band, channels, dtype)
        key = (band, channels, dtype, self.ring_masks.device)
        filters = self._band_filter_cache.get(key)
        if filters is None:
            filters = self._band_filter_cache[key] = self._make_band_filters(band, channels, dtype)
        return filters

    def _band_filters(self, band: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._make_band_filters(band, channels, dtype)
        return self._cached_band_filters(band, channels, dtype)

    def _ring_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]
    ) -> torch.Tensor:
        """Decomposed forward on a channels-last ``x`` without autograd: sum one band at a time and fold it into the
        output rows with a (grouped) matrix product, so only one band-sum map of one batch chunk is alive at once."""
        groups, out_channels, in_per_group = self.groups, weight.shape[0], weight.shape[1]
        stride, dilation = list(self.stride), list(self.dilation)
        # TorchScript reads neither the thread count nor module constants: scripted inference runs in one chunk.
        budget = 0 if torch.jit.is_scripting() else _cpu_chunk_bytes()
        bands = self._bands_in_use()
        filters = [self._band_filters(band, x.shape[1], x.dtype) for band in bands]
        paddings = [self._band_padding(band, padding) for band in bands]
        # (groups, in/groups, out/groups) per band: the mixing matrices, from one contiguous copy of the band-major
        # weight (a band's strided slice would be copied by every product)
        by_band = weight.permute(2, 0, 1).contiguous()
        mixes = [by_band[band].view(groups, -1, in_per_group).transpose(1, 2) for band in bands]
        out = torch.empty(0)
        rows = out
        for start, stop in _batch_chunks(x, max(x.shape[1], out_channels), budget):
            target = out
            for i in range(len(bands)):
                sums = _band_sum(x[start:stop], filters[i], stride, paddings[i], dilation)
                if i == 0:
                    if start == 0:  # the first band sum tells the output size
                        size = [x.shape[0], out_channels] + list(sums.shape[2:])
                        # Channels-last storage, but a tensor of its own rather than a view of one, so that callers
                        # (a residual add) may update it in place even when it is a custom autograd output.
                        out = torch.empty_strided(size, _channels_last_strides(size), dtype=x.dtype, device=x.device)
                        rows = out.movedim(1, -1).view(-1, out_channels)
                    voxels = sums[:1, :1].numel()
                    target = _groups(rows[start * voxels : stop * voxels], groups)
                    torch.bmm(_groups(_rows(sums), groups), mixes[i], out=target)
                else:
                    target.baddbmm_(_groups(_rows(sums), groups), mixes[i])
        if bias is not None:
            rows.add_(bias)
        return out

    def _needs_grad(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        if not torch.is_grad_enabled():
            return False
        if x.requires_grad or weight.requires_grad:
            return True
        if bias is not None:
            return bias.requires_grad
        return False

    @torch.jit.unused
    def _forward_ring_autograd(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int]
    ) -> torch.Tensor:
        return _RingDecomposedConv.apply(x, weight, bias, self, padding)

    def _forward_decomposed(self, x: torch.Tensor, padding: list[int]) -> torch.Tensor:
        """Portable form of the decomposed path (standard convolutions only) for TorchScript and tracing."""
        batch, channels = x.shape[0], x.shape[1]
        # Every channel is summed over each band by one shared 0/1 filter bank: treat channels as batch entries.
        sums = self._conv(
            x.reshape((batch * channels, 1) + x.shape[2:]), self.ring_masks.to(x.dtype), None,
            list(self.stride), padding, list(self.dilation), 1,
        )
        sums = sums.reshape((batch, channels * self.num_rings) + sums.shape[2:])
        mix = self.weight.reshape((self.out_channels, -1) + (1,) * self.spatial_dims)
        return self._conv(sums, mix, self.bias, [1] * self.spatial_dims, [0] * self.spatial_dims,
                          [1] * self.spatial_dims, self.groups)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, num_rings={self.num_rings}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.transposed and any(p != 0 for p in self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.path != "auto":
            s += f", path={self.path!r}"
        return s


class SREConv(_SREConvNd):
    """SRE convolution in MONAI style (``spatial_dims`` first).

    The kernel is radially symmetric: taps at the same rounded distance from the centre share one weight, so the
    layer commutes exactly with 90-degree rotations and flips of the grid (stride 1, symmetric padding) and nearly
    with any rotation.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: odd kernel size, one int or one per axis (anisotropic sizes use a normalised distance).
        stride: convolution stride.
        padding: ints, ``"same"`` or ``"valid"``; ``None`` (default) pads ``(k - 1) / 2 * dilation`` on each side,
            which keeps the size at stride 1 and stays symmetric at any stride.
        dilation: spacing between kernel taps.
        groups: blocked connections from input to output channels.
        bias: add a learnable bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        num_rings: number of distance bands; ``None`` gives ``max(k) // 2 + 1`` one-pixel rings.
        path: ``"auto"`` (the cost model's choice, for training and for inference), ``"dense"`` or ``"decomposed"``
            execution; all give the same result to float tolerance.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Raises:
        ValueError: for an even kernel size, ``groups`` not dividing the channels, ``num_rings < 1`` or an unknown
            ``padding_mode``/``path``; at call time for an input of the wrong rank or channel count.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | str | None = None,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        num_rings: int | None = None,
        path: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        size = normalize_kernel_size(kernel_size, spatial_dims)
        if padding is None:
            d = _tuple(dilation, spatial_dims, "dilation")
            padding = tuple((k - 1) // 2 * di for k, di in zip(size, d))
        super().__init__(
            spatial_dims, in_channels, out_channels, size, stride, padding, dilation, groups, bias, padding_mode,
            num_rings, False, 0, path, device, dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` of shape ``(batch, in_channels, *spatial)``."""
        self._check_input(x)
        x, padding = self._pad_input(x)
        if self.use_decomposed():
            needs_grad = self._needs_grad(x, self.weight, self.bias)
            if torch.jit.is_tracing() or (torch.jit.is_scripting() and needs_grad):
                # exported graphs and scripted training: standard, differentiable operators only
                return self._forward_decomposed(x, padding)
            if needs_grad and not torch.jit.is_scripting():
                return self._forward_ring_autograd(x, self.weight, self.bias, padding)
            return self._ring_forward(_channels_last(x), self.weight, self.bias, padding)
        return self._conv(x, self._kernel(), self.bias, list(self.stride), padding, list(self.dilation), self.groups)

    @torch.jit.unused
    def forward_affine(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``forward(x) * scale + shift`` per output channel, with the affine folded into the band weights and bias.

        This is how an inference-mode BatchNorm after the layer costs no pass of its own: the folded weights are a
        few thousand numbers, recomputed on every call, so they always follow the parameters and the running
        statistics, and gradients reach the layer, ``scale`` and ``shift`` as through the unfolded pair.

        Args:
            x: input of shape ``(batch, in_channels, *spatial)``.
            scale: per-output-channel factor, shape ``(out_channels,)``.
            shift: per-output-channel offset, shape ``(out_channels,)``.

        Returns:
            the convolved, scaled and shifted ``x``.
        """
        self._check_input(x)
        weight = self.weight * scale.view(-1, 1, 1)
        bias = shift if self.bias is None else self.bias * scale + shift
        x, padding = self._pad_input(x)
        if not self.use_decomposed():
            return self._conv(x, self._expand(weight), bias, list(self.stride), padding, list(self.dilation),
                              self.groups)
        if self._needs_grad(x, weight, bias):
            return self._forward_ring_autograd(x, weight, bias, padding)
        return self._ring_forward(_channels_last(x), weight, bias, padding)


class _TorchStyleSREConv(SREConv):
    """SREConv with the exact argument list of ``torch.nn.ConvNd`` (plus ``num_rings`` and ``path``)."""

    _spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | str = 0,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        num_rings: int | None = None,
        path: str = "auto",
    ) -> None:
        super().__init__(self._spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, num_rings, path, device, dtype)


class SREConv1d(_TorchStyleSREConv):
    """Drop-in SRE replacement of :class:`torch.nn.Conv1d` (same arguments, plus ``num_rings`` and ``path``)."""

    _spatial_dims = 1


class SREConv2d(_TorchStyleSREConv):
    """Drop-in SRE replacement of :class:`torch.nn.Conv2d` (same arguments, plus ``num_rings`` and ``path``)."""

    _spatial_dims = 2


class SREConv3d(_TorchStyleSREConv):
    """Drop-in SRE replacement of :class:`torch.nn.Conv3d` (same arguments, plus ``num_rings`` and ``path``)."""

    _spatial_dims = 3


class SREConvTranspose(_SREConvNd):
    """Transposed SRE convolution in MONAI style; output shapes match :class:`torch.nn.ConvTranspose1d/2d/3d`.

    The weight has torch's transposed layout ``(in_channels, out_channels / groups, num_rings)``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: odd kernel size, one int or one per axis.
        stride: stride of the transposed convolution.
        padding: implicit zero padding removed from each side of the output, as in torch.
        output_padding: extra size added to one side of the output, as in torch.
        groups: blocked connections from input to output channels.
        bias: add a learnable bias.
        dilation: spacing between kernel taps.
        padding_mode: only ``"zeros"``, as in torch.
        num_rings: number of distance bands; ``None`` gives ``max(k) // 2 + 1``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Raises:
        ValueError: for an even kernel size, ``groups`` not dividing the channels, ``num_rings < 1``, or an input of
            the wrong rank or channel count.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int = 0,
        output_padding: Sequence[int] | int = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Sequence[int] | int = 1,
        padding_mode: str = "zeros",
        num_rings: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            spatial_dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            num_rings, True, output_padding, "dense", device, dtype,
        )
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ValueError(
                    f"output_padding={self.output_padding} must be smaller than stride or dilation "
                    f"(stride={self.stride}, dilation={self.dilation})."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the transposed convolution to ``x`` of shape ``(batch, in_channels, *spatial)``."""
        self._check_input(x)
        w, b = self._kernel(), self.bias
        stride, padding, out_pad, dilation = list(self.stride), list(self.padding), list(self.output_padding), list(
            self.dilation
        )
        if self.spatial_dims == 1:
            return F.conv_transpose1d(x, w, b, stride, padding, out_pad, self.groups, dilation)
        if self.spatial_dims == 2:
            return F.conv_transpose2d(x, w, b, stride, padding, out_pad, self.groups, dilation)
        return F.conv_transpose3d(x, w, b, stride, padding, out_pad, self.groups, dilation)


class _TorchStyleSREConvTranspose(SREConvTranspose):
    """SREConvTranspose with the exact argument list of ``torch.nn.ConvTransposeNd`` (plus ``num_rings``)."""

    _spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int = 0,
        output_padding: Sequence[int] | int = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Sequence[int] | int = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        num_rings: int | None = None,
    ) -> None:
        super().__init__(self._spatial_dims, in_channels, out_channels, kernel_size, stride, padding, output_padding,
                         groups, bias, dilation, padding_mode, num_rings, device, dtype)


class SREConvTranspose1d(_TorchStyleSREConvTranspose):
    """Drop-in SRE replacement of :class:`torch.nn.ConvTranspose1d` (same arguments, plus ``num_rings``)."""

    _spatial_dims = 1


class SREConvTranspose2d(_TorchStyleSREConvTranspose):
    """Drop-in SRE replacement of :class:`torch.nn.ConvTranspose2d` (same arguments, plus ``num_rings``)."""

    _spatial_dims = 2


class SREConvTranspose3d(_TorchStyleSREConvTranspose):
    """Drop-in SRE replacement of :class:`torch.nn.ConvTranspose3d` (same arguments, plus ``num_rings``)."""

    _spatial_dims = 3
