# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The fused C++ path on CPU (monai_sre.layers.ring_cpp): equal to the dense path in value and gradients, chosen by
``path="auto"`` where it pays, refused with a clear error where it cannot run, and a failed build falls back."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from monai_sre import SREConv
from monai_sre.layers import ring_cpp
from monai_sre.layers.rings import ring_index
from monai_sre.networks import sre_resnet18


@pytest.fixture(autouse=True)
def _cpp_on(monkeypatch):
    monkeypatch.delenv(ring_cpp.CPP_ENV, raising=False)
    assert ring_cpp.cpp_available(), "the C++ kernel must build on the test machines (a compiler and ninja)"


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


# (dims, in, out, size, kernel, batch, bias, num_rings): the one-voxel rings of k = 3, 5, 7, 9 in 2D and 3, 5 in 3D
# (compile-time disk tables), channels that are no multiple of 16, a kernel larger than the image, fewer rings than
# radii and other sizes (the runtime table)
GEOMETRIES = [
    (2, 16, 32, 12, 9, 2, True, None),
    (2, 3, 20, 9, 5, 3, False, None),
    (2, 37, 19, 7, 3, 2, True, None),
    (2, 64, 64, 16, 7, 2, True, None),
    (2, 8, 8, 5, 9, 1, False, None),
    (2, 24, 16, 11, 9, 2, True, 3),
    (2, 5, 7, 6, 11, 2, False, None),
    (3, 16, 24, 7, 5, 2, True, None),
    (3, 5, 9, 6, 3, 2, False, None),
    (3, 4, 6, 4, 7, 1, True, None),
    (3, 6, 5, 5, 5, 2, False, 2),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_cpp_path_equals_the_dense_path_with_all_gradients(geometry):
    dims, cin, cout, size, k, batch, bias, rings = geometry
    torch.manual_seed(0)
    reference = SREConv(dims, cin, cout, k, bias=bias, num_rings=rings, path="dense").double()
    with torch.no_grad():
        reference.weight.normal_()
        if bias:
            reference.bias.normal_()
    x = torch.randn(batch, cin, *([size] * dims), dtype=torch.float64, requires_grad=True)
    y = reference(x)
    g = torch.randn_like(y)
    y.backward(g)
    want = [y.detach(), x.grad, reference.weight.grad] + ([reference.bias.grad] if bias else [])

    conv = copy.deepcopy(reference).float()
    conv.path = "cpp"
    conv.zero_grad(set_to_none=True)
    xf = x.detach().float().requires_grad_()
    assert conv.select_path(xf) == "cpp"
    out = conv(xf)
    out.backward(g.float())
    got = [out.detach(), xf.grad, conv.weight.grad] + ([conv.bias.grad] if bias else [])
    for name, a, b in zip(["output", "input grad", "weight grad", "bias grad"], got, want):
        assert a.shape == b.shape, name
        assert _relative_error(a, b) < 2e-6, name
    # a tensor of its own in channels-last storage (a residual add may update it in place)
    memory = torch.channels_last if dims == 2 else torch.channels_last_3d
    assert out.is_contiguous(memory_format=memory) and out._base is None


@pytest.mark.parametrize("dims,shape", [(2, (5, 32, 13, 17)), (3, (2, 32, 6, 7, 9))])
def test_cpp_path_is_the_same_at_one_and_two_threads(dims, shape):
    torch.manual_seed(1)
    conv = SREConv(dims, 32, 48, 9 if dims == 2 else 5, path="cpp").eval()
    x = torch.randn(*shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv(x)
        torch.set_num_threads(2)
        two = conv(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)  # every tile is summed and multiplied alone: bitwise the same


@pytest.mark.parametrize("dims,size", [(2, 28), (3, 12)])
def test_cpp_network_keeps_exact_quarter_turn_invariance(dims, size):
    torch.manual_seed(2)
    net = sre_resnet18(spatial_dims=dims, n_input_channels=1, num_classes=3, widen_factor=0.25).eval()
    x = torch.randn(2, 1, *([size] * dims))
    with torch.no_grad():
        probes = {m.select_path(torch.zeros(1, m.in_channels, *([size] * dims))) for m in net.modules()
                  if isinstance(m, SREConv)}  # fmt: skip
        assert "cpp" in probes
        logits = net(x)
        for turns in (1, 2, 3):
            torch.testing.assert_close(net(torch.rot90(x, turns, (dims, dims + 1))), logits, rtol=0, atol=2e-5)


def test_disk_widths_of_the_default_maps_and_maps_it_refuses():
    index = ring_index(9, 2)
    widths = ring_cpp.disk_widths(index, list(range(5)))[:, 0]
    assert widths.tolist() == [
        [-1, -1, -1, -1, 0, -1, -1, -1, -1],
        [-1, -1, -1, 1, 1, 1, -1, -1, -1],
        [-1, -1, 1, 2, 2, 2, 1, -1, -1],
        [-1, 1, 2, 3, 3, 3, 2, 1, -1],
        [2, 3, 4, 4, 4, 4, 4, 3, 2],
    ]
    # every disk row is the centred run |dx| <= w: the taps of bands 0..b in that row
    for b in range(5):
        for row in range(9):
            taps = ((index[row] >= 0) & (index[row] <= b)).nonzero().flatten() - 4
            assert widths[b, row] == (int(taps.max()) if len(taps) else -1)
    assert ring_cpp.disk_widths(index[:, :7], list(range(5))) is None  # not square
    holed = index.clone()
    holed[4, 3] = -1  # a hole inside a row: not a centred run
    assert ring_cpp.disk_widths(holed, list(range(5))) is None
    # 3D, 5^3: disk 1 is the centre's 3x3 cross of rows with the centre row 3 wide, disk 2 the 5x5 rows less corners
    widths = ring_cpp.disk_widths(ring_index(5, 3), [0, 1, 2])
    assert widths.shape == (3, 5, 5)
    assert widths[0].tolist() == [[-1] * 5, [-1] * 5, [-1, -1, 0, -1, -1], [-1] * 5, [-1] * 5]
    assert widths[1, 1:4, 1:4].tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert widths[2].tolist() == [[-1, 1, 1, 1, -1], [1, 2, 2, 2, 1], [1, 2, 2, 2, 1], [1, 2, 2, 2, 1], [-1, 1, 1, 1, -1]]


def test_auto_takes_the_cpp_path_where_it_pays_and_the_decomposed_path_elsewhere(monkeypatch):
    x64 = torch.randn(1, 64, 16, 16)
    assert SREConv(2, 64, 64, 9).select_path(x64) == "cpp"  # depth 5 * 64 = 320
    assert SREConv(2, 128, 128, 9).select_path(torch.randn(1, 128, 8, 8)) == "cpp"  # 640
    assert SREConv(2, 256, 256, 5).select_path(torch.randn(1, 256, 8, 8)) == "decomposed"  # 768: one band at a time
    assert SREConv(3, 32, 32, 5).select_path(torch.randn(1, 32, 8, 8, 8)) == "cpp"  # 3D too (3 * 32)
    assert SREConv(1, 64, 64, 9).select_path(torch.randn(1, 64, 16)) == "decomposed"  # not 1D
    assert SREConv(2, 64, 64, 9).double().select_path(x64.double()) == "decomposed"  # float32 only
    assert SREConv(2, 64, 64, 9, stride=2).select_path(x64) != "cpp"
    assert SREConv(2, 64, 64, 9, padding_mode="reflect").select_path(x64) != "cpp"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert SREConv(2, 64, 64, 9).select_path(x64) == "decomposed"
    monkeypatch.setenv(ring_cpp.CPP_ENV, "0")
    assert SREConv(2, 64, 64, 9).select_path(x64) == "decomposed"


def test_cpp_path_where_it_cannot_run_names_the_reason(monkeypatch):
    with pytest.raises(ValueError, match=r"path='cpp'.*stride=\(2, 2\)"):
        SREConv(2, 8, 8, 5, stride=2, path="cpp")(torch.randn(1, 8, 9, 9))
    with pytest.raises(ValueError, match=r"path='cpp'.*torch.float64"):
        SREConv(2, 8, 8, 5, path="cpp").double()(torch.randn(1, 8, 9, 9, dtype=torch.float64))
    monkeypatch.setenv(ring_cpp.CPP_ENV, "0")
    with pytest.raises(ValueError, match="MONAI_SRE_CPP"):
        SREConv(2, 8, 8, 5, path="cpp")(torch.randn(1, 8, 9, 9))


def test_a_failed_build_warns_once_and_keeps_the_decomposed_path(monkeypatch):
    import torch.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(ring_cpp, "_state", {})
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    conv = SREConv(2, 64, 64, 9)
    x = torch.randn(2, 64, 10, 10)
    with pytest.warns(RuntimeWarning, match="could not be built.*no C\\+\\+ compiler here"):
        assert conv.select_path(x) == "decomposed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ring_cpp.cpp_available() is False  # remembered: no second attempt, no second warning
    dense = copy.deepcopy(conv)
    dense.path = "dense"
    with torch.no_grad():
        torch.testing.assert_close(conv(x), dense(x), rtol=1e-5, atol=1e-5)
