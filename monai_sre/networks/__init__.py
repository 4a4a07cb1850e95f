# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE networks: SREResNet and its builders, SRE segmentation networks (``sre_basic_unet``, ``sre_unet``); the
MedMNIST recipe names stay importable from here."""

from __future__ import annotations

from monai_sre.networks.classifier import (
    MODEL_TYPES,
    check_checkpoint,
    checkpoint_name,
    load_trained_classifiers,
    medmnist_classifier,
)
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
