# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SREResNet: shapes of every builder, MONAI-compatible arguments, bad input, export and MONAI integration."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import ResNet, ResNetBlock, ResNetBottleneck, resnet18, resnet50
from torch import nn

import monai_sre
from monai_sre.layers import SREConv, SymmetricDownsample
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

BUILDERS = {
    sre_resnet10: 1,
    sre_resnet18: 1,
    sre_resnet34: 1,
    sre_resnet50: 4,
    sre_resnet101: 4,
    sre_resnet152: 4,
    sre_resnet200: 4,
}


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("builder", list(BUILDERS), ids=lambda b: b.__name__)
def test_every_builder_gives_logits(builder, spatial_dims):
    net = builder(spatial_dims=spatial_dims, n_input_channels=2, num_classes=3, widen_factor=0.0625).eval()
    with torch.no_grad():
        assert net(torch.randn((2, 2) + (7,) * spatial_dims)).shape == (2, 3)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("builder", [sre_resnet10, sre_resnet50], ids=lambda b: b.__name__)
def test_feed_forward_false_gives_features(builder, spatial_dims):
    net = builder(spatial_dims=spatial_dims, n_input_channels=2, feed_forward=False, widen_factor=0.0625).eval()
    assert net.fc is None
    with torch.no_grad():
        features = net(torch.randn((2, 2) + (6,) * spatial_dims))
    # Last stage: 512 * widen_factor channels times the block expansion.
    assert features.shape == (2, 32 * BUILDERS[builder])


def test_top_level_exports():
    for name in ("SREResNet", "SREResNetBlock", "SREResNetBottleneck", "convert_to_sre", "sre_resnet200"):
        assert name in monai_sre.__all__ and hasattr(monai_sre, name)
    assert monai_sre.sre_resnet18 is sre_resnet18


def test_signature_mirrors_monai_resnet():
    ours = list(inspect.signature(SREResNet).parameters.values())
    theirs = list(inspect.signature(ResNet).parameters.values())
    assert [p.name for p in ours[: len(theirs)]] == [p.name for p in theirs]
    differing = {p.name for p, q in zip(ours, theirs) if p.default != q.default}
    # Only the MedMNIST-friendly stem differs: 5-voxel stem and no max-pool (documented).
    assert differing == {"conv1_t_size", "no_max_pool"}
    extra = ours[len(theirs):]
    assert [p.name for p in extra] == ["kernel_size", "num_rings", "downsample_mode", "zero_init_residual",
                                       "zero_mean_init", "block_norm", "band_scale", "gradient_fraction"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)


def test_default_kernels_and_stem():
    net2 = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2)
    assert net2.conv1.kernel_size == (5, 5) and isinstance(net2.stem_pool, nn.Identity)
    assert isinstance(net2.maxpool, nn.Identity)
    assert [net2.layer1[0].conv1.kernel_size, net2.layer2[0].conv1.kernel_size, net2.layer3[1].conv2.kernel_size,
            net2.layer4[0].conv2.kernel_size] == [(9, 9), (9, 9), (5, 5), (5, 5)]
    net3 = sre_resnet10(spatial_dims=3, n_input_channels=1, num_classes=2, widen_factor=0.125)
    assert {m.kernel_size for m in net3.modules() if isinstance(m, SREConv)} == {(5, 5, 5)}
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125, kernel_size=[3, 5, 7, 9],
                       num_rings=2)
    assert [getattr(net, f"layer{i}")[0].conv1.kernel_size for i in range(1, 5)] == [(3, 3), (5, 5), (7, 7), (9, 9)]
    assert {m.weight.shape[-1] for m in net.modules() if isinstance(m, SREConv)} == {2}


def test_no_strided_convolution_and_only_symmetric_downsampling():
    net = sre_resnet50(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125, conv1_t_stride=2,
                       no_max_pool=False)
    for m in net.modules():
        if isinstance(m, (SREConv, nn.Conv2d)):
            assert tuple(m.stride) == (1, 1)
        assert not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))
    pools = [m for m in net.modules() if isinstance(m, SymmetricDownsample)]
    assert [p.mode for p in pools] == ["avg", "max", "avg", "avg", "avg"]  # stem, max-pool, layers 2-4
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        feats = nn.Sequential(net.stem_pool, net.conv1, net.maxpool, net.layer1, net.layer2, net.layer3)(x)
    assert feats.shape[-2:] == (2, 2)  # 28 -> 14 -> 7 -> 7 -> 4 -> 2: ceil(n / 2) at every step


