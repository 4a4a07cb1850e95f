# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest
import torch
from monai.networks.layers.factories import Conv
from torch import nn

import monai_sre
from monai_sre import SREConv, SREConv1d, SREConv2d, SREConv3d, SREConvTranspose, SREConvTranspose2d
from monai_sre.layers.rings import OUTSIDE, ring_index
from monai_sre.transforms import full_grid_group


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-12)
    err = (a - b).abs().max().item() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


# ----------------------------------------------------------------------------------------------- equivariance
@pytest.mark.parametrize("path", ["dense", "decomposed"])
@pytest.mark.parametrize("k", [3, 5, 7, 9])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("groups,bias", [(1, True), (2, False), (4, True)])
def test_equivariance_2d_all_8_symmetries(path, k, dilation, groups, bias):
    torch.manual_seed(k + dilation + groups)
    conv = SREConv2d(4, 8, k, padding="same", dilation=dilation, groups=groups, bias=bias, path=path).double()
    x = torch.randn(2, 4, 17, 17, dtype=torch.float64)
    y = conv(x)
    for g in full_grid_group(2):
        assert_close(conv(g(x)), g(y))


@pytest.mark.parametrize("path", ["dense", "decomposed"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("groups,bias", [(1, True), (2, False)])
def test_equivariance_3d_all_48_symmetries(path, k, dilation, groups, bias):
    torch.manual_seed(k * dilation)
    conv = SREConv3d(2, 4, k, padding="same", dilation=dilation, groups=groups, bias=bias, path=path)
    x = torch.randn(1, 2, 9, 9, 9)
    y = conv(x)
    syms = full_grid_group(3)
    assert len(syms) == 48
    with torch.no_grad():
        for g in syms:
            assert_close(conv(g(x)), g(y))


@pytest.mark.parametrize("k,dilation", [(3, 1), (7, 2)])
def test_equivariance_1d_flip(k, dilation):
    conv = SREConv1d(3, 5, k, padding="same", dilation=dilation)
    x = torch.randn(2, 3, 20)
    assert_close(conv(x.flip(-1)), conv(x).flip(-1))


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_equivariance_other_padding_modes(padding_mode):
    conv = SREConv(2, 3, 4, 5, padding_mode=padding_mode)
    x = torch.randn(1, 3, 12, 12)
    y = conv(x)
    for g in full_grid_group(2):
        assert_close(conv(g(x)), g(y))


def test_ordinary_conv_is_not_equivariant():
    # the check above can fail: a dense 3x3 kernel breaks the symmetry
    conv = nn.Conv2d(2, 2, 3, padding=1)
    x = torch.randn(1, 2, 9, 9)
    err = (conv(torch.rot90(x, 1, (2, 3))) - torch.rot90(conv(x), 1, (2, 3))).abs().max()
    assert err > 1e-2


# ----------------------------------------------------------------------------------------- shapes and params
@pytest.mark.parametrize("dims,k,groups,bias", [(1, 5, 1, True), (2, 9, 2, False), (3, 3, 4, True), (3, 5, 1, False)])
def test_parameter_count(dims, k, groups, bias):
    conv = SREConv(dims, 8, 12, k, groups=groups, bias=bias)
    n = k // 2 + 1
    assert conv.weight.shape == (12, 8 // groups, n)
    assert sum(p.numel() for p in conv.parameters()) == 12 * (8 // groups) * n + (12 if bias else 0)


def test_dense_kernel_is_built_from_band_map():
    conv = SREConv2d(2, 3, 5)
    kernel = conv.dense_kernel()
    idx = ring_index(5, 2)
    assert kernel.shape == (3, 2, 5, 5)
    for b in range(3):
        assert torch.equal(kernel[:, :, idx == b], conv.weight[:, :, b : b + 1].expand(-1, -1, int((idx == b).sum())))
    assert torch.all(kernel[:, :, idx == OUTSIDE] == 0)


def test_init_uses_true_fan_in():
    torch.manual_seed(0)
    conv = SREConv2d(64, 64, 9)
    fan_in = 64 * int((ring_index(9, 2) != OUTSIDE).sum())  # 64 * 69
    bound = 1 / np.sqrt(fan_in)
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.95 * bound


@pytest.mark.parametrize(
    "args",
    [
        dict(kernel_size=3, stride=1, padding=0),
        dict(kernel_size=5, stride=2, padding=2),
        dict(kernel_size=3, stride=3, padding=1, dilation=2),
        dict(kernel_size=(3, 5), stride=(1, 2), padding=(1, 0)),
    ],
)
def test_output_shapes_match_torch_conv(args):
    x = torch.randn(2, 4, 15, 16)
    assert SREConv2d(4, 6, **args)(x).shape == nn.Conv2d(4, 6, **args)(x).shape


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "args",
    [
        dict(kernel_size=3, stride=1, padding=1),
        dict(kernel_size=3, stride=2, padding=1, output_padding=1),
        dict(kernel_size=5, stride=2, padding=2, output_padding=0),
        dict(kernel_size=3, stride=3, padding=0, output_padding=2, dilation=1),
        dict(kernel_size=3, stride=2, padding=1, output_padding=1, dilation=2, groups=2),
    ],
)
def test_transposed_output_shapes_match_torch(dims, args):
    x = torch.randn(1, 4, *([7] * dims))
    ours = SREConvTranspose(dims, 4, 6, **args)
    ref = getattr(nn, f"ConvTranspose{dims}d")(4, 6, **args)
    assert ours(x).shape == ref(x).shape
    assert ours.weight.shape == (4, 6 // args.get("groups", 1), 3 if args["kernel_size"] == 5 else 2)


def test_transposed_equals_torch_with_same_dense_kernel():
    ours = SREConvTranspose2d(3, 5, 5, stride=2, padding=2, output_padding=1)
    ref = nn.ConvTranspose2d(3, 5, 5, stride=2, padding=2, output_padding=1)
    with torch.no_grad():
        ref.weight.copy_(ours.dense_kernel())
        ref.bias.copy_(ours.bias)
    x = torch.randn(2, 3, 8, 8)
    assert_close(ours(x), ref(x))


def test_transposed_is_equivariant_at_stride_1():
    conv = SREConvTranspose(2, 3, 3, 5, padding=2)
    x = torch.randn(1, 3, 11, 11)
    for g in full_grid_group(2):
        assert_close(conv(g(x)), g(conv(x)))


def test_same_padding_like_torch():
    x = torch.randn(1, 2, 13, 10)
    conv = SREConv2d(2, 3, 7, padding="same", dilation=2)
    assert conv(x).shape == (1, 3, 13, 10)
    ref = nn.Conv2d(2, 3, 7, padding="same", dilation=2)
    with torch.no_grad():
        ref.weight.copy_(conv.dense_kernel())
        ref.bias.copy_(conv.bias)
    assert_close(conv(x), ref(x))


# ------------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    "dims,k,stride,dilation,groups,padding_mode,size",
    [
        (1, 3, 1, 1, 1, "zeros", 16),
        (1, 11, 2, 1, 3, "reflect", 31),
        (2, 3, 2, 1, 1, "zeros", 15),
        (2, 5, 1, 2, 3, "circular", 16),
        (2, 7, 3, 1, 1, "replicate", 20),
        (2, 9, 1, 1, 1, "zeros", 13),
        (2, 11, 2, 2, 3, "zeros", 24),
        (3, 3, 1, 1, 3, "zeros", 7),
        (3, 5, 2, 1, 1, "reflect", 10),
        (3, 7, 1, 1, 1, "zeros", 9),
    ],
)
def test_decomposed_path_equals_dense(dims, k, stride, dilation, groups, padding_mode, size):
    torch.manual_seed(0)
    dense = SREConv(dims, 6, 9, k, stride=stride, dilation=dilation, groups=groups, padding_mode=padding_mode,
                    path="dense").double()
    decomposed = copy.deepcopy(dense)
    decomposed.path = "decomposed"
    x = torch.randn(2, 6, *([size] * dims), dtype=torch.float64, requires_grad=True)
    y1, y2 = dense(x), decomposed(x)
    assert y1.shape == y2.shape
    assert_close(y1, y2, 1e-10)
    g = torch.randn_like(y1)
    gx1, gw1, gb1 = torch.autograd.grad(y1, (x, dense.weight, dense.bias), g)
    gx2, gw2, gb2 = torch.autograd.grad(y2, (x, decomposed.weight, decomposed.bias), g)
    for a, b in ((gx1, gx2), (gw1, gw2), (gb1, gb2)):
        assert_close(a, b, 1e-10)


def test_auto_path_prefers_decomposition_for_wide_large_kernels():
    assert SREConv2d(64, 64, 9, padding=4).use_decomposed()
    assert not SREConv2d(1, 8, 3, padding=1).use_decomposed()
    assert SREConv2d(1, 8, 3, padding=1, path="decomposed").use_decomposed()


# ------------------------------------------------------------------------------------------------ autograd
def test_gradcheck_float64():
    conv = SREConv2d(2, 3, 5, padding=2, groups=1).double()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, w: torch.nn.functional.conv2d(inp, torch.nn.functional.pad(w, (0, 1))[
        :, :, conv.ring_map], None, 1, 2), (x, conv.weight))
    assert torch.autograd.gradcheck(conv, (x,))


def test_gradients_reach_band_weights_only():
    conv = SREConv2d(2, 3, 5, padding=2)
    conv(torch.randn(2, 2, 8, 8)).square().sum().backward()
    names = {n for n, p in conv.named_parameters() if p.grad is not None}
    assert names == {"weight", "bias"}
    assert conv.weight.grad.shape == (3, 2, 3)
    assert not any(b.requires_grad for b in conv.buffers())


# --------------------------------------------------------------------------------------------------- cache
def _pair(**kwargs):
    torch.manual_seed(1)
    a = SREConv2d(3, 4, 5, padding=2, **kwargs)
    b = copy.deepcopy(a)
    return a, b


def test_cache_invalidated_by_load_state_dict_after_eval():
    used, fresh = _pair()
    used.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        used(x)  # fills the cache
    new_state = {k: torch.randn_like(v) for k, v in used.state_dict().items()}
    used.load_state_dict(new_state)
    fresh.load_state_dict(new_state)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(used(x), fresh(x))


def test_cache_invalidated_by_in_place_update():
    used, fresh = _pair()
    used.eval(), fresh.eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        used(x)
        used.weight.mul_(2)
        fresh.weight.mul_(2)
        assert torch.equal(used(x), fresh(x))


def test_setting_training_attribute_directly():
    used, fresh = _pair()
    used.training = False
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(used(x), fresh.eval()(x))


def test_second_backward_in_eval_mode_and_eval_finetuning():
    used, fresh = _pair()
    used.eval(), fresh.eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        used(x)
    for module in (used, fresh):
        module(x).sum().backward()
        module(x).sum().backward()  # a second backward must not hit a freed graph
    assert torch.equal(used.weight.grad, fresh.weight.grad)
    opt = torch.optim.SGD(used.parameters(), lr=0.1)
    opt.step()
    with torch.no_grad():
        assert not torch.equal(used(x), fresh(x))  # the update is visible in eval mode
    assert used._cache is None or not used._cache.requires_grad


def test_cache_follows_dtype_and_device_moves():
    used, fresh = _pair()
    used.eval(), fresh.eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        used(x)
        used.double()
        fresh.double()
        assert used(x.double()).dtype == torch.float64
        assert torch.equal(used(x.double()), fresh(x.double()))


# ------------------------------------------------------------------------------------------ export / registry
def test_torchscript_round_trip():
    conv = SREConv3d(2, 4, 5, padding=2)
    conv.eval()
    x = torch.randn(1, 2, 8, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(conv)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
    with torch.no_grad():
        assert_close(loaded(x), conv(x), 1e-6)


def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    conv = SREConv2d(3, 8, 9, padding=4).eval()
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "sre.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(conv, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, conv(x).numpy(), rtol=1e-4, atol=1e-5)


def test_monai_registration_is_idempotent():
    assert Conv["sreconv", 1] is SREConv1d
    assert Conv["sreconv", 2] is SREConv2d
    assert Conv["sreconv", 3] is SREConv3d
    assert Conv[Conv.SRECONVTRANS, 2] is SREConvTranspose2d
    doc = Conv.__doc__
    monai_sre.register_monai_layers()
    monai_sre.register_monai_layers()
    assert Conv.__doc__ == doc
    assert Conv["sreconv", 2] is SREConv2d
    layer = Conv["sreconv", 2](3, 4, kernel_size=3, padding=1)
    assert layer(torch.randn(1, 3, 5, 5)).shape == (1, 4, 5, 5)


# --------------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=4, out_channels=4, kernel_size=4), "kernel_size must be odd"),
        (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), "groups=4 must divide"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, num_rings=0), "num_rings must be >= 1"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, padding_mode="mirror"), "padding_mode"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding="same"), "padding='same'"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, path="fft"), "path must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SREConv2d(**kwargs)


