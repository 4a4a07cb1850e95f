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


def _channels_last_format(dims: int) -> torch.memory_format:
    return torch.channels_last if dims == 2 else torch.channels_last_3d


# (in, out, size, kernel, batch, bias, num_rings): the one-voxel rings of k = 3, 5, 7, 9 (compile-time disk tables),
# channels that are no multiple of 16, a kernel larger than the image, fewer rings than radii (the runtime table)
GEOMETRIES = [
    (16, 32, 12, 9, 2, True, None),
    (3, 20, 9, 5, 3, False, None),
    (37, 19, 7, 3, 2, True, None),
    (64, 64, 16, 7, 2, True, None),
    (8, 8, 5, 9, 1, False, None),
    (24, 16, 11, 9, 2, True, 3),
    (5, 7, 6, 11, 2, False, None),
    (64, 64, 32, 9, 2, True, None),  # tiles of 512 pixels x depth 320: the forward product on oneDNN
]


# 3D: the compile-time ball tables of k = 3, 5, 7, 9, channels that are no multiple of 16 and one channel (a stem),
# a kernel larger than the volume, fewer rings than radii (the box-sum buffer); volumes (size, size + 1, size + 2)
GEOMETRIES_3D = [
    (16, 32, 6, 5, 2, True, None),
    (3, 20, 5, 3, 3, False, None),
    (17, 19, 5, 7, 2, True, None),
    (5, 7, 4, 9, 2, True, None),
    (1, 16, 6, 5, 2, False, None),
    (8, 8, 5, 5, 1, True, 2),
]


@pytest.mark.parametrize("dims,geometry", [(2, g) for g in GEOMETRIES] + [(3, g) for g in GEOMETRIES_3D])
def test_cpp_path_equals_the_dense_path_with_all_gradients(dims, geometry):
    cin, cout, size, k, batch, bias, rings = geometry
    torch.manual_seed(0)
    reference = SREConv(dims, cin, cout, k, bias=bias, num_rings=rings, path="dense").double()
    with torch.no_grad():
        reference.weight.normal_()
        if bias:
            reference.bias.normal_()
    shape = (size, size) if dims == 2 else (size, size + 1, size + 2)
    x = torch.randn(batch, cin, *shape, dtype=torch.float64, requires_grad=True)
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
    assert out.is_contiguous(memory_format=_channels_last_format(dims)) and out._base is None


@pytest.mark.parametrize("dims,channels,shape", [(2, 32, (5, 13, 17)), (2, 64, (2, 32, 32)), (3, 32, (3, 7, 9, 6))])
def test_cpp_path_is_the_same_at_one_and_two_threads(dims, channels, shape):
    torch.manual_seed(1)  # 64 channels at 32x32: the forward products on oneDNN
    conv = SREConv(dims, channels, 64, 9 if dims == 2 else 5, path="cpp").eval()
    x = torch.randn(shape[0], channels, *shape[1:])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = conv(x)
        torch.set_num_threads(2)
        two = conv(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)  # every tile is summed and multiplied alone: bitwise the same


def test_large_inference_products_run_on_onednn_with_atens_numbers(monkeypatch):
    assert ring_cpp.product_backend() == ("onednn" if torch.backends.mkldnn.is_available() else "aten")
    torch.manual_seed(8)
    conv = SREConv(2, 64, 64, 9, path="cpp").eval()  # tiles of 512 x 320 by 320 x 64: large enough for oneDNN
    x = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        y = conv(x)
        dense = torch.nn.functional.conv2d(x.double(), conv.dense_kernel().double(), conv.bias.double(), padding=4)
        monkeypatch.setenv(ring_cpp.ONEDNN_ENV, "0")
        assert ring_cpp.product_backend() == "aten"
        aten = conv(x)
        monkeypatch.delenv(ring_cpp.ONEDNN_ENV)
    assert _relative_error(aten, dense) < 2e-6 and _relative_error(y, dense) < 2e-6
    assert _relative_error(y, aten) < 2e-6
    # a training forward keeps ATen's product: bitwise the numbers of ATen's inference
    assert torch.equal(conv(x.requires_grad_()).detach(), aten)


def test_cpp_network_keeps_exact_quarter_turn_invariance():
    torch.manual_seed(2)
    net = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.25).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        paths = {m.select_path(torch.zeros(1, m.in_channels, 28, 28)) for m in net.modules() if isinstance(m, SREConv)}
        assert "cpp" in paths
        logits = net(x)
        for turns in (1, 2, 3):
            torch.testing.assert_close(net(torch.rot90(x, turns, (2, 3))), logits, rtol=0, atol=2e-5)