# Measured with 1 input channel and 3 classes; MONAI's networks with their default arguments otherwise, SREResNet
# with its defaults (2D kernels [9, 9, 5, 5], 3D kernels 5, 5-voxel stem). The README table quotes these numbers.
PARAMETER_COUNTS = {
    (2, 18): (3_993_539, 11_172_675),
    (2, 50): (16_119_619, 23_511_747),
    (3, 18): (3_846_083, 33_162_435),
    (3, 50): (15_963_971, 46_165_059),
}


@pytest.mark.parametrize("spatial_dims, depth", list(PARAMETER_COUNTS))
def test_parameter_counts_beside_monai(spatial_dims, depth):
    ours, theirs = {18: (sre_resnet18, resnet18), 50: (sre_resnet50, resnet50)}[depth]
    kwargs = {"spatial_dims": spatial_dims, "n_input_channels": 1, "num_classes": 3}
    assert (_count(ours(**kwargs)), _count(theirs(**kwargs))) == PARAMETER_COUNTS[(spatial_dims, depth)]


def test_norm_and_act_reach_every_block_and_shortcut():
    net = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125,
                       norm=("instance", {"affine": True}), act="leakyrelu")
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert norms and all(isinstance(m, nn.InstanceNorm2d) for m in norms)
    # stem, 8 blocks with 2 norms each, 3 type-B shortcuts
    assert len(norms) == 1 + 16 + 3
    # stem, 8 blocks with 2 each (after the first convolution, after the sum); with gradient channels the same
    # activation works on the other channels
    for fraction in (0.0, 0.5):
        net = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125,
                           norm=("instance", {"affine": True}), act="leakyrelu", gradient_fraction=fraction)
        acts = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
        assert len(acts) == 1 + 16 and all(isinstance(m, nn.LeakyReLU) for m in acts)


def test_instance_norm_without_affine_builds_and_runs():
    # MONAI 1.6.1's ResNet crashes at init here (constant_ on a None weight).
    net = sre_resnet10(spatial_dims=3, n_input_channels=1, num_classes=2, widen_factor=0.125, norm="instance").eval()
    assert net.bn1.weight is None
    with torch.no_grad():
        assert net(torch.randn(1, 1, 9, 9, 9)).shape == (1, 2)


def test_monai_block_classes_and_strings_are_accepted():
    cases = [
        ("basic", SREResNetBlock),
        (ResNetBlock, SREResNetBlock),
        ("bottleneck", SREResNetBottleneck),
        (ResNetBottleneck, SREResNetBottleneck),
        (SREResNetBottleneck, SREResNetBottleneck),
    ]
    for block, expected in cases:
        net = SREResNet(block, [1, 1, 1, 1], [8, 16, 32, 64], spatial_dims=2, n_input_channels=1, num_classes=2)
        assert isinstance(net.layer1[0], expected)


def test_shortcut_a_pads_channels_and_lets_gradients_through():
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125, shortcut_type="A")
    block = net.layer2[0]
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    pooled = block.pool(x)
    shortcut = block.downsample(pooled)
    assert shortcut.shape == (2, 16, 5, 5)
    assert torch.equal(shortcut[:, :8], pooled) and not shortcut[:, 8:].any()
    shortcut.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # MONAI's type A detaches the shortcut (out.data)


def test_anisotropic_stem_runs_and_keeps_flip_invariance():
    net = sre_resnet10(spatial_dims=3, n_input_channels=1, num_classes=2, widen_factor=0.125, conv1_t_size=(3, 7, 7),
                       conv1_t_stride=(1, 2, 2)).eval()
    assert net.conv1.kernel_size == (3, 7, 7)
    assert net.min_input_size == (5, 9, 9)
    x = torch.randn(1, 1, 10, 19, 19)
    with torch.no_grad():
        y = net(torch.cat([x, x.flip(2), x.flip(3), x.flip(4), x.transpose(3, 4)]))
    assert torch.allclose(y, y[:1].expand_as(y), rtol=1e-5, atol=1e-5 * y[0].abs().max().item())


