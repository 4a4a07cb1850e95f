# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The benchmark suites (``benchmarks/suite.py``) on tiny shapes: what they measure, how they report it, and how they
fail. Tests marked ``bench`` need the ``bench`` extra's baselines and skip with the reason without them."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import suite as bench
from monai_sre.layers.sre_conv import SREConv

_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# 4 channels with a 3x3 kernel take the dense path in training, the others the decomposed one.
_TINY_SHAPES = {2: [(8, 8, 9), (16, 4, 5), (4, 6, 3)], 3: [(4, 6, 5)]}
_TINY_BATCH = {2: 2, 3: 1}


@pytest.mark.parametrize(
    "model,dims,in_channels",
    [("monai_sre", 2, 3), ("monai", 2, 1), pytest.param("sre-conv", 2, 3, marks=pytest.mark.bench),
     pytest.param("gmr-conv", 2, 3, marks=pytest.mark.bench), ("monai_sre", 3, 1), ("monai", 3, 1),
     pytest.param("sre-conv", 3, 1, marks=pytest.mark.bench)],
)  # fmt: skip
def test_build_network_gives_logits(model, dims, in_channels):
    net = bench.build_network(model, dims, in_channels, 5, widen_factor=0.125 if model in ("monai_sre", "monai") else 1)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, in_channels, *([8] * dims))).shape == (2, 5)


@pytest.mark.bench  # builds the sre-conv / gmr-conv baselines
def test_build_network_configuration_of_the_issue():
    # 2D: kernels [9, 9, 5, 5] and a 5x5 stem at stride 1 for every SRE network; MONAI keeps its 3x3 stem.
    ours = bench.build_network("monai_sre", 2, 3, 9)
    assert [m.kernel_size[0] for m in ours.modules() if isinstance(m, SREConv)][:6] == [5, 9, 9, 9, 9, 9]
    public = bench.build_network("sre-conv", 2, 3, 9)
    assert public.layer1[0].conv1.kernel_size == (9, 9) and public.layer4[0].conv2.kernel_size == (5, 5)
    assert public.conv1.kernel_size == (5, 5) and isinstance(public.maxpool, torch.nn.Identity)
    monai = bench.build_network("monai", 2, 3, 9)
    assert monai.conv1.kernel_size == (3, 3) and monai.conv1.stride == (1, 1) and monai.no_max_pool
    assert bench.build_network("monai", 3, 1, 11).conv1.kernel_size == (5, 5, 5)


@pytest.mark.parametrize(
    "args,match",
    [
        (("resnet", 2, 3, 9), "model must be one of"),
        (("gmr-conv", 3, 1, 9), "2D only"),
        (("sre-conv", 2, 1, 9), "takes 3 input channels"),
        (("monai_sre", 4, 1, 9), "spatial_dims must be 2 or 3"),
    ],
)
def test_build_network_rejects_unsupported_configurations(args, match):
    with pytest.raises(ValueError, match=match):
        bench.build_network(*args)
    with pytest.raises(ValueError, match="has no widen_factor"):
        bench.build_network("sre-conv", 2, 3, 9, widen_factor=0.5)


@pytest.mark.bench  # builds the sre-conv / gmr-conv baselines
def test_layer_suite_rows_and_table():
    rows = bench.benchmark_layers((2, 3), repeats=2, shapes=_TINY_SHAPES, batch=_TINY_BATCH)
    assert [(r["dims"], r["channels"], r["size"], r["kernel"]) for r in rows] == [
        (2, 8, 8, 9), (2, 16, 4, 5), (2, 4, 6, 3), (3, 4, 6, 5)
    ]  # fmt: skip
    for row in rows:
        names = {"SREConv", "SREConv dense", f"nn.Conv {row['kernel']}", "nn.Conv 3", "sre-conv 1.0.2"}
        assert set(row["train_ms"]) == set(row["infer_ms"]) == names
        assert all(math.isfinite(v) and v > 0 for v in [*row["train_ms"].values(), *row["infer_ms"].values()])
        assert set(row["rounds"].values()) == {2}
        # the path a training step of that layer really takes, seen in its autograd graph
        conv = SREConv(row["dims"], row["channels"], row["channels"], row["kernel"], bias=False)
        x = torch.randn(1, row["channels"], *([row["size"]] * row["dims"]))
        taken = type(conv(x).grad_fn).__name__
        expected = {"RingDecomposedConv": "decomposed", "FusedRingConv": "cpp"}.get(taken.removesuffix("Backward"))
        assert row["path"] == (expected or "dense"), taken
    # decomposed layers run on the C++ kernel (the 3D one too, a default k=5 map), the thin 3x3 one densely
    assert [r["path"] for r in rows] == ["cpp", "cpp", "dense", "cpp"]
    table = bench.layers_markdown(rows)
    lines = [line for line in table.splitlines() if line.startswith("| 2D 8ch@8^2, k=9")]
    assert len(lines) == 2  # training and inference
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    t = rows[0]["train_ms"]
    assert cells[2] == rows[0]["path"]
    assert cells[8] == f"{t['sre-conv 1.0.2'] / t['SREConv']:.2f}x"
    assert cells[9] == f"{t['nn.Conv 9'] / t['SREConv']:.2f}x"


