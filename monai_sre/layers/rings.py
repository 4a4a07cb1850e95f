# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Ring geometry of SRE kernels: which distance band ("ring") each kernel tap belongs to.

An SRE kernel shares one weight between all taps at the same (rounded) distance from the kernel centre. The band of a
tap is computed from the exact integer sum of squared offsets, so taps that map onto each other under an axis flip
or (for isotropic kernels) an axis permutation get bit-identical distances and therefore the same band. That makes
equivariance to 90-degree grid rotations and flips exact rather than approximate.

Default banding (``num_rings=None``) uses ``r + 1`` bands for a kernel of radius ``r = k // 2``: band ``b`` holds the
taps whose distance rounds to ``b`` (rings one pixel wide), and taps farther than ``r + 0.5`` (the corners of the
square) lie outside the circle and get :data:`OUTSIDE`. A custom ``num_rings = n`` spreads ``n`` equal-width bands
over the same disc. Anisotropic kernels such as ``(3, 7, 7)`` measure distance in units normalised per axis
(``offset_i * r_max / r_i``), so every axis reaches the full radius and all their taps inside the ellipsoid carry a
weight; they are equivariant only under the symmetries their shape has (flips, and swaps of equal-sized axes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

__all__ = [
    "OUTSIDE",
    "ring_index",
    "num_rings_default",
    "ring_sizes",
    "taps_inside",
    "normalize_kernel_size",
    "per_axis",
    "same_padding",
]

#: Band index given to taps outside the circle; they always carry a zero weight.
OUTSIDE = -1


def per_axis(value: Sequence[int] | int, spatial_dims: int, name: str = "value") -> tuple[int, ...]:
    """One int per spatial axis: an int repeated, or a sequence checked for length.

    Args:
        value: one int for every axis, or one int per axis.
        spatial_dims: number of spatial dimensions.
        name: argument name used in the error message.

    Returns:
        a tuple of ``spatial_dims`` ints.

    Raises:
        ValueError: when a sequence does not have ``spatial_dims`` entries.
    """
    out = (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(
            f"{name} must be one int or {spatial_dims} entries (one per axis) for spatial_dims={spatial_dims}, "
            f"got {value!r}."
        )
    return out


def same_padding(kernel_size: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size at stride 1 for odd kernels, the same on both sides: ``(k - 1) / 2 * dilation``.

    Args:
        kernel_size: odd kernel size per axis.
        dilation: dilation per axis.

    Returns:
        the padding per axis.
    """
    return tuple((int(k) - 1) // 2 * int(d) for k, d in zip(kernel_size, dilation))


def normalize_kernel_size(kernel_size: Sequence[int] | int, spatial_dims: int) -> tuple[int, ...]:
    """Expand and validate a kernel size.

    Args:
        kernel_size: one odd int for every axis, or one odd int per axis.
        spatial_dims: number of spatial dimensions (1, 2 or 3).

    Returns:
        the kernel size as a tuple of ``spatial_dims`` odd positive ints.

    Raises:
        ValueError: when ``spatial_dims`` is not 1, 2 or 3, the length does not match, or a size is even or < 1.
    """
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    size = per_axis(kernel_size, spatial_dims, "kernel_size")
    for k in size:
        if k < 1 or k % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd and positive (an SRE kernel needs a centre tap), got {size}; "
                "use e.g. 3, 5, 7 or 9."
            )
    return size


def num_rings_default(kernel_size: Sequence[int] | int, spatial_dims: int) -> int:
    """Default band count ``max(k) // 2 + 1``: one band per integer radius up to the kernel radius.

    Args:
        kernel_size: odd kernel size (int or per axis).
        spatial_dims: number of spatial dimensions.

    Returns:
        the number of bands.
    """
    return max(normalize_kernel_size(kernel_size, spatial_dims)) // 2 + 1


def _squared_distances(size: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """Squared tap distances in integer units of ``(prod r_i)^2 / r_i^2`` so they stay exact, plus that unit."""
    radii = [k // 2 for k in size]
    r_max = max(radii)
    if r_max == 0:
        return torch.zeros(size, dtype=torch.float64), 1
    # Scale each axis so that its last tap sits at r_max: offset * r_max / r_i. To keep exact arithmetic, use the
    # common denominator D = lcm of the non-zero radii and integer factors D / r_i.
    nonzero = [r for r in radii if r > 0]
    denom = math.lcm(*nonzero)
    grids = torch.meshgrid(
        *[torch.arange(-r, r + 1, dtype=torch.int64) * (denom // r if r > 0 else 0) for r in radii], indexing="ij"
    )
    sq = sum(g * g for g in grids)
    # distance in pixels = sqrt(sq) * r_max / denom
    return sq.to(torch.float64) * (r_max * r_max) / (denom * denom), r_max


def ring_index(
    kernel_size: Sequence[int] | int, spatial_dims: int, num_rings: int | None = None
) -> torch.Tensor:
    """Band index of every tap of an SRE kernel.

    Args:
        kernel_size: odd kernel size, one int or one per axis.
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        num_rings: number of bands; ``None`` gives ``max(k) // 2 + 1`` one-pixel rings.

    Returns:
        an int64 tensor of shape ``kernel_size`` with values in ``[0, num_rings)`` inside the circle and
        :data:`OUTSIDE` for the taps outside it.

    Raises:
        ValueError: for an even or non-positive kernel size, or ``num_rings < 1``.
    """
    size = normalize_kernel_size(kernel_size, spatial_dims)
    if num_rings is not None and int(num_rings) < 1:
        raise ValueError(f"num_rings must be >= 1, got {num_rings}.")
    # Deep networks build many layers of the same few shapes; the map is pure, so compute each once.
    return _ring_index(size, None if num_rings is None else int(num_rings)).clone()


# Safe module-level memo: a pure function of hashable arguments, and callers only ever get a clone of the tensor.
@lru_cache(maxsize=64)
def _ring_index(size: tuple[int, ...], num_rings: int | None) -> torch.Tensor:
    n_default = num_rings_default(size, len(size))
    n = n_default if num_rings is None else num_rings
    sq, r_max = _squared_distances(size)
    dist = sq.sqrt()
    inside = dist <= r_max + 0.5
    if r_max == 0:
        band = torch.zeros(size, dtype=torch.int64)
    elif n == n_default:
        band = torch.floor(dist + 0.5).to(torch.int64)
    else:
        # n equal-width bands over the disc of radius r_max + 0.5; the tiny offset keeps taps that sit exactly on a
        # band edge in the same band for every symmetric copy (their distances are bit-identical anyway).
        band = torch.floor(dist / (r_max + 0.5) * n + 1e-9).clamp_(max=n - 1).to(torch.int64)
    return torch.where(inside, band, torch.full_like(band, OUTSIDE))


def ring_sizes(index: torch.Tensor, num_rings: int) -> torch.Tensor:
    """Number of taps in each band.

    Args:
        index: band map from :func:`ring_index`.
        num_rings: number of bands.

    Returns:
        int64 tensor of shape ``(num_rings,)``; a band may be empty when ``num_rings`` exceeds the distinct radii.
    """
    inside = index[index != OUTSIDE]
    return torch.bincount(inside.flatten(), minlength=num_rings)


def taps_inside(kernel_size: Sequence[int] | int, spatial_dims: int, num_rings: int | None = None) -> int:
    """Taps of an SRE kernel that carry a weight (inside the circle): the kernel's share of a layer's fan-in/out.

    Args:
        kernel_size: odd kernel size, one int or one per axis.
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        num_rings: number of bands; ``None`` gives one-pixel rings.

    Returns:
        the number of taps inside the circle.

    Raises:
        ValueError: as :func:`ring_index`.
    """
    index = ring_index(kernel_size, spatial_dims, num_rings)
    return int((index != OUTSIDE).sum())