def test_cpp_3d_network_keeps_exact_invariance_under_the_cube_symmetries():
    torch.manual_seed(3)
    net = sre_resnet18(spatial_dims=3, n_input_channels=1, num_classes=3, widen_factor=0.25).eval()
    x = torch.randn(2, 1, 12, 12, 12)
    with torch.no_grad():
        paths = {m.select_path(torch.zeros(1, m.in_channels, 12, 12, 12)) for m in net.modules()
                 if isinstance(m, SREConv)}  # fmt: skip
        assert "cpp" in paths
        logits = net(x)
        for turned in (torch.rot90(x, 1, (2, 3)), torch.rot90(x, 1, (3, 4)), torch.rot90(x, 2, (2, 4)),
                       x.flip(3), x.permute(0, 1, 4, 2, 3)):  # fmt: skip
            torch.testing.assert_close(net(turned), logits, rtol=0, atol=2e-5)


def test_default_maps_have_compile_time_disk_sums():
    module = ring_cpp.cpp_extension()
    for dims in (2, 3):
        for k in (3, 5, 7, 9):
            conv = SREConv(dims, 4, 4, k)
            assert conv._disk_widths.shape == (k // 2 + 1, *[k] * (dims - 1))
            assert module.has_direct_sums(conv._disk_widths), (dims, k)  # disk_row / ball_row, not the buffer
        assert not module.has_direct_sums(SREConv(dims, 4, 4, 5, num_rings=2)._disk_widths)
        assert not module.has_direct_sums(SREConv(dims, 4, 4, 11)._disk_widths)


@pytest.mark.parametrize("bands", [[0, 1, 2, 3], [1, 2], [0, 2, 3], [3]])
def test_disk_mixing_is_the_difference_of_consecutive_bands_in_both_layouts(bands):
    torch.manual_seed(4)
    weight = torch.randn(6, 5, 4)  # (Cout, Cin, rings)
    w = weight[:, :, bands]
    v = w - torch.cat([w[:, :, 1:], torch.zeros_like(w[:, :, :1])], dim=2)  # V_i = W_i - W_{i+1}, the last W
    forward = ring_cpp.disk_mixing(weight, bands)
    assert forward.shape == (len(bands) * 5, 6)
    assert torch.equal(forward, v.permute(2, 1, 0).reshape(-1, 6))  # row i * Cin + c = V_i[:, c]
    transposed = ring_cpp.disk_mixing(weight, bands, transposed=True)
    assert transposed.shape == (len(bands) * 6, 5) and transposed.is_contiguous()
    assert torch.equal(transposed, v.permute(2, 0, 1).reshape(-1, 5))  # row i * Cout + o = V_i[o, :]
    scale = torch.randn(6)
    assert torch.equal(ring_cpp.disk_mixing(weight, bands, scale=scale), (v * scale.view(6, 1, 1)).permute(2, 1, 0)
                       .reshape(-1, 6))  # one output channel per column, scaled in the same pass
    with pytest.raises(RuntimeError, match="band 4 outside 0..3"):
        ring_cpp.disk_mixing(weight, [2, 4])
    with pytest.raises(RuntimeError, match="scale must be a float32 CPU tensor of 6 elements"):
        ring_cpp.disk_mixing(weight, bands, scale=torch.ones(5))


@pytest.mark.parametrize("dims", [2, 3])
def test_fused_inference_scales_and_adds_bias_residual_and_relu(dims):
    torch.manual_seed(6)
    k, spatial = (9, (11, 13)) if dims == 2 else (5, (5, 6, 7))
    conv = SREConv(dims, 16, 24, k, path="cpp")
    x, residual = torch.randn(3, 16, *spatial), torch.randn(3, 24, *spatial)
    scale, bias = torch.rand(24) + 0.5, torch.randn(24)
    convolve = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv3d
    dense = convolve(x.double(), conv.dense_kernel().detach().double(), padding=k // 2)
    per_channel = (1, -1) + (1,) * dims
    want = dense * scale.double().view(per_channel) + bias.double().view(per_channel) + residual.double()
    weight = conv.weight.detach()
    args = (weight, bias, conv._disk_widths, conv._bands, scale)
    plain = ring_cpp.fused_inference(x, *args, residual=residual)
    assert _relative_error(plain, want) < 2e-6 and (plain < 0).any()
    rectified = ring_cpp.fused_inference(x, *args, residual=residual, relu=True)
    assert torch.equal(rectified, plain.clamp_min(0))  # the same sums, clamped in the tile
    assert rectified.is_contiguous(memory_format=_channels_last_format(dims))
    without = ring_cpp.fused_inference(x, weight, None, conv._disk_widths, conv._bands)
    assert _relative_error(without, dense.float()) < 2e-6
    with pytest.raises(RuntimeError, match=r"residual must have the output's shape \[3, 24, " + str(spatial[0])):
        ring_cpp.fused_inference(x, *args, residual=residual[:, :12])


def test_inference_of_a_residual_ending_is_one_kernel_call_with_the_same_numbers(monkeypatch):
    from monai_sre.layers import sre_conv

    torch.manual_seed(7)
    conv = SREConv(2, 16, 24, 9, path="auto")
    x, residual = torch.randn(2, 16, 12, 12), torch.randn(2, 24, 12, 12)
    scale, shift = torch.rand(24) + 0.5, torch.randn(24)
    calls = []
    monkeypatch.setattr(sre_conv, "fused_inference", lambda *a: calls.append(a) or ring_cpp.fused_inference(*a))
    unfused = conv.forward_affine(x, scale, shift, residual=residual, relu=True)  # autograd on: the operators
    assert not calls and unfused.requires_grad
    with torch.no_grad():
        fused = conv.forward_affine(x, scale, shift, residual=residual, relu=True)
        assert len(calls) == 1
        torch.testing.assert_close(fused, unfused.detach(), rtol=1e-5, atol=1e-5)
        # a residual that broadcasts is added as `out += residual` by the operators, not by the kernel
        row = residual[:1, :, :1]
        torch.testing.assert_close(conv.forward_affine(x, scale, shift, residual=row), conv.forward_affine(
            x, scale, shift) + row, rtol=1e-5, atol=1e-5)  # fmt: skip
        # the broadcasting residual reached no kernel call: one for its convolution alone (the layer's own inference
        # path), one for the call without a residual
        assert len(calls) == 3 and all(len(a) == 5 or a[6] is None for a in calls[1:])


def test_cpp_network_inference_fuses_residual_adds_and_relus(monkeypatch):
    from monai_sre.layers import sre_conv

    torch.manual_seed(8)
    net = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.25)
    net(torch.randn(4, 1, 28, 28))  # running statistics that differ from the initial ones
    net.eval()
    calls = []
    monkeypatch.setattr(sre_conv, "fused_inference", lambda *a: calls.append(a) or ring_cpp.fused_inference(*a))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        fused = net(x)
    residual_adds = [a for a in calls if a[6] is not None]
    assert len(residual_adds) == 8 and all(a[7] for a in residual_adds)  # every block's end, with its ReLU
    unfused = net(x)  # autograd on: every operator on its own
    torch.testing.assert_close(fused, unfused.detach(), rtol=1e-5, atol=1e-5)


class _CountingKernel:
    """The compiled kernel module, counting the calls of each entry point."""

    def __init__(self, module):
        self.module, self.calls = module, {}

    def __getattr__(self, name):
        entry = getattr(self.module, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return entry(*args)

        return counted


@pytest.mark.parametrize("dims,shape", [(2, (2, 16, 12, 12)), (3, (2, 16, 6, 7, 8))])
def test_compiled_layer_runs_the_kernel_forward_and_backward_with_eagers_numbers(monkeypatch, dims, shape):
    # The kernel's entry points are operators (torch.ops.monai_sre.disk_conv, disk_conv_backward) with shape functions:
    # the compiler keeps each as one node of one graph, its backward included, instead of breaking the graph.
    torch.manual_seed(10)
    conv = SREConv(dims, 16, 24, 5, path="cpp")
    x = torch.randn(*shape, requires_grad=True)
    y = conv(x)
    want = torch.autograd.grad(y.square().sum(), [x, conv.weight, conv.bias])
    kernel = _CountingKernel(ring_cpp.cpp_extension())
    monkeypatch.setitem(ring_cpp._state, "module", kernel)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
        y2 = compiled(x)
        got = torch.autograd.grad(y2.square().sum(), [x, conv.weight, conv.bias])
        assert kernel.calls == {"disk_mixing": 2, "disk_conv": 1, "disk_conv_backward": 1}
        assert y2.shape == y.shape and y2.is_contiguous(memory_format=_channels_last_format(dims))
        assert _relative_error(y2.detach(), y.detach()) < 1e-6
        for g2, g in zip(got, want):
            assert _relative_error(g2, g) < 1e-6
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), conv(x), rtol=1e-6, atol=1e-6)
        assert kernel.calls["disk_conv"] == 3  # the compiled inference and the eager one
    finally:
        torch._dynamo.reset()


