# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE convolutions: radially symmetric kernels with one learnable weight per distance band.

Two execution paths give the same result (to float tolerance):

- ``"dense"`` expands the band weights into a full kernel by indexing with the band map (a gather, whose backward is
  a scatter-add) and runs one ``F.convNd``; it costs ``Cin/g * Cout * k^d`` multiply-adds per output voxel.
- ``"decomposed"`` first sums every input channel over each band (a fixed 0/1 filter bank, not learned) and then
  mixes bands and channels with a 1x1 convolution: ``Cin * n * k^d + Cin/g * n * Cout`` multiply-adds, far less for
  large kernels and many channels.

``path="auto"`` (default) picks the cheaper one per call from the input shape (:func:`decomposition_pays_off`).
In inference (no autograd needed for the weight) the dense kernel is cached; the cache is keyed on the weight's
version counter, storage, device and dtype, so ``load_state_dict``, in-place updates and ``.to()`` all invalidate
it, and it never holds an autograd graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
# The band sums run as a single-input-channel convolution, which reaches a fraction of the throughput of a dense
# GEMM-backed convolution on CPU and GPU; the cost model charges its multiply-adds at this factor.
_BAND_SUM_COST_FACTOR = 4.0


def _tuple(value: Sequence[int] | int, spatial_dims: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(f"{name} must be an int or a sequence of {spatial_dims} ints, got {value!r}.")
    return out


def decomposition_pays_off(
    in_channels: int, out_channels: int, groups: int, num_rings: int, kernel_taps: int
) -> bool:
    """Cost model of the execution paths: is the ring-decomposed path cheaper than the dense one?

    Args:
        in_channels: input channels.
        out_channels: output channels.
        groups: convolution groups.
        num_rings: number of bands.
        kernel_taps: taps of the dense kernel (``prod(kernel_size)``).

    Returns:
        True when the decomposed path needs fewer (weighted) multiply-adds per output voxel.
    """
    dense = in_channels // groups * out_channels * kernel_taps
    decomposed = _BAND_SUM_COST_FACTOR * in_channels * num_rings * kernel_taps + in_channels // groups * num_rings * out_channels
    return decomposed < dense


class _SREConvNd(nn.Module):
    """Shared implementation of the SRE convolutions (forward and transposed)."""

    __constants__ = ["spatial_dims", "in_channels", "out_channels", "groups", "num_rings", "padding_mode", "path"]

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
        self._auto_decomposed = not transposed and decomposition_pays_off(
            in_channels, out_channels, groups, self.num_rings, math.prod(size)
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
        return F.pad(self.weight, (0, 1))[:, :, self.ring_map]

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
        """Whether a forward call runs the ring-decomposed path (``path``, or the cost model for ``"auto"``)."""
        if self.path == "auto":
            return self._auto_decomposed
        return self.path == "decomposed"

    def _forward_decomposed(self, x: torch.Tensor, padding: list[int]) -> torch.Tensor:
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
        path: ``"auto"`` (cost model), ``"dense"`` or ``"decomposed"`` execution.
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
            return self._forward_decomposed(x, padding)
        return self._conv(x, self._kernel(), self.bias, list(self.stride), padding, list(self.dilation), self.groups)


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
