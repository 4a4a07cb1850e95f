# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Downsampling that commutes with 90-degree rotations and flips of the grid, for odd as well as even sizes.

A stride-``s`` pooling anchored at index 0 (``nn.AvgPool2d(2)``, ``nn.MaxPool2d(3, 2, 1)``) samples a grid that is
symmetric about the image centre only for some sizes: ``AvgPool(2)`` on 28 px gives 14 then 7, and on 7 its windows
``{0,1}, {2,3}, {4,5}`` leave index 6 out, so a flipped image is pooled differently and exact invariance is lost.

:class:`SymmetricDownsample` instead centres the ``ceil(n / s)`` sampling points on the image centre along every axis
and gives each one a window of the same length, ``s`` or ``s + 1`` (whichever has the parity that lets the window
be centred on its sampling point). Windows reaching past the border are padded symmetrically and the padding is not
counted (average) or never wins (max). Every flip maps the set of windows onto itself, and every axis permutation
maps the windows of an ``(a, b)`` image onto those of the ``(b, a)`` image, so the downsampling is exactly
equivariant to all rot90/flip symmetries of the input, for any size. For stride 2:

- even ``n``: windows ``{0, 1}, {2, 3}, ..., {n - 2, n - 1}`` (length 2, no padding), output ``n / 2``;
- odd ``n``: windows centred on ``0, 2, ..., n - 1`` (length 3, padding 1), output ``(n + 1) / 2``.

The output size is always ``ceil(n / s)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_sre.layers.rings import per_axis

__all__ = ["SymmetricDownsample", "symmetric_window", "symmetric_output_size", "DOWNSAMPLE_MODES"]

#: Pooling modes of :class:`SymmetricDownsample`.
DOWNSAMPLE_MODES = ("avg", "max")


def symmetric_window(size: int, stride: int) -> tuple[int, int]:
    """Window length and padding of a stride-``stride`` pooling whose windows are symmetric about the centre.

    Args:
        size: input length along the axis (>= 1).
        stride: downsampling factor along the axis (>= 1).

    Returns:
        ``(window, padding)``: pooling with this kernel size, ``stride`` and ``padding`` (on both sides) yields
        ``ceil(size / stride)`` windows placed symmetrically about the centre of the axis.

    Raises:
        ValueError: when ``size`` or ``stride`` is smaller than 1.
    """
    if size < 1 or stride < 1:
        raise ValueError(f"symmetric_window needs size >= 1 and stride >= 1, got size={size}, stride={stride}.")
    out = -(-size // stride)
    # The first and last sampling points sit (size - 1 - stride * (out - 1)) / 2 from the borders; ``rest`` is
    # that span plus one. A window centred on a half-integer point needs an even length, on an integer an odd one.
    rest = size - stride * (out - 1)
    window = stride if (stride - rest) % 2 == 0 else stride + 1
    return window, (window - rest) // 2


def symmetric_output_size(size: int, stride: int) -> int:
    """Output length of :class:`SymmetricDownsample` along one axis: ``ceil(size / stride)``.

    Args:
        size: input length along the axis.
        stride: downsampling factor along the axis.

    Returns:
        the output length.
    """
    return -(-size // stride)


class SymmetricDownsample(nn.Module):
    """Average or max pooling by ``stride`` whose windows are placed symmetrically about the image centre.

    Drop-in replacement of a strided ``AvgPool``/``MaxPool`` (or of the sub-sampling of a strided convolution) that
    keeps exact equivariance to rot90 and flips for every input size; see the module docstring for the window rule.
    The output size is ``ceil(n / stride)`` per axis. With ``stride=1`` along an axis that axis is left untouched.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        stride: downsampling factor, one int or one per axis.
        mode: ``"avg"`` (mean over the in-image voxels of each window) or ``"max"``.

    Raises:
        ValueError: for ``spatial_dims`` not in 1-3, a stride < 1, an unknown ``mode``, or (at call time) an input
            whose rank is not ``spatial_dims + 2``.
    """

    __constants__ = ["spatial_dims", "mode"]

    def __init__(self, spatial_dims: int, stride: Sequence[int] | int = 2, mode: str = "avg") -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        strides = per_axis(stride, spatial_dims, "stride")
        if any(s < 1 for s in strides):
            raise ValueError(
                f"stride must be a positive int or {spatial_dims} positive ints for spatial_dims={spatial_dims}, "
                f"got {stride!r}."
            )
        if mode not in DOWNSAMPLE_MODES:
            raise ValueError(f"mode must be one of {DOWNSAMPLE_MODES}, got {mode!r}.")
        self.spatial_dims = spatial_dims
        self.stride = strides
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample ``x`` of shape ``(batch, channels, *spatial)`` to ``ceil(spatial / stride)``."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"SymmetricDownsample: input must have {self.spatial_dims + 2} dims (batch, channels, "
                f"{self.spatial_dims} spatial), got shape {list(x.shape)}."
            )
        stride = list(self.stride)
        kernel: list[int] = []
        padding: list[int] = []
        for i in range(self.spatial_dims):
            w, p = symmetric_window(int(x.shape[i + 2]), stride[i])
            kernel.append(w)
            padding.append(p)
        if self.spatial_dims == 3 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last_3d):
            return self._pool_channels_last_3d(x, kernel, stride, padding)
        if self.spatial_dims == 2:
            return self._pool2d(x, kernel, stride, padding)
        if self.mode == "max":
            if self.spatial_dims == 1:
                return F.max_pool1d(x, kernel, stride, padding)
            return F.max_pool3d(x, kernel, stride, padding)
        if self.spatial_dims == 1:
            return F.avg_pool1d(x, kernel, stride, padding, count_include_pad=False)
        return F.avg_pool3d(x, kernel, stride, padding, count_include_pad=False)

    def _pool2d(self, x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int]) -> torch.Tensor:
        if self.mode == "max":
            return F.max_pool2d(x, kernel, stride, padding)
        return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=False)

    def _pool_channels_last_3d(
        self, x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int]
    ) -> torch.Tensor:
        """Pool a channels-last volume as two channels-last 2D poolings, over (H, W) and then over D, and return it
        channels-last. ``avg_pool3d``/``max_pool3d`` have no channels-last CPU kernel (3-4x slower on such input,
        and the next SRE convolution would copy their output back). Windows are boxes, so the mean over the
        in-image voxels of a box (and the max) factor into the two steps exactly."""
        b, c, d = x.shape[0], x.shape[1], x.shape[2]
        # (b * d, c, h, w) with channels innermost: a view of the same memory
        planes = x.permute(0, 2, 3, 4, 1).reshape(b * d, x.shape[3], x.shape[4], c).permute(0, 3, 1, 2)
        planes = self._pool2d(planes, kernel[1:], stride[1:], padding[1:])
        h, w = planes.shape[2], planes.shape[3]
        depth = planes.permute(0, 2, 3, 1).reshape(b, d, h * w, c).permute(0, 3, 1, 2)  # (b, c, d, h * w)
        depth = self._pool2d(depth, [kernel[0], 1], [stride[0], 1], [padding[0], 0])
        return depth.permute(0, 2, 3, 1).reshape(b, depth.shape[2], h, w, c).permute(0, 4, 1, 2, 3)

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, stride={self.stride}, mode={self.mode!r}"