def test_compiled_network_keeps_the_kernel_in_one_graph_when_compiled_before_its_first_call(monkeypatch):
    # Compiled before any eager call, the kernel is not loaded when the compiler traces the path choice; tracing into
    # its build lock broke the graph at every SRE layer until cpp_available() became a constant of the trace.
    monkeypatch.setattr(ring_cpp, "_state", {})
    torch.manual_seed(11)
    net = sre_resnet18(spatial_dims=2, n_input_channels=1, num_classes=3, widen_factor=0.25)
    x = torch.randn(2, 1, 16, 16)
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(net)(x)  # training: the autograd function around the operators
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), [b.reason for b in
                                                                             explained.break_reasons]  # fmt: skip
        net.eval()
        kernel = _CountingKernel(ring_cpp.cpp_extension())
        monkeypatch.setitem(ring_cpp._state, "module", kernel)
        with torch.no_grad():
            net(x)
            eager_calls = kernel.calls["disk_conv"]
            explained = torch._dynamo.explain(net)(x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0)
        nodes = [str(n.target) for g in explained.graphs for n in g.graph.nodes if n.op == "call_function"]
        assert eager_calls >= 16 and nodes.count("monai_sre.disk_conv.default") == eager_calls
    finally:
        torch._dynamo.reset()


