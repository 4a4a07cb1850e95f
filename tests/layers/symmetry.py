# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The symmetry groups of the grid used by the equivariance tests: flips and axis permutations."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

__all__ = ["grid_symmetries"]


def grid_symmetries(spatial_dims: int) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """All symmetries of the square/cube acting on ``(B, C, *spatial)`` tensors: axis permutations times flips.

    2D gives the 8 symmetries of the square (rot90s and flips), 3D the 48 of the cube, 1D the identity and the flip.
    """
    out = []
    for perm in itertools.permutations(range(spatial_dims)):
        for flips in itertools.product((False, True), repeat=spatial_dims):
            dims = [2 + i for i, f in enumerate(flips) if f]

            def g(x: torch.Tensor, perm=perm, dims=dims) -> torch.Tensor:
                y = x.permute(0, 1, *[2 + p for p in perm])
                return y.flip(dims) if dims else y

            out.append((f"perm{perm}_flip{flips}", g))
    return out