def test_2d_cpu_input_is_stored_channels_last_from_the_stem_on_with_the_same_outputs():
    torch.manual_seed(3)
    net = sre_resnet18(spatial_dims=2, n_input_channels=3, num_classes=4, widen_factor=0.25)
    x = torch.randn(2, 3, 16, 16)
    stems = []
    net.conv1.register_forward_hook(lambda module, inputs, output: stems.append(output))
    for mode in ("train", "eval"):
        getattr(net, mode)()
        with torch.no_grad():
            out = net(x)
            assert stems[-1].is_contiguous(memory_format=torch.channels_last)  # the stem's output too
            torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), out, rtol=0, atol=0)
    assert x.is_contiguous()  # the caller's tensor is untouched


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_monai_metatensor_input_gives_the_plain_tensor_outputs_and_gradients(spatial_dims):
    # MONAI's LoadImaged/EnsureTyped give MetaTensors; on CPU they reached the C++ kernel and failed (TypeError from
    # MetaTensor.new_empty) in every mode, and in eval mode with autograd the re-wrapped output refused `out += residual`;
    # the output is a MetaTensor with the input's metadata, as MONAI's ResNet gives
    torch.manual_seed(0)
    net = sre_resnet18(spatial_dims=spatial_dims, n_input_channels=1, num_classes=2, widen_factor=0.25)
    x = torch.randn((2, 1) + (12,) * spatial_dims)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        with torch.inference_mode():
            out = net(MetaTensor(x, meta={"filename_or_obj": "a.nii.gz"}))
            assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.nii.gz"
            torch.testing.assert_close(out.as_tensor(), net(x), rtol=0, atol=0)
        grads = []
        for image in (x.clone(), MetaTensor(x.clone())):
            image.requires_grad_()
            net.zero_grad()
            out = net(image)
            assert type(out) is type(image)
            torch.relu_(out)[:, 1].sum().backward()  # an in-place step after the network, as ReLU(inplace=True)
            grads.append([torch.as_tensor(image.grad)] + [p.grad.clone() for p in net.parameters()])
        # float32 rounding only: the backward's layouts may differ (with two threads up to 1.4e-5 where the largest
        # gradient is about 60; parameters whose gradient is nearly 0 differ by 1e-6), so the tolerance scales with it
        scale = max(float(g.abs().max()) for g in grads[0])
        for got, want in zip(grads[1], grads[0]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_minimum_input_size():
    assert sre_resnet10(spatial_dims=2, n_input_channels=1).min_input_size == (5, 5)
    monai_like = sre_resnet10(spatial_dims=2, n_input_channels=1, conv1_t_stride=2, no_max_pool=False)
    assert monai_like.min_input_size == (17, 17)
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 5, 6)).shape == (1, 2)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((2, 3, 28, 28), r"n_input_channels=1 channels \(dim 1\), got shape \[2, 3, 28, 28\]"),
        ((2, 28, 28), r"must have 4 dims \(batch, channels, 2 spatial\) for spatial_dims=2, got shape \[2, 28, 28\]"),
        ((2, 1, 28, 28, 28), r"must have 4 dims .* got shape \[2, 1, 28, 28, 28\]"),
        ((2, 1, 4, 28), r"input spatial shape \[4, 28\] is too small .* minimum size is \[5, 5\]"),
    ],
)
def test_bad_input_is_named(shape, match):
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125)
    with pytest.raises(ValueError, match=match):
        net(torch.randn(shape))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block": "resnext"}, r"Unknown block 'resnext'"),
        ({"block": nn.Conv2d}, r"Unknown block .*Conv2d"),
        ({"kernel_size": [9, 9, 5]}, r"kernel_size must be an int or a list of 4 .* \[9, 9, 5\]"),
        ({"kernel_size": 4}, r"kernel_size must be odd"),
        ({"downsample_mode": "median"}, r"downsample_mode must be one of .* 'median'"),
        ({"shortcut_type": "C"}, r"shortcut_type must be 'A' or 'B', got 'C'"),
        ({"layers": [2, 2, 2]}, r"layers and block_inplanes need 4 entries"),
        ({"spatial_dims": 4}, r"spatial_dims must be 1, 2 or 3, got 4"),
        ({"gradient_fraction": 1.0}, r"gradient_fraction must be in \[0, 1\), got 1.0"),
        ({"gradient_fraction": -0.1}, r"gradient_fraction must be in \[0, 1\), got -0.1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    args = {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "spatial_dims": 2,
            "n_input_channels": 1, "num_classes": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SREResNet(**args)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("shortcut_type, no_max_pool, gradient_fraction", [("A", False, 0.0), ("B", True, 0.5)])
def test_torchscript_save_load_gives_identical_outputs(shortcut_type, no_max_pool, gradient_fraction):
    # MONAI's ResNet cannot script type "A" shortcuts; here both types script, with and without the max-pool.
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125,
                       shortcut_type=shortcut_type, no_max_pool=no_max_pool, conv1_t_stride=2,
                       gradient_fraction=gradient_fraction).eval()
    x = torch.randn(2, 1, 33, 33)
    buffer = io.BytesIO()
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        assert torch.equal(loaded(x), scripted(x))  # save/load changes nothing
        # scripted SRE layers run plain convolutions; eager mode may take the ring-decomposed path (same maths)
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-6)
        with pytest.raises(Exception, match=r"too small"):
            loaded(torch.randn(1, 1, 8, 8))