def test_disk_widths_of_the_default_9x9_map_and_maps_it_refuses():
    index = ring_index(9, 2)
    widths = ring_cpp.disk_widths(index, list(range(5)))
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


def test_auto_takes_the_cpp_path_where_it_pays_and_the_decomposed_path_elsewhere(monkeypatch):
    x64 = torch.randn(1, 64, 16, 16)
    assert SREConv(2, 64, 64, 9).select_path(x64) == "cpp"  # depth 5 * 64 = 320
    assert SREConv(2, 128, 128, 9).select_path(torch.randn(1, 128, 8, 8)) == "cpp"  # 640
    assert SREConv(2, 512, 512, 5).select_path(torch.randn(1, 512, 4, 4)) == "cpp"  # 1536
    assert SREConv(2, 1024, 8, 5).select_path(torch.randn(1, 1024, 4, 4)) == "cpp"  # 3072, CPP_MAX_DEPTH
    assert SREConv(2, 1025, 8, 5).select_path(torch.randn(1, 1025, 4, 4)) == "decomposed"  # deeper: not measured
    x3 = torch.randn(1, 64, 8, 8, 8)
    assert SREConv(3, 64, 64, 5).select_path(x3) == "cpp"  # 3D: depth 3 * 64 = 192
    assert SREConv(3, 256, 8, 5).select_path(torch.randn(1, 256, 4, 4, 4)) == "cpp"  # 768, CPP_MAX_DEPTH_3D
    assert SREConv(3, 257, 8, 5).select_path(torch.randn(1, 257, 4, 4, 4)) == "decomposed"
    assert SREConv(1, 32, 32, 5).select_path(torch.randn(1, 32, 8)) != "cpp"  # 2D and 3D only
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


def test_the_build_finds_the_ninja_dependency_when_its_folder_is_not_on_path(monkeypatch):
    import ninja
    import torch.utils.cpp_extension as cpp_extension

    seen = {}

    def record_path(*args, **kwargs):
        seen["PATH"] = ring_cpp.os.environ["PATH"]
        return "built"

    monkeypatch.setattr(ring_cpp, "_state", {})
    monkeypatch.setattr(ring_cpp.shutil, "which", lambda name: None)
    monkeypatch.setattr(cpp_extension, "load", record_path)
    monkeypatch.setenv("PATH", "/nowhere")
    assert ring_cpp.cpp_extension() == "built"
    assert seen["PATH"] == ninja.BIN_DIR + ring_cpp.os.pathsep + "/nowhere"
    assert ring_cpp.os.environ["PATH"] == "/nowhere"  # restored after the build


def test_the_first_build_is_announced_and_a_cached_one_is_not(monkeypatch, tmp_path, caplog):
    import logging

    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(cpp_extension, "load", lambda *args, **kwargs: "built")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = f"monai_sre_ring_cpu_{torch.backends.cpu.get_cpu_capability().lower()}"
    for cached in (False, True):
        if cached:  # what torch's load leaves behind
            (tmp_path / name).mkdir()
            (tmp_path / name / f"{name}.so").write_bytes(b"")
        monkeypatch.setattr(ring_cpp, "_state", {})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=ring_cpp.__name__):
            assert ring_cpp.cpp_extension() == "built"
        announced = [r.getMessage() for r in caplog.records if "building the fused CPU kernel" in r.getMessage()]
        assert len(announced) == (0 if cached else 1)
