# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Registration of the SRE layers in MONAI's layer factories (``Conv["sreconv", dims]``)."""

from __future__ import annotations

from monai.networks.layers.factories import Conv

from monai_sre.layers.sre_conv import (
    SREConv1d,
    SREConv2d,
    SREConv3d,
    SREConvTranspose1d,
    SREConvTranspose2d,
    SREConvTranspose3d,
)

__all__ = ["register_monai_layers"]


def _sreconv_factory(dim: int) -> type:
    """SRE convolution layers in 1, 2 and 3 dimensions (``torch.nn.ConvNd`` arguments)."""
    return (SREConv1d, SREConv2d, SREConv3d)[dim - 1]


def _sreconvtrans_factory(dim: int) -> type:
    """Transposed SRE convolution layers in 1, 2 and 3 dimensions (``torch.nn.ConvTransposeNd`` arguments)."""
    return (SREConvTranspose1d, SREConvTranspose2d, SREConvTranspose3d)[dim - 1]


def register_monai_layers() -> None:
    """Add ``"sreconv"`` and ``"sreconvtrans"`` to MONAI's ``Conv`` factory; calling it again changes nothing.

    MONAI's factory overwrites silently and appends to its docstring on every registration, so the check keeps the
    registration process-global and single.
    """
    for name, factory in (("SRECONV", _sreconv_factory), ("SRECONVTRANS", _sreconvtrans_factory)):
        if name not in Conv.components:
            Conv.add_factory_callable(name.lower(), factory)
