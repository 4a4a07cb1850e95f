# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SRE segmentation networks: MONAI's ``BasicUNet`` and ``UNet`` with SRE kernels, exactly rot90/flip-equivariant.

Both builders take the arguments of the MONAI class they convert (plus the SRE ``kernel_size`` and ``num_rings``)
and return it converted by :func:`~monai_sre.layers.convert_to_sre` with fresh SRE weights: every convolution an
SRE convolution, every stride and max-pool a :class:`~monai_sre.layers.SymmetricDownsample`, every transposed
convolution nearest-neighbour upsampling followed by an SRE (or 1x1) convolution. In eval mode the segmentation
is then exactly equivariant, ``net(T x) = T net(x)``, under the 8 (2D) or 48 (3D) rot90/flip symmetries ``T``,
when every spatial size is divisible by the total downsampling factor (16 for ``BasicUNet``, the product of
``strides`` for ``UNet``): at other sizes MONAI's ``BasicUNet`` pads the upsampled map on one side only and
``UNet`` cannot concatenate its skip connections.

Usable as bundle ``_target_``: ``"monai_sre.networks.sre_basic_unet"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import BasicUNet, UNet

from monai_sre.layers.convert import convert_to_sre

__all__ = ["sre_basic_unet", "sre_unet"]


def sre_basic_unet(
    spatial_dims: int = 3,
    in_channels: int = 1,
    out_channels: int = 2,
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
    norm: str | tuple = ("instance", {"affine": True}),
    bias: bool = True,
    dropout: float | tuple = 0.0,
    upsample: str = "deconv",
    *,
    kernel_size: Sequence[int] | int | None = None,
    num_rings: int | None = None,
) -> BasicUNet:
    """MONAI's ``BasicUNet`` with SRE convolutions and symmetric down- and upsampling.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (classes).
        features: six channel counts, as MONAI's ``BasicUNet``.
        act: activation type and arguments.
        norm: feature normalization type and arguments.
        bias: whether the convolutions have a bias.
        dropout: dropout ratio.
        upsample: ``"deconv"`` (default; becomes nearest upsampling and a 1x1 convolution), ``"nontrainable"`` or
            ``"pixelshuffle"`` (not equivariant: reported in a warning).
        kernel_size: odd SRE kernel size of every convolution; None keeps MONAI's 3.
        num_rings: number of bands of the SRE kernels; None gives one-voxel rings.

    Returns:
        the converted ``BasicUNet``, output ``(batch, out_channels, *spatial)``.

    Raises:
        ValueError: for an even ``kernel_size`` or arguments MONAI's ``BasicUNet`` refuses.
    """
    net = BasicUNet(spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample)
    return convert_to_sre(net, kernel_size, num_rings, project_weights=False, replace_pooling=True)


def sre_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    kernel_size: Sequence[int] | int = 3,
    up_kernel_size: Sequence[int] | int = 3,
    num_res_units: int = 0,
    act: str | tuple = "PRELU",
    norm: str | tuple = "INSTANCE",
    dropout: float = 0.0,
    bias: bool = True,
    adn_ordering: str = "NDA",
    *,
    num_rings: int | None = None,
) -> UNet:
    """MONAI's ``UNet`` with SRE convolutions and symmetric down- and upsampling (same arguments, plus
    ``num_rings``).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels (classes).
        channels: channels of each level.
        strides: downsampling factor of each level (integers, the same along every axis for equivariance).
        kernel_size: odd convolution kernel size.
        up_kernel_size: odd kernel size of the upsampling convolutions.
        num_res_units: residual units per level.
        act: activation type and arguments.
        norm: feature normalization type and arguments.
        dropout: dropout ratio.
        bias: whether the convolutions have a bias.
        adn_ordering: order of activation, dropout and norm, as MONAI's ``UNet``.
        num_rings: number of bands of the SRE kernels; None gives one-voxel rings.

    Returns:
        the converted ``UNet``, output ``(batch, out_channels, *spatial)``.

    Raises:
        ValueError: for an even kernel size or arguments MONAI's ``UNet`` refuses.
    """
    net = UNet(spatial_dims, in_channels, out_channels, channels, strides, kernel_size, up_kernel_size,
               num_res_units, act, norm, dropout, bias, adn_ordering)
    return convert_to_sre(net, num_rings=num_rings, project_weights=False, replace_pooling=True)
