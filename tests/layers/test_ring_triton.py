# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Triton path of SREConv against the dense path, and the measured choice of ``path="auto"``.

The kernel checks run on CUDA when there is one, and otherwise in Triton's interpreter on CPU tensors: the
interpreter is chosen when Triton is imported, so :func:`test_kernels_in_the_triton_interpreter` runs this file
again in a fresh interpreter with ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_sre import SREConv
from monai_sre.layers import ring_cpp, sre_conv
from monai_sre.layers.ring_ops import band_tap_offsets
from monai_sre.layers.rings import ring_index

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
kernels = pytest.mark.skipif(
    not _HAS_TRITON or not (torch.cuda.is_available() or _INTERPRETED),
    reason="the Triton kernels need CUDA or TRITON_INTERPRET=1; test_kernels_in_the_triton_interpreter runs them",
)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _both(dims: int, cin: int, cout: int, k, **kwargs) -> tuple[SREConv, SREConv]:
    dense = SREConv(dims, cin, cout, k, path="dense", device=_DEVICE, **kwargs)
    triton = copy.deepcopy(dense)
    triton.path = "triton"
    return dense, triton


def test_tap_offsets_cover_every_tap_once_grouped_by_band():
    index = ring_index(5, 2)
    offsets, starts = band_tap_offsets(index, [0, 1, 2], [2, 2], [4, 4])
    assert offsets.dtype == starts.dtype == torch.int32
    assert starts.tolist() == [0, 1, 9, 9 + int((index == 2).sum())]
    assert offsets[0].tolist() == [0, 0, 0]  # centre tap (2, 2) * dilation 2 - padding 4
    assert sorted(map(tuple, offsets[1:9, 1:].tolist())) == [(a, b) for a in (-2, 0, 2) for b in (-2, 0, 2)
                                                             if (a, b) != (0, 0)]  # fmt: skip
    assert len(offsets) == int((index >= 0).sum())
    offsets_3d, _ = band_tap_offsets(ring_index(3, 3), [0, 1], [1, 1, 1], [1, 1, 1])
    assert offsets_3d.abs().max() == 1 and offsets_3d.shape[1] == 3


# (dims, kernel, in, out, padding, dilation, size, bias): 'same' and other paddings, dilation, channel counts that are
# not multiples of the tiles, anisotropic kernels, 1D to 3D
_CASES = [
    (2, 9, 8, 12, 4, 1, 8, True),
    (2, 5, 3, 40, 0, 2, 13, False),
    (2, (3, 7), 20, 5, (1, 3), 1, 9, True),
    (3, 5, 4, 6, 1, 1, 4, True),
    (1, 7, 5, 3, 1, 1, 12, True),
]


@kernels
@pytest.mark.parametrize("dims,k,cin,cout,padding,dilation,size,bias", _CASES)
def test_triton_path_equals_dense_forward_and_backward(monkeypatch, dims, k, cin, cout, padding, dilation, size, bias):
    torch.manual_seed(cin + cout)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # both paths in true float32
    dense, triton = _both(dims, cin, cout, k, padding=padding, dilation=dilation, bias=bias)
    x = torch.randn(2, cin, *([size] * dims), device=_DEVICE)
    grads = []
    for module in (dense, triton):
        xi = x.clone().requires_grad_()
        y = module(xi)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(_DEVICE)
        (y * g).sum().backward()
        grads.append((y, [xi.grad] + [p.grad for p in module.parameters()]))
    (y1, g1), (y2, g2) = grads
    assert y2.shape == y1.shape and y2.dtype == y1.dtype
    assert _relative_error(y2, y1) < 1e-5
    for a, b in zip(g2, g1):
        assert a.shape == b.shape and _relative_error(a, b) < 1e-5
    # the band-weight gradient of the empty "outside" column stays 0, as on the dense path
    with torch.no_grad():
        assert _relative_error(triton.eval()(x), dense.eval()(x)) < 1e-5


@kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_path_under_autocast_and_channels_last(dtype):
    if dtype == torch.bfloat16 and _INTERPRETED:
        pytest.skip("Triton's interpreter gets bfloat16 dot products wrong (numpy has no bfloat16); checked on CUDA")
    torch.manual_seed(2)
    dense, triton = _both(2, 16, 24, 7)
    x = torch.randn(2, 16, 8, 8, device=_DEVICE).contiguous(memory_format=torch.channels_last)
    reference = dense(x)
    with torch.autocast(_DEVICE, dtype=dtype):
        y = triton(x.requires_grad_())
    tolerance = 2e-2 if dtype == torch.bfloat16 else 5e-3  # 8 and 11 mantissa bits
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert 1e-6 < _relative_error(y, reference) < tolerance
    y.float().sum().backward()
    assert triton.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    reference.sum().backward()
    assert _relative_error(triton.weight.grad, dense.weight.grad) < tolerance