@pytest.mark.parametrize("gradient_fraction", [0.0, 0.5])
def test_onnx_export_matches_onnxruntime(tmp_path, gradient_fraction):
    import onnxruntime as ort

    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.125,
                       gradient_fraction=gradient_fraction).eval()
    x = torch.randn(2, 1, 28, 28)
    path = tmp_path / "sre_resnet10.onnx"
    torch.onnx.export(net, (x,), dynamo=True, input_names=["image"], output_names=["pred"]).save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.randn(2, 1, 28, 28)
    for inp in (x, other):
        with torch.no_grad():
            expected = net(inp).numpy()
        got = session.run(None, {"image": inp.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_bundle_config_instantiates_through_config_parser():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "network_def": {
                "_target_": "monai_sre.networks.SREResNet",
                "block": "basic",
                "layers": [1, 1, 1, 1],
                "block_inplanes": [8, 16, 32, 64],
                "spatial_dims": 2,
                "n_input_channels": 1,
                "num_classes": 2,
                "kernel_size": [9, 9, 5, 5],
                "norm": ["instance", {"affine": True}],
            }
        }
    )
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, SREResNet)
    assert isinstance(net.layer3[0].bn1, nn.InstanceNorm2d)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 2)


def test_supervised_trainer_runs_two_iterations_on_breastmnist(data_root):
    from monai.engines import SupervisedTrainer

    with np.load(data_root / "breastmnist.npz") as data:
        images = torch.as_tensor(data["train_images"][:8], dtype=torch.float32).unsqueeze(1) / 255.0
        labels = torch.as_tensor(data["train_labels"][:8, 0], dtype=torch.long)
    loader = torch.utils.data.DataLoader(
        [{"image": image, "label": label} for image, label in zip(images, labels)], batch_size=4, shuffle=False
    )
    torch.manual_seed(0)
    net = sre_resnet10(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.125)
    before = net.conv1.weight.detach().clone()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=nn.CrossEntropyLoss(),
    )
    trainer.run()
    assert trainer.state.iteration == 2
    assert np.isfinite(float(trainer.state.output[0]["loss"]))
    assert not torch.equal(net.conv1.weight, before)


def test_gradient_fraction_splits_the_stem_and_every_first_activation_and_is_part_of_the_state_dict(tmp_path):
    from monai_sre.io.checkpoints import load_weights
    from monai_sre.layers import GradientNormActivation

    plain = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.25)
    split = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.25, gradient_fraction=0.5)
    acts = {n: m for n, m in split.named_modules() if isinstance(m, GradientNormActivation)}
    assert sorted(acts) == sorted(["act"] + [f"layer{s}.{b}.act1" for s in range(1, 5) for b in range(2)])
    assert acts["act"].gradient_index.tolist() == list(range(8, 16))  # stem: 16 channels, the last 8
    assert len(acts["layer4.1.act1"].gradient_index) == 64  # 128 channels
    assert not any("gradient_index" in k for k in plain.state_dict())  # 0: the plain network, old files load
    # the same weights otherwise: a plain checkpoint is refused by name, not loaded into a network computing else
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    missing = r"plain\.pt does not fit the SREResNet.*missing \(e\.g\. act\.gradient_index\)"
    with pytest.raises(ValueError, match=missing):
        load_weights(split, tmp_path / "plain.pt")
    torch.save(split.state_dict(), tmp_path / "split.pt")
    with pytest.raises(ValueError, match=r"split\.pt does not fit the SREResNet.*unexpected.*--gradient_fraction\)$"):
        load_weights(plain, tmp_path / "split.pt")
    wider = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.5)
    with pytest.raises(ValueError, match=r"settings$"):  # other weights too: no gradient hint
        load_weights(wider, tmp_path / "split.pt")
    quarter = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.25, gradient_fraction=0.25)
    with pytest.raises(ValueError, match=r"split\.pt does not fit the SREResNet.*other shapes"):
        load_weights(quarter, tmp_path / "split.pt")
    load_weights(sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, widen_factor=0.25,
                              gradient_fraction=0.5), tmp_path / "split.pt")