def test_bad_inputs():
    conv = SREConv2d(3, 4, 3, padding=1)
    with pytest.raises(ValueError, match=r"must have 4 dims"):
        conv(torch.randn(3, 8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"in_channels=3"):
        conv(torch.randn(1, 2, 8, 8))


@pytest.mark.parametrize("path", ["dense", "decomposed", "cpp"])
def test_metatensor_input_keeps_its_metadata_on_every_path(path):
    # as torch.nn.Conv through MetaTensor's torch-function handling: a converted segmentation network's output keeps the
    # affine that SaveImaged writes. The C++ kernel's operators refused a MetaTensor before (MetaTensor.new_empty)
    if path == "cpp" and not monai_sre.layers.ring_cpp.cpp_available():
        pytest.skip("the C++ kernel is not built here")
    from monai.data import MetaTensor

    torch.manual_seed(0)
    conv = SREConv(2, 4, 6, 5, path=path)
    x = torch.randn(2, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    affine = torch.diag(torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64))
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = conv(MetaTensor(x, affine=affine, meta={"filename_or_obj": "a.nii.gz"}))
            assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.nii.gz"
            assert torch.equal(out.affine, affine) and out.requires_grad == grad
            torch.testing.assert_close(out.as_tensor(), conv(x), rtol=0, atol=0)
    assert type(conv(x)) is torch.Tensor
