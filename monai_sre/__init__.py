# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""monai_sre: SRE-Conv (Symmetric Rotation-Equivariant convolution) for MONAI.

Importing the package registers ``Conv["sreconv", dims]`` and ``Conv["sreconvtrans", dims]`` in MONAI's layer
factories (once per process).
"""

from __future__ import annotations

from monai_sre.layers import (
    SREConv,
    SREConv1d,
    SREConv2d,
    SREConv3d,
    SREConvTranspose,
    SREConvTranspose1d,
    SREConvTranspose2d,
    SREConvTranspose3d,
    SymmetricDownsample,
    convert_to_sre,
    find_symmetry_breakers,
    ring_index,
)
from monai_sre.networks import (
    SREResNet,
    SREResNetBlock,
    SREResNetBottleneck,
    sre_resnet10,
    sre_resnet18,
    sre_resnet34,
    sre_resnet50,
    sre_resnet101,
    sre_resnet152,
    sre_resnet200,
)
from monai_sre.registration import register_monai_layers

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "SREConv",
    "SREConv1d",
    "SREConv2d",
    "SREConv3d",
    "SREConvTranspose",
    "SREConvTranspose1d",
    "SREConvTranspose2d",
    "SREConvTranspose3d",
    "ring_index",
    "register_monai_layers",
    "SymmetricDownsample",
    "convert_to_sre",
    "find_symmetry_breakers",
    "SREResNet",
    "SREResNetBlock",
    "SREResNetBottleneck",
    "sre_resnet10",
    "sre_resnet18",
    "sre_resnet34",
    "sre_resnet50",
    "sre_resnet101",
    "sre_resnet152",
    "sre_resnet200",
]

register_monai_layers()
