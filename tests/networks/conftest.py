# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Helpers for the network tests: the rot90/flip symmetry group of the grid and non-trivial norm statistics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from monai_sre.transforms import full_grid_group


def _symmetric_copies(x: torch.Tensor) -> torch.Tensor:
    """All ``2^d * d!`` rot90/flip transforms of ``x`` (batch 1), stacked along the batch axis; identity first."""
    return torch.cat([g(x) for g in full_grid_group(x.dim() - 2)])


def _randomize_norms(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return net


@pytest.fixture
def symmetric_copies() -> Callable[[torch.Tensor], torch.Tensor]:
    """Function stacking the 2 (1D), 8 (2D) or 48 (3D) rot90/flip copies of a single input."""
    return _symmetric_copies


@pytest.fixture
def randomize_norms() -> Callable[..., nn.Module]:
    """Function giving every BatchNorm of a network non-trivial statistics."""
    return _randomize_norms


@pytest.fixture
def max_symmetry_error(symmetric_copies) -> Callable[[nn.Module, torch.Tensor], float]:
    """Function returning max |f(g x) - f(x)| / max |f(x)| over all symmetries g, in one batched eval forward."""

    def error(net: nn.Module, x: torch.Tensor) -> float:
        net.eval()
        with torch.no_grad():
            y = net(symmetric_copies(x))
        assert torch.isfinite(y).all()
        return float((y - y[:1]).abs().max() / y[0].abs().max())

    return error
