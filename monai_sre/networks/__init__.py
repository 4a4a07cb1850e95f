# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE networks: SREResNet and its builders, SRE segmentation networks (``sre_basic_unet``, ``sre_unet``).

The MedMNIST recipe names that lived here (``medmnist_classifier``, ``checkpoint_name``, ``load_trained_classifiers``,
``MODEL_TYPES``, ``check_checkpoint``) stay importable from here, but are resolved only when asked for: the recipe
(:mod:`monai_sre.recipes`) sits above the networks it builds, so importing the networks never imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

from monai_sre.networks.sre_resnet import (
    SREResNet,
    SREResNetBlock,
    SREResNetBottleneck,
    default_kernel_sizes,
    sre_resnet10,
    sre_resnet18,
    sre_resnet34,
    sre_resnet50,
    sre_resnet101,
    sre_resnet152,
    sre_resnet200,
)
from monai_sre.networks.sre_unet import sre_basic_unet, sre_unet

__all__ = [
    "MODEL_TYPES",
    "check_checkpoint",
    "checkpoint_name",
    "load_trained_classifiers",
    "medmnist_classifier",
    "SREResNet",
    "SREResNetBlock",
    "SREResNetBottleneck",
    "default_kernel_sizes",
    "sre_resnet10",
    "sre_resnet18",
    "sre_resnet34",
    "sre_resnet50",
    "sre_resnet101",
    "sre_resnet152",
    "sre_resnet200",
    "sre_basic_unet",
    "sre_unet",
]

# Old public names of this package and the modules that now hold them (see the module docstring).
_MOVED = {
    "MODEL_TYPES": "monai_sre.recipes",
    "checkpoint_name": "monai_sre.recipes",
    "load_trained_classifiers": "monai_sre.recipes",
    "medmnist_classifier": "monai_sre.recipes",
    "check_checkpoint": "monai_sre.io.checkpoints",
}


def __getattr__(name: str) -> Any:
    """Resolve the MedMNIST recipe names that moved to :mod:`monai_sre.recipes` (PEP 562), on first use.

    Raises:
        AttributeError: for any other name, as for a plain module.
    """
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MOVED[name]), name)
