# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Class probabilities from a classifier's logits, in float64: the one softmax/sigmoid of the bundle evaluation
(:func:`monai_sre.evaluation.scores_from_logits`), ``monai-sre predict`` and the bundles' ``run inferring``.

Why float64 and not MONAI's :class:`~monai.transforms.Activationsd`: that transform converts its input to float32
before the softmax (``convert_data_type(..., dtype=torch.float)``), whatever dtype it is given. float32 ties confident
probabilities (two BreastMNIST test images of the 2D bundle's 0.9.0 weights at 0.999995 both) and rounds them by up to
6e-8, so the AUC of ``run inferring``'s rows was 0.8593 against the evaluation's 0.8592 for the same weights and images.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import MapTransform

__all__ = ["ClassProbabilitiesd", "class_probabilities"]


def class_probabilities(logits: torch.Tensor, multi_label: bool = False, dim: int = -1) -> torch.Tensor:
    """Softmax over the classes, or a sigmoid per output, computed in float64.

    A sigmoid is used for multi-label outputs and for a single-logit binary model (one output along ``dim``); a
    softmax otherwise.

    Args:
        logits: raw network outputs (any float dtype, any device); a MONAI ``MetaTensor`` becomes a plain tensor.
        multi_label: classes are independent flags.
        dim: the class axis.

    Returns:
        float64 probabilities of ``logits``' shape, on its device.

    Raises:
        ValueError: for a 0-d ``logits``.
    """
    z = torch.as_tensor(logits).as_subclass(torch.Tensor).double()
    if z.ndim == 0:
        raise ValueError("logits: expected at least one class axis, got a 0-d tensor")
    return torch.sigmoid(z) if multi_label or z.shape[dim] == 1 else torch.softmax(z, dim=dim)


class ClassProbabilitiesd(MapTransform):
    """Dictionary transform: per-sample logits ``(classes,)`` of ``keys`` become float64 class probabilities
    (:func:`class_probabilities` over axis 0), e.g. in an evaluator's postprocessing after decollation.

    Args:
        keys: keys of the logits.
        multi_label: classes are independent flags (sigmoid per class).
        allow_missing_keys: as in MONAI's dictionary transforms.
    """

    def __init__(self, keys: Sequence[Hashable] | Hashable, multi_label: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.multi_label = bool(multi_label)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = class_probabilities(d[key], self.multi_label, dim=0)
        return d
