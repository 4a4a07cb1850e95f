# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""MONAI's own ResNet test cases (``tests/networks/nets/test_resnet.py`` of MONAI 1.6, the same inputs, arguments
and expected shapes) run against ``SREResNet`` and the ``sre_resnetN`` builders: shapes, ``pretrained=False`` and a
local checkpoint ``pretrained=<path>``, TorchScript and ``torch.export``; and the builders' parameter table.

The fast suite runs every case with SRE-ResNet-10 and the 1D cases with bottleneck networks; the rest is marked
slow.
"""

from __future__ import annotations

import io

import pytest
import torch
from monai.networks.nets.resnet import ResNetBlock

from monai_sre.networks import SREResNet, SREResNetBlock, SREResNetBottleneck, sre_resnet
from monai_sre.networks.sre_resnet import SRE_RESNET_PARAMS

DEPTHS = (10, 18, 34, 50, 101, 152, 200)

CASE_1 = ({"pretrained": False, "spatial_dims": 3, "n_input_channels": 2, "num_classes": 3, "conv1_t_size": 7,
           "conv1_t_stride": (2, 2, 2)}, (3, 2, 32, 64, 48), (3, 3))
CASE_2 = ({"pretrained": False, "spatial_dims": 2, "n_input_channels": 1, "num_classes": 3, "conv1_t_size": [7, 7],
           "conv1_t_stride": [2, 2]}, (2, 1, 32, 64), (2, 3))
CASE_2_A = ({"pretrained": False, "spatial_dims": 2, "n_input_channels": 1, "num_classes": 3, "shortcut_type": "A",
             "conv1_t_size": (7, 7), "conv1_t_stride": 2}, (2, 1, 32, 64), (2, 3))
CASE_3 = ({"pretrained": False, "spatial_dims": 1, "n_input_channels": 2, "num_classes": 3, "conv1_t_size": [3],
           "conv1_t_stride": 1, "act": ("relu", {"inplace": False})}, (1, 2, 32), (1, 3))
CASE_3_A = ({"pretrained": False, "spatial_dims": 1, "n_input_channels": 2, "num_classes": 3, "shortcut_type": "A"},
            (1, 2, 32), (1, 3))
CASE_4 = ({"pretrained": False, "spatial_dims": 2, "n_input_channels": 1, "num_classes": 3, "feed_forward": False},
          (2, 1, 32, 64), ((2, 512), (2, 2048)))
BUILDER_CASES = {"1": CASE_1, "2": CASE_2, "2_A": CASE_2_A, "3": CASE_3, "3_A": CASE_3_A, "4": CASE_4}

_1D = {"block_inplanes": [64, 128, 256, 512], "spatial_dims": 1, "n_input_channels": 2, "num_classes": 3,
       "conv1_t_size": [3], "conv1_t_stride": 1}
CLASS_CASES = {
    "5": {"block": "basic", "layers": [1, 1, 1, 1], **_1D},
    "5_A": {"block": ResNetBlock, "layers": [1, 1, 1, 1], **_1D},
    "6": {"block": "bottleneck", "layers": [3, 4, 6, 3], **_1D},
    "7": {"block": "bottleneck", "layers": [3, 4, 6, 3], **_1D, "bias_downsample": False},
    "8": {"block": "bottleneck", "layers": [3, 4, 6, 3], **_1D, "act": ("relu", {"inplace": False})},
    "9": {"block": ResNetBlock, "layers": [3, 4, 6, 3], **_1D, "act": ("relu", {"inplace": False}),
          "norm": ("layer", {"normalized_shape": (64, 32)})},
}


def _builder(depth: int):
    return getattr(sre_resnet, f"sre_resnet{depth}")


def _builder_cases():
    # fast: every case with SRE-ResNet-10, the 1D case with SRE-ResNet-50 (bottleneck); the rest is slow
    fast = {(10, case) for case in BUILDER_CASES} | {(50, "3")}
    return [
        (depth, case) if (depth, case) in fast else pytest.param(depth, case, marks=pytest.mark.slow)
        for depth in DEPTHS for case in BUILDER_CASES
    ]


@pytest.mark.parametrize("depth, case", _builder_cases())
def test_monai_builder_case_gives_monai_shape(depth, case):
    kwargs, shape, expected = BUILDER_CASES[case]
    torch.manual_seed(0)
    net = _builder(depth)(**kwargs).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    if kwargs.get("feed_forward", True):
        assert out.shape == expected
    else:
        assert out.shape in expected
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", list(CLASS_CASES))
def test_monai_class_case_gives_monai_shape(case):
    torch.manual_seed(0)
    net = SREResNet(**CLASS_CASES[case]).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 32))
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_layer_norm_written_for_the_stem_stays_at_the_stem():
    net = SREResNet(**CLASS_CASES["9"])
    assert isinstance(net.bn1, torch.nn.LayerNorm) and net.bn1.normalized_shape == (64, 32)
    block_norms = {type(m) for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)}
    assert block_norms == {torch.nn.BatchNorm1d}  # as in MONAI's ResNet, whose blocks keep batch norm
    other = SREResNet(**{**CLASS_CASES["9"], "block_norm": ("group", {"num_groups": 4})})
    assert isinstance(other.layer2[0].bn1, torch.nn.GroupNorm) and isinstance(other.bn1, torch.nn.LayerNorm)


def test_builders_follow_the_parameter_table():
    assert tuple(SRE_RESNET_PARAMS) == DEPTHS
    for depth, (block, layers) in SRE_RESNET_PARAMS.items():
        net = _builder(depth)(spatial_dims=1, n_input_channels=1, num_classes=2, widen_factor=0.0625)
        stages = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
        assert stages == list(layers)
        expected = SREResNetBlock if block == "basic" else SREResNetBottleneck
        assert all(isinstance(b, expected) for i in range(1, 5) for b in getattr(net, f"layer{i}"))


@pytest.mark.parametrize("layout", ["flat", "nested", "ddp"])
def test_pretrained_path_loads_a_local_checkpoint(tmp_path, layout):
    kwargs, shape, _ = CASE_3
    kwargs = {**kwargs, "widen_factor": 0.25}
    torch.manual_seed(0)
    net = sre_resnet.sre_resnet10(**kwargs).eval()
    path = tmp_path / "ckpt.pt"
    state = net.state_dict()
    if layout == "ddp":  # saved from a DistributedDataParallel wrapper
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"model": state} if layout == "nested" else state, path)
    torch.manual_seed(1)
    loaded = sre_resnet.sre_resnet10(**{**kwargs, "pretrained": str(path)}).eval()
    fresh = sre_resnet.sre_resnet10(**kwargs).eval()
    for name, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert not torch.equal(fresh.conv1.weight, net.conv1.weight)  # control: a new seed gives other weights
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert isinstance(sre_resnet.sre_resnet10(**{**kwargs, "pretrained": path}, progress=False), SREResNet)


def test_pretrained_path_errors_name_the_file(tmp_path):
    kwargs = {**CASE_3[0], "widen_factor": 0.25}
    missing = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        sre_resnet.sre_resnet10(**{**kwargs, "pretrained": str(missing)})
    other = tmp_path / "resnet18.pt"
    torch.save(sre_resnet.sre_resnet18(**kwargs).state_dict(), other)
    with pytest.raises(ValueError, match=r"resnet18\.pt does not fit"):
        sre_resnet.sre_resnet10(**{**kwargs, "pretrained": str(other)})
    with pytest.raises(TypeError, match="pretrained must be False, True or a checkpoint path, got int"):
        sre_resnet.sre_resnet10(**{**kwargs, "pretrained": 3})


@pytest.mark.parametrize("depth", [10, 200])
def test_pretrained_true_says_no_public_weights_exist(depth):
    with pytest.raises(NotImplementedError, match=rf"no public pretrained weights exist for SRE-ResNet-{depth}.*"
                       r"bundles/sre_medmnist_2d/models/model\.pt.*bundles/sre_medmnist_3d/models/model\.pt"):
        _builder(depth)(pretrained=True, spatial_dims=2, n_input_channels=1, num_classes=3)


def _export_cases():
    # MONAI exports case 1 (3D) with every depth: slow here; the 1D case of SRE-ResNet-10 is the fast one
    return [(10, "3")] + [pytest.param(d, "1", marks=pytest.mark.slow) for d in DEPTHS]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("depth, case", _export_cases())
def test_torchscript_round_trip(depth, case):
    kwargs, shape, expected = BUILDER_CASES[case]
    torch.manual_seed(0)
    net = _builder(depth)(**kwargs).eval()
    x = torch.randn(shape)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        out, reference = loaded(x), net(x)
    assert out.shape == expected
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))


@pytest.mark.parametrize("depth, case", [(10, "3"), pytest.param(50, "2", marks=pytest.mark.slow)])
def test_torch_export_matches_eager(depth, case):
    kwargs, shape, expected = BUILDER_CASES[case]
    torch.manual_seed(0)
    net = _builder(depth)(**kwargs).eval()
    x = torch.randn(shape)
    exported = torch.export.export(net, (x,))
    other = torch.randn(shape)
    with torch.no_grad():
        for inp in (x, other):
            out, reference = exported.module()(inp), net(inp)
            assert out.shape == expected
            torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