@pytest.mark.bench  # builds the sre-conv / gmr-conv baselines
def test_slow_contestants_get_one_round():
    rows = bench.benchmark_layers((2,), repeats=3, shapes={2: [(4, 6, 3)]}, batch={2: 1}, slow_seconds=0.0)
    assert set(rows[0]["rounds"].values()) == {1}


def test_network_suite_measures_throughput_memory_and_ratios():
    case = bench.NetworkCase("tiny", 2, 3, 16, 2, 3, ("monai_sre", "monai"), widen_factor=0.125, gpu_batch=8)
    # slow_seconds=inf: on a loaded 2-core machine bf16 (emulated without AVX-512) can take a warm-up step past the
    # default 20 s and drop to one round (seen beside two training runs); the one-round rule is not what this tests
    rows = bench.benchmark_networks([case], repeats=2, precisions=("fp32", "bf16"), slow_seconds=math.inf)
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("monai_sre", "fp32"), ("monai", "fp32"), ("monai_sre", "bf16"), ("monai", "bf16")
    ]  # fmt: skip
    for r in rows:
        assert r["rounds"] == 2 and r["batch"] == 2  # the CPU batch
        assert r["train_ips"] == pytest.approx(2 / (r["train_ms"] / 1000))
        assert r["infer_ips"] > 0 and r["peak_mb"] > 0 and r["parameters"] > 0
    reference = bench.build_network("monai_sre", 2, 3, 3, 0.125)
    assert rows[0]["parameters"] == sum(p.numel() for p in reference.parameters())
    table = bench.networks_markdown(rows)
    assert "tiny, batch 2, fp32; reference: monai_sre sre_resnet18" in table
    assert "tiny, batch 2, bf16; reference: monai_sre sre_resnet18" in table
    monai_line = next(line for line in table.splitlines() if line.startswith("| MONAI resnet18"))
    assert f"{rows[0]['train_ips'] / rows[1]['train_ips']:.2f}x" in monai_line
    with pytest.raises(ValueError, match="precisions must be among"):
        bench.benchmark_networks([case], precisions=("fp16",))


def test_a_slow_first_step_alone_does_not_cut_a_network_to_one_round(monkeypatch):
    class Worker:  # the driver's view of a worker process: its first training step pays a build
        def __init__(self, model, case, device, threads, precision, compiled=False):
            self.model, self.steps = model, 0

        def ask(self, command):
            if command == "train":
                self.steps += 1
                return 30.0 if self.steps == 1 or self.model == "monai" else 0.01
            return 1000 if command is None else 0.01 if command == "infer" else 2**20 if command == "memory" else None

        def stop(self):
            pass

    monkeypatch.setattr(bench, "_Worker", Worker)
    case = bench.NetworkCase("fake", 2, 3, 16, 2, 3, ("monai_sre", "monai"))
    rows = bench.benchmark_networks([case], repeats=3, precisions=("fp32",), slow_seconds=20.0)
    rounds = {r["model"]: r["rounds"] for r in rows}
    assert rounds == {"monai_sre": 3, "monai": 1}  # slow at its first step only: all rounds; slow throughout: one
    assert {r["model"]: r["train_ms"] for r in rows} == {"monai_sre": 10.0, "monai": 30000.0}