@kernels
def test_triton_path_compiles_without_graph_breaks():
    # The kernels are PyTorch operators with shape functions: torch.compile keeps the layer in one graph (issue 17,
    # part 2) and the compiled layer gives the eager output and gradients. Inductor on CUDA; in the interpreter the
    # graph capture with AOT autograd (no C++ builds for a check of the capture).
    torch.manual_seed(5)
    conv = SREConv(2, 16, 24, 9, path="triton", device=_DEVICE)
    x = torch.randn(2, 16, 10, 10, device=_DEVICE, requires_grad=True)
    y = conv(x)
    eager = torch.autograd.grad(y.square().sum(), [x, conv.weight, conv.bias])
    torch._dynamo.reset()
    explained = torch._dynamo.explain(conv)(x)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(conv, fullgraph=True, backend="inductor" if _DEVICE == "cuda" else "aot_eager")
    y2 = compiled(x)
    grads = torch.autograd.grad(y2.square().sum(), [x, conv.weight, conv.bias])
    torch._dynamo.reset()
    assert y2.shape == y.shape and _relative_error(y2, y) < 1e-5
    for a, b in zip(grads, eager):
        assert a.shape == b.shape and _relative_error(a, b) < 1e-5


@kernels
def test_triton_path_with_an_empty_batch():
    dense, triton = _both(2, 8, 12, 5)
    x = torch.randn(0, 8, 7, 7, device=_DEVICE, requires_grad=True)
    y = triton(x)
    y.sum().backward()
    assert y.shape == dense(x).shape == (0, 12, 7, 7)
    assert x.grad.shape == x.shape and torch.equal(triton.weight.grad, torch.zeros_like(triton.weight))


def test_triton_path_refuses_what_it_cannot_run():
    conv = SREConv(2, 4, 4, 5, stride=2, path="triton")
    with pytest.raises(ValueError, match="path='triton'.*stride"):
        conv(torch.randn(1, 4, 8, 8))
    if not _INTERPRETED and not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            SREConv(2, 4, 4, 5, path="triton")(torch.randn(1, 4, 8, 8))


@pytest.mark.skipif(not _HAS_TRITON or _INTERPRETED, reason="Triton is not installed, or this is the interpreter run")
def test_kernels_in_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", __file__, "-k", "triton_path"],
        env=env, cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # every case, float16 autocast, the compiled layer, an empty batch and the refusals; bfloat16 is left to CUDA
    assert f"{len(_CASES) + 4} passed, 1 skipped" in result.stdout, result.stdout[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available() or not _HAS_TRITON, reason="measures real CUDA timings")
def test_auto_measures_the_paths_on_cuda(monkeypatch):
    monkeypatch.delenv(sre_conv.AUTOTUNE_ENV, raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(4)
    conv = SREConv(2, 64, 64, 9, device="cuda")
    dense = copy.deepcopy(conv)
    dense.path = "dense"
    x = torch.randn(8, 64, 16, 16, device="cuda", requires_grad=True)
    y = conv(x)
    assert len(conv._path_choice) == 1
    assert next(iter(conv._path_choice.values())) in ("dense", "decomposed", "triton")
    assert conv.weight.grad is None
    assert _relative_error(y, dense(x)) < 1e-5


# --------------------------------------------------------------------------------------- measured automatic choice
class _FakeClock:
    """Stands in for ``time_call``: the seconds of each path, and a log of what was timed (the candidates are timed
    in the order of ``seconds``)."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, fn, device, repeats: int = 3) -> float:
        fn()  # the candidate really runs (and must work)
        path = list(self.seconds)[len(self.calls) % len(self.seconds)]
        self.calls.append(path)
        return self.seconds[path]


@pytest.mark.parametrize("fastest", ["dense", "decomposed", "cpp"])
def test_auto_takes_the_measured_fastest_path_once_per_input_key(monkeypatch, fastest):
    monkeypatch.setenv(sre_conv.AUTOTUNE_ENV, "1")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(ring_cpp.CPP_ENV, raising=False)
    # on CPU the candidates are the dense, the decomposed and the C++ path
    clock = _FakeClock({path: 1.0 if path == fastest else 2.0 for path in ("dense", "decomposed", "cpp")})
    monkeypatch.setattr(sre_conv, "time_call", clock)
    torch.manual_seed(3)
    conv = SREConv(2, 8, 8, 5)
    dense = copy.deepcopy(conv)
    dense.path = "dense"
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    y = conv(x)
    assert clock.calls == ["dense", "decomposed", "cpp"]
    assert conv.select_path(x) == fastest
    assert conv.weight.grad is None  # measuring touched no parameter gradient
    torch.testing.assert_close(y, dense(x))
    conv(x)
    assert len(clock.calls) == 3  # the choice is kept for this key
    with torch.no_grad():
        conv(x)  # inference is another key: measured again
    assert len(clock.calls) == 6
    conv(x[:1])  # another shape too
    assert len(clock.calls) == 9


def test_auto_without_measuring_uses_the_static_choice(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("nothing may be timed")

    monkeypatch.setattr(sre_conv, "time_call", fail)
    conv = SREConv(2, 64, 64, 9)
    x = torch.randn(1, 64, 8, 8)
    monkeypatch.delenv(sre_conv.AUTOTUNE_ENV, raising=False)
    monkeypatch.delenv(ring_cpp.CPP_ENV, raising=False)
    assert conv.select_path(x) == "cpp"  # CPU: the cost model's decomposition, on the C++ kernel (depth 5 * 64)
    monkeypatch.setenv(sre_conv.AUTOTUNE_ENV, "0")
    assert conv.select_path(x) == "cpp"
    monkeypatch.setenv(ring_cpp.CPP_ENV, "0")
    assert conv.select_path(x) == "decomposed"
    assert SREConv(2, 1, 8, 3).select_path(torch.randn(1, 1, 8, 8)) == "dense"
