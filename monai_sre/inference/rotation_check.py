# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Rotation check of one prediction: the model's class probabilities under the symmetries of the voxel grid.

An SRE model is invariant to the grid's rot90s, so its probabilities should not move at all; an ordinary CNN's
do. The 3D check uses the 24 proper rotations of the cube, the 2D check the 8 rotations and flips of the square:
the groups of :mod:`monai_sre.transforms.symmetry`, shared with the rotation-robustness evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from monai_sre.transforms.symmetry import grid_symmetries

__all__ = ["grid_symmetries", "symmetry_spread"]


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

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3 or ``image`` has too few axes.
    """
    batch = torch.stack(grid_symmetries(image, spatial_dims))
    probs = predict_proba(batch)
    spread = (probs.max(dim=0).values - probs.min(dim=0).values).max()
    agreement = (probs.argmax(dim=1) == probs[0].argmax()).float().mean()
    return {"rotation_spread": float(spread), "rotation_agreement": float(agreement)}