def test_compiled_networks_are_asked_of_every_worker_and_named_in_the_table(monkeypatch):
    made = []

    class Worker:  # the driver's view of a worker process
        def __init__(self, model, case, device, threads, precision, compiled=False):
            self.model = model
            made.append((model, precision, compiled))

        def ask(self, command):
            return 1000 if command is None else 2**20 if command == "memory" else None if command == "reset" else 0.01

        def stop(self):
            pass

    monkeypatch.setattr(bench, "_Worker", Worker)
    case = bench.NetworkCase("fake", 2, 3, 16, 2, 3, ("monai_sre", "monai"))
    rows = bench.benchmark_networks([case], repeats=1, compiled=True)
    assert made == [("monai_sre", "fp32", True), ("monai", "fp32", True)]
    assert [r["compiled"] for r in rows] == [True, True]
    assert "fake, batch 2, fp32, torch.compile; reference: monai_sre sre_resnet18" in bench.networks_markdown(rows)
    made.clear()
    assert not bench.benchmark_networks([case], repeats=1)[0]["compiled"] and [m[2] for m in made] == [False, False]
    seen = {}
    monkeypatch.setattr(bench, "run_benchmarks", lambda *a, **kw: seen.update(kw) or ("", {}))
    bench.main(["--suite", "networks", "--compile"])
    assert seen["compiled"] is True


@pytest.mark.slow  # compiles two small networks (about a minute on 2 cores)
def test_a_compiled_network_worker_trains_and_infers():
    case = bench.NetworkCase("tiny", 2, 3, 16, 2, 3, ("monai_sre",), widen_factor=0.125, gpu_batch=8)
    (row,) = bench.benchmark_networks([case], repeats=2, compiled=True, slow_seconds=math.inf)
    assert row["compiled"] and row["rounds"] == 2 and row["train_ms"] > 0 and row["infer_ms"] > 0


def test_cases_take_the_batch_of_the_device():
    by_name = {c.name: c for c in bench.NETWORK_CASES}
    assert by_name["2D 3x32x32"].batch_on("cpu") == 32 and by_name["2D 3x32x32"].batch_on("cuda:0") == 128
    assert by_name["3D 1x32^3"].batch_on("cpu") == 4 and by_name["3D 1x32^3"].batch_on("cuda") == 16
    assert bench.NetworkCase("x", 2, 1, 8, 3, 2, ("monai",)).batch_on("cuda") == 3


@pytest.mark.slow  # a worker process costs a few seconds of imports
def test_network_worker_failure_names_the_model():
    case = bench.NetworkCase("bad", 3, 1, 8, 1, 3, ("gmr-conv",))
    with pytest.raises(RuntimeError, match=r"worker for 'gmr-conv' failed: ValueError: gmr-conv 1.0.3 is compared"):
        bench.benchmark_networks([case], repeats=1)


def test_run_benchmarks_rejects_bad_arguments():
    with pytest.raises(ValueError, match="suite must be"):
        bench.run_benchmarks("everything")
    with pytest.raises(ValueError, match="spatial_dims must be 2 and/or 3"):
        bench.run_benchmarks("layers", (1,))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        bench.benchmark_layers((2,), repeats=0)


def test_interleaved_medians_alternate_the_order_after_untimed_warmups():
    seen, ticks = [], iter(range(1000))
    calls = {name: (lambda n=name: seen.append(n)) for name in ("a", "b", "c")}
    prepared = []
    result = bench.interleaved_medians(calls, 3, warmups=2, clock=lambda: float(next(ticks)), prepare=prepared.append)
    assert seen == ["a", "b", "c"] * 2 + ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert prepared == seen  # before every call, warm-ups too
    assert result == {"a": 1.0, "b": 1.0, "c": 1.0}  # warm-ups untimed: every timed call spans one tick


def test_sizes_select_the_network_cases(monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "benchmark_networks", lambda cases, **kwargs: seen.append([c.name for c in cases]) or [])
    monkeypatch.setattr(bench, "networks_markdown", lambda rows: "")
    bench.run_benchmarks("networks", (3,), sizes=[32])
    bench.run_benchmarks("networks", (2, 3), sizes=[28])
    bench.run_benchmarks("networks", (3,))
    assert seen == [["3D 1x32^3"], ["3D 1x28^3"], ["3D 1x32^3", "3D 1x28^3"]]


