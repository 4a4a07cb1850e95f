# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE layers: ring geometry, SRE convolutions, inference BatchNorm folding, symmetry-preserving downsampling and the
gradient-norm activation."""

from __future__ import annotations

from monai_sre.layers.convert import convert_to_sre, find_symmetry_breakers, project_dense_kernel
from monai_sre.layers.gradient_norm import GradientNormActivation, gradient_norm, gradient_norm_activation
from monai_sre.layers.norm_folding import batch_norm_affine, conv_norm, sequential_conv_norm
from monai_sre.layers.pooling import DOWNSAMPLE_MODES, SymmetricDownsample, symmetric_output_size, symmetric_window
from monai_sre.layers.rings import OUTSIDE, num_rings_default, ring_index, ring_sizes
from monai_sre.layers.sre_conv import (
    BAND_SCALES,
    SREConv,
    SREConv1d,
    SREConv2d,
    SREConv3d,
    SREConvTranspose,
    SREConvTranspose1d,
    SREConvTranspose2d,
    SREConvTranspose3d,
    band_scale,
    decomposition_pays_off,
    set_band_scale_,
    upgrade_state_dict,
)

__all__ = [
    "OUTSIDE",
    "num_rings_default",
    "ring_index",
    "ring_sizes",
    "SREConv",
    "SREConv1d",
    "SREConv2d",
    "SREConv3d",
    "SREConvTranspose",
    "SREConvTranspose1d",
    "SREConvTranspose2d",
    "SREConvTranspose3d",
    "decomposition_pays_off",
    "BAND_SCALES",
    "band_scale",
    "set_band_scale_",
    "upgrade_state_dict",
    "gradient_norm",
    "GradientNormActivation",
    "gradient_norm_activation",
    "batch_norm_affine",
    "conv_norm",
    "sequential_conv_norm",
    "DOWNSAMPLE_MODES",
    "SymmetricDownsample",
    "symmetric_output_size",
    "symmetric_window",
    "convert_to_sre",
    "find_symmetry_breakers",
    "project_dense_kernel",
]
