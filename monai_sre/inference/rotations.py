# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotation check of one prediction: the model's class probabilities under the symmetries of the voxel grid.

An SRE model is invariant to the grid's rot90s, so its probabilities should not move at all; an ordinary CNN's
do. The 3D check uses the 24 proper rotations of the cube, the 2D check the 8 rotations and flips of the square.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["grid_symmetries", "symmetry_spread"]


def grid_symmetries(image: torch.Tensor, spatial_dims: int) -> list[torch.Tensor]:
    """The image under every rot90 symmetry of its grid, the identity first.

    Args:
        image: a tensor whose last ``spatial_dims`` axes are spatial, e.g. ``(C, H, W, D)`` or ``(B, C, H, W)``.
        spatial_dims: 3 for the 24 proper rotations of the cube, 2 for the 4 rotations of the square and their
            mirror images (8).

    Returns:
        the transformed tensors (24 or 8).

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3 or the tensor has too few axes.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if image.ndim < spatial_dims:
        raise ValueError(f"a {spatial_dims}D check needs at least {spatial_dims} axes, got shape {tuple(image.shape)}")
    axes = list(range(image.ndim - spatial_dims, image.ndim))
    if spatial_dims == 2:
        rotations = [torch.rot90(image, k, dims=axes) for k in range(4)]
        return rotations + [torch.flip(r, dims=[axes[-1]]) for r in rotations]

    def about(t: torch.Tensor, axis: int, k: int) -> torch.Tensor:
        return torch.rot90(t, k, dims=[a for a in axes if a != axes[axis]])

    # Point the first axis each of the 6 ways (stay, flip over, or turn onto the other two axes), then spin 4 times.
    orientations = [
        (image, 0),
        (about(image, 1, 2), 0),
        (about(image, 1, 1), 2),
        (about(image, 1, -1), 2),
        (about(image, 2, 1), 1),
        (about(image, 2, -1), 1),
    ]
    return [about(t, spin_axis, k) for t, spin_axis in orientations for k in range(4)]


def symmetry_spread(
    predict_proba: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, spatial_dims: int
) -> dict[str, float]:
    """How much the class probabilities move under the grid's symmetries.

    Args:
        predict_proba: maps a batch ``(N, C, *spatial)`` to class probabilities ``(N, K)``.
        image: one preprocessed image ``(C, *spatial)``.
        spatial_dims: 2 or 3.

    Returns:
        ``rotation_spread``: the largest difference of any class probability between two symmetric copies (0 for
        an invariant model); ``rotation_agreement``: the fraction of copies whose predicted class is the
        unrotated image's.
    """
    batch = torch.stack(grid_symmetries(image, spatial_dims))
    probs = predict_proba(batch)
    spread = (probs.max(dim=0).values - probs.min(dim=0).values).max()
    agreement = (probs.argmax(dim=1) == probs[0].argmax()).float().mean()
    return {"rotation_spread": float(spread), "rotation_agreement": float(agreement)}