@pytest.mark.bench  # builds the sre-conv / gmr-conv baselines
def test_cli_writes_report_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "LAYER_SHAPES", {2: [(8, 8, 5)], 3: [(4, 6, 5)]})
    out, raw = tmp_path / "report.md", tmp_path / "raw.json"
    (tmp_path / "report.md").write_text("an earlier report")
    threads = torch.get_num_threads()
    try:
        rc = bench.main(["--suite", "layers", "--dims", "2", "--repeats", "1", "--threads", "1",
                         "--out", str(out), "--json", str(raw)], prog="python benchmarks/layers.py")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    printed = capsys.readouterr().out
    report = out.read_text()
    assert report.strip() == printed.strip()
    assert re.search(r"^Machine: .*torch threads 1", report, re.MULTILINE)
    assert "Command: `python benchmarks/layers.py --suite layers --dims 2 --repeats 1" in report
    assert "| 2D 8ch@8^2, k=5 |" in report and "3D" not in report.split("Layer forward")[1]
    data = json.loads(raw.read_text())
    assert data["networks"] == [] and len(data["layers"]) == 1 and data["layers"][0]["kernel"] == 5
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--out", "/nonexistent-folder/report.md"], "--out /nonexistent-folder/report.md: folder"),
    ],
)
def test_cli_bad_arguments(argv, message, capsys):
    assert bench.main(["--suite", "layers", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("script", ["layers.py", "networks.py"])
def test_scripts_run_the_suite(script):
    # The scripts import the suite from their own folder; a bad argument stops them before any timing.
    done = subprocess.run([sys.executable, str(_BENCHMARKS / script), "--repeats", "0"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert f"{script}: error: --repeats must be >= 1, got 0" in done.stderr


def test_ring_ab_compares_the_ring_ops_of_a_revision_with_the_checkout(monkeypatch):
    monkeypatch.syspath_prepend(str(_BENCHMARKS))  # the script imports the suite from its own folder
    import ring_ab

    import monai_sre.layers.sre_conv as sre_conv
    from monai_sre.layers import ring_ops

    base = ring_ab.load_base_ring_ops("HEAD")
    assert base is not ring_ops and base.__name__ == "ring_ops_HEAD"
    with pytest.raises(RuntimeError, match="no-such-revision"):
        ring_ab.load_base_ring_ops("no-such-revision")
    seen = []
    steps = {"a": lambda: seen.append(("a", sre_conv.ring_conv_forward)), "b": lambda: seen.append(("b", None))}
    ticks = iter(range(1000))
    result = ring_ab.compare(steps, {"old": base, "new": ring_ops}, 3, clock=lambda: float(next(ticks)))
    assert set(result) == {"a", "b"} and all(set(m) == {"old", "new"} for m in result.values())
    assert all(t == 1.0 for m in result.values() for t in m.values())  # each timed call spans one tick
    # step by step: warm-ups, then rounds alternating the order, each call with its variant's operator
    forwards = [f for s, f in seen if s == "a"]
    old, new = base.ring_conv_forward, ring_ops.ring_conv_forward
    assert forwards == [old, new, old, new, new, old, old, new]
    assert [s for s, _ in seen] == ["a"] * 8 + ["b"] * 8
    assert sre_conv.ring_conv_forward is new  # the checkout's operator is back in place


def test_ring_ab_rejects_bad_arguments():
    done = subprocess.run([sys.executable, str(_BENCHMARKS / "ring_ab.py"), "--repeats", "0"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "ring_ab.py: error: --repeats must be >= 1, got 0" in done.stderr


def test_band_mixing_variants_equal_the_dense_path_and_a_wrong_one_is_refused(monkeypatch):
    monkeypatch.syspath_prepend(str(_BENCHMARKS))  # the script imports the suite from its own folder
    import band_mixing

    rows = band_mixing.compare([(2, 2, 16, 8, 9), (3, 1, 8, 6, 5)], repeats=1, clock="cpu")
    assert [(r["dims"], r["kernel"]) for r in rows] == [(2, 9), (3, 5)]
    variants = {"layer", "one product", "1x1 convolutions"}
    cpp = {"C++ kernel", "C++, oneDNN product", "C++, ATen product"}  # the C++ path: 2D and 3D
    assert all(set(r["ms"]) == set(r["error"]) == variants | cpp for r in rows)
    assert all(e < 1e-4 for r in rows for e in r["error"].values())
    right = band_mixing.variants

    def with_a_wrong_one(conv, x):
        fns = right(conv, x)
        fns["1x1 convolutions"] = lambda f=fns["1x1 convolutions"]: 1.01 * f()
        return fns

    monkeypatch.setattr(band_mixing, "variants", with_a_wrong_one)
    with pytest.raises(AssertionError, match="1x1 convolutions differs from the dense path"):
        band_mixing.compare([(2, 1, 8, 6, 5)], repeats=1)
    assert band_mixing.main(["--repeats", "0"]) == 2


def test_revision_ab_extracts_the_base_package_and_summarizes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_BENCHMARKS))  # the script imports the suite from its own folder
    from benchmarks import revision_ab

    # the workers' cases are the network suite's own (2D 3x32x32, 3D 1x32^3), not a copy of them
    assert revision_ab._case(2) == dataclasses.asdict(bench.NETWORK_CASES[0])
    assert revision_ab._case(3)["name"] == "3D 1x32^3" and revision_ab._case(3)["batch"] == 4

    root = revision_ab.extract_package("HEAD", tmp_path)
    committed = subprocess.run(["git", "-C", str(revision_ab.REPO), "show", "HEAD:monai_sre/networks/sre_resnet.py"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert (root / "monai_sre" / "networks" / "sre_resnet.py").read_text() == committed
    assert not (root / "benchmarks").exists() and not (root / "tests").exists()  # the package only
    with pytest.raises(ValueError, match="'no-such-revision': git archive failed"):
        revision_ab.extract_package("no-such-revision", tmp_path)
    times = {"base": {"train": [0.3, 0.1, 0.2], "infer": [0.05]}, "current": {"train": [0.1, 0.1], "infer": [0.1]},
             "monai": {"train": [0.15], "infer": [0.2, 0.0, 0.1]}}
    out = revision_ab.summarize(times)
    assert out["base"] == pytest.approx({"train": 200.0, "infer": 50.0})
    assert out["base / current"] == pytest.approx({"train": 2.0, "infer": 0.5})
    assert out["monai / current"] == pytest.approx({"train": 1.5, "infer": 1.0})


@pytest.mark.parametrize("clock,expected", [("cpu", "7.0"), ("wall", "3.0")])
def test_revision_ab_worker_times_steps_by_the_clock_asked_for(monkeypatch, capsys, clock, expected):
    import io
    import itertools

    from benchmarks import revision_ab

    case = {**revision_ab._case(2), "batch": 2, "size": 8, "widen_factor": 0.25}
    # each clock answers its two readings (the step's start and end), then keeps the last
    ticks = {"process_time": itertools.chain([10.0], itertools.repeat(17.0)),
             "perf_counter": itertools.chain([1.0], itertools.repeat(4.0))}  # fmt: skip
    monkeypatch.setattr(revision_ab.time, "process_time", lambda: next(ticks["process_time"]))
    monkeypatch.setattr(revision_ab.time, "perf_counter", lambda: next(ticks["perf_counter"]))
    monkeypatch.setattr(sys, "stdin", io.StringIO("infer\n"))
    revision_ab._worker("monai", case, 1, clock)
    assert capsys.readouterr().out.split() == ["ready", expected]


def test_revision_ab_worker_runs_the_compiled_network_when_asked(monkeypatch, capsys):
    import io

    from benchmarks import revision_ab

    case = {**revision_ab._case(2), "batch": 2, "size": 8, "widen_factor": 0.25}
    compiled, calls = [], []

    def fake_compile(net):  # torch.compile's stand-in: records the network and every call of the compiled one
        compiled.append(net)
        return lambda x: calls.append(tuple(x.shape)) or net(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(sys, "stdin", io.StringIO("train\ninfer\n"))
    revision_ab._worker("monai", case, 1, "wall", compiled=True)
    assert len(compiled) == 1 and calls == [(2, 3, 8, 8)] * 2
    assert capsys.readouterr().out.split()[0] == "ready"
    calls.clear()
    monkeypatch.setattr(sys, "stdin", io.StringIO("infer\n"))
    revision_ab._worker("monai", case, 1, "wall")
    assert len(compiled) == 1 and not calls  # not asked: the network itself


@pytest.mark.parametrize("argv,message", [
    ([], "--base is required"),
    (["--base", "HEAD", "--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--base", "no-such-revision"], "--base 'no-such-revision': git archive failed"),
])
def test_revision_ab_rejects_bad_arguments(argv, message):
    done = subprocess.run([sys.executable, str(_BENCHMARKS / "revision_ab.py"), *argv], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and f"revision_ab.py: error: {message}" in done.stderr


def test_benchmarks_are_not_in_the_installed_package():
    # Benchmark tooling (third-party networks, /proc, subprocesses) lives in benchmarks/, not in monai_sre.
    import monai_sre
    from monai_sre.cli import build_parser

    assert not (Path(monai_sre.__file__).parent / "benchmarking.py").exists()

    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark"])


def test_band_parameterisation_step_table_supports_band_scale_for():
    """The measurement behind ``monai_sre.optim.band_scale_for``: on real BreastMNIST features one SGD step moves
    every tap of every band as far as a dense 9x9 kernel's tap only with ``rsqrt_taps``, one Adam step only with
    ``none``; the other scale leaves the step growing (SGD) or shrinking (Adam) with the band's size."""
    from benchmarks import band_parameterisation

    rows = band_parameterisation.steps(seed=0)
    step = {(r["optimizer"], r["scale"], r["band"]): r["tap_step"] for r in rows}
    bands = range(5)
    for optimizer, matched, other in (("sgd 2e-2", "rsqrt_taps", "none"), ("adam 1e-3", "none", "rsqrt_taps")):
        for b in bands:
            assert step[optimizer, matched, b] == pytest.approx(step[optimizer, "dense 9x9", b], rel=0.15)
        ratio = step[optimizer, other, 4] / step[optimizer, other, 0]  # 32-tap band against the 1-tap centre
        assert ratio > 10 if optimizer.startswith("sgd") else ratio < 0.3
    assert {r["taps"] for r in rows if r["band"] == 4} == {32}


def test_early_training_augmentation_switch_trains_on_the_bundles_augmented_images(data_root, tmp_path):
    """``early_training.py --augmentation rotation`` (the diagnostic behind issue 14's plateau reading) feeds the
    network the bundles' rotation augmentation: the same seed gives the same first epoch without it, another with
    it, and the record names the switch."""
    from benchmarks import early_training

    def first_epoch(augmentation: str) -> dict:
        out = tmp_path / f"{augmentation}.json"
        argv = ["--model", "resnet", "--widen-factor", "0.125", "--batch-size", "128", "--epochs", "1",
                "--augmentation", augmentation, "--json", str(out)]
        assert early_training.main(argv) == 0
        record = json.loads(out.read_text())
        assert record["args"]["augmentation"] == augmentation
        assert len(record["rows"]) == 1 and 0.0 <= record["rows"][0]["val_auc"] <= 1.0
        return record["rows"][0]

    plain, again, rotated = first_epoch("none"), first_epoch("none"), first_epoch("rotation")
    assert plain["train_loss"] == pytest.approx(again["train_loss"], rel=1e-6)
    assert rotated["train_loss"] != pytest.approx(plain["train_loss"], rel=1e-3)
    with pytest.raises(SystemExit):
        early_training.main(["--augmentation", "flip"])


def test_step_profile_sorts_operators_and_computes_the_ceilings(monkeypatch):
    monkeypatch.syspath_prepend(str(_BENCHMARKS))  # the script imports the suite from its own folder
    import step_profile

    assert [step_profile.classify(n) for n in ("aten::baddbmm_", "aten::mkldnn_convolution", "aten::add_")] == [
        "products", "convolutions", "rest"]
    sre = {"products": 50.0, "convolutions": 30.0, "rest": 20.0, "total": 100.0}
    monai = {"products": 0.0, "convolutions": 140.0, "rest": 10.0, "total": 150.0}
    assert step_profile.ceilings(sre, monai) == pytest.approx(
        {"measured": 1.5, "convolutions free": 150 / 70, "products only": 3.0})
    net = bench.build_network("monai_sre", 2, 3, 5, widen_factor=0.125)
    shares = step_profile.profile_step(net, torch.randn(2, 3, 8, 8), torch.tensor([0, 4]), "train", steps=1)
    assert set(shares) == {"products", "convolutions", "rest", "total"}
    assert shares["total"] == pytest.approx(shares["products"] + shares["convolutions"] + shares["rest"])
    assert min(shares.values()) >= 0 and shares["total"] > 0
    with pytest.raises(SystemExit):
        step_profile.main(["--steps", "0"])
