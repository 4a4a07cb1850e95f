# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Side-by-side speed and memory of SRE layers and networks against dense convolutions and the public SRE code.

Two suites, both printing Markdown tables with ratios:

- layers: the conv layers of SRE-ResNet-18's four stages (2D: 64ch@32^2, 128@16^2, 256@8^2, 512@4^2 with
  ``k = 9, 9, 5, 5``, batch 32; 3D: ``k = 5`` at 32^3 ... 4^3, batch 4), forward+backward and inference time of
  :class:`~monai_sre.layers.SREConv` (its automatic path, and the dense path) beside ``torch.nn.Conv`` with the same
  kernel, a 3x3 ``torch.nn.Conv`` and sre-conv 1.0.2's ``SRE_Conv``;
- networks: training-step and inference throughput and peak training memory of ``sre_resnet18`` against sre-conv
  1.0.2, gmr-conv 1.0.3 and MONAI's ``resnet18``, in float32 and under bfloat16 autocast, with the batch of the
  device (2D 32 on CPU, 128 on GPU; 3D 4 and 16). Every network runs in its own worker process, so that its peak
  memory is measured alone (peak resident set size minus the size before the first step on CPU; peak allocated
  memory after the warm-up step, which holds one-off costs such as ``path="auto"``'s measurements, on CUDA), while
  the driver interleaves the workers' timed steps round by round.

Timing: one warm-up step (two for networks: the first pays one-off costs such as building the C++ kernel), then rounds
that run every contestant once each, interleaved; the median over rounds is reported, since other processes sharing
the CPU slow some rounds down. Contestants whose (last) warm-up step exceeds ``slow_seconds`` get one timed round (the
relative noise of such long steps is small).

The baselines need ``pip install "monai-sre[bench]"`` (sre-conv, gmr-conv, torchio, torchvision).

This file is benchmark tooling, not part of the installed package: ``benchmarks/layers.py`` and
``benchmarks/networks.py`` run it (:func:`main`), and the network suite runs this file again as its worker processes
(``python suite.py --worker SPEC``), which import ``monai_sre`` from the same environment as the driver.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_sre.io.files import write_text
from monai_sre.layers import SREConv
from monai_sre.layers.ring_ops import triton_available
from monai_sre.networks import sre_resnet18

__all__ = [
    "LAYER_SHAPES",
    "LAYER_BATCH",
    "NetworkCase",
    "NETWORK_CASES",
    "PRECISIONS",
    "build_network",
    "benchmark_layers",
    "benchmark_networks",
    "layers_markdown",
    "networks_markdown",
    "machine_summary",
    "interleaved_medians",
    "run_benchmarks",
    "main",
]

#: ``(channels, spatial size, kernel size)`` of the conv layers of SRE-ResNet-18's four stages.
LAYER_SHAPES: dict[int, list[tuple[int, int, int]]] = {
    2: [(64, 32, 9), (128, 16, 9), (256, 8, 5), (512, 4, 5)],
    3: [(64, 32, 5), (128, 16, 5), (256, 8, 5), (512, 4, 5)],
}
#: Batch size of the layer suite, as in the network suite.
LAYER_BATCH: dict[int, int] = {2: 32, 3: 4}

_BASELINE_HINT = 'install the baselines with `pip install "monai-sre[bench]"` (sre-conv 1.0.2, gmr-conv 1.0.3)'


@dataclass(frozen=True)
class NetworkCase:
    """One network comparison: an input configuration and the models that run on it.

    Attributes:
        name: label of the case in the report.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        size: image side length.
        batch: batch size on CPU.
        num_classes: outputs of the classifier.
        models: keys of :func:`build_network`; the first is the reference of the ratios.
        widen_factor: channel multiplier of the monai_sre and MONAI networks (the baselines have none; tests use
            small values to stay fast).
        gpu_batch: batch size on GPUs (None: ``batch``).
    """

    name: str
    spatial_dims: int
    in_channels: int
    size: int
    batch: int
    num_classes: int
    models: tuple[str, ...]
    widen_factor: float = 1.0
    gpu_batch: int | None = None

    def batch_on(self, device: str | torch.device) -> int:
        """The batch size on ``device``: :attr:`gpu_batch` on CUDA, :attr:`batch` elsewhere."""
        return self.gpu_batch or self.batch if torch.device(device).type == "cuda" else self.batch


#: The comparisons of the SRE-ResNet-18 speed issue.
NETWORK_CASES: tuple[NetworkCase, ...] = (
    NetworkCase("2D 3x32x32", 2, 3, 32, 32, 9, ("monai_sre", "sre-conv", "gmr-conv", "monai"), gpu_batch=128),
    NetworkCase("3D 1x32^3", 3, 1, 32, 4, 11, ("monai_sre", "sre-conv", "monai"), gpu_batch=16),
    NetworkCase("3D 1x28^3", 3, 1, 28, 4, 11, ("monai_sre", "sre-conv", "monai"), gpu_batch=16),
)
#: The benchmark scripts' ``--clock`` choices: wall-clock time, or the process's CPU time (steadier with one thread on
#: a shared machine: it leaves out the time other jobs hold the core).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}

#: Precisions of the network suite: float32, and bfloat16 autocast (forward under ``torch.autocast``, as in
#: mixed-precision training; parameters, gradients and optimizer in float32).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

_MODEL_LABELS = {
    "monai_sre": "monai_sre sre_resnet18",
    "sre-conv": "sre-conv 1.0.2",
    "gmr-conv": "gmr-conv 1.0.3 gmr_resnet18",
    "monai": "MONAI resnet18",
}


def build_network(
    model: str, spatial_dims: int, in_channels: int, num_classes: int, widen_factor: float = 1.0
) -> nn.Module:
    """Build one network of the comparison in the configuration of the speed issue.

    - ``"monai_sre"``: :func:`~monai_sre.networks.sre_resnet18` with its MedMNIST defaults (2D kernels
      ``[9, 9, 5, 5]``, 3D kernel 5, 5-voxel stem at stride 1, no max-pool);
    - ``"sre-conv"``: sre-conv 1.0.2, ``sre_resnet18(sre_conv_size=[9, 9, 5, 5], skip_first_maxpool=True)`` (its
      README's 2D setting: 5x5 SRE stem at stride 1) or ``sre_r3d_18(sre_conv_size=5)`` in 3D;
    - ``"gmr-conv"``: gmr-conv 1.0.3, ``gmr_resnet18(gmr_conv_size=[9, 9, 5, 5], skip_first_maxpool=True)`` (2D);
    - ``"monai"``: MONAI ``resnet18`` with a stride-1 stem and no max-pool: ``conv1_t_size=3`` in 2D (the MedMNIST
      protocol), 5 in 3D (the stem of ``sre_resnet18``).

    Args:
        model: one of ``"monai_sre"``, ``"sre-conv"``, ``"gmr-conv"``, ``"monai"``.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: outputs of the classifier.
        widen_factor: channel multiplier (monai_sre and MONAI only).

    Returns:
        the network (on CPU, in training mode).

    Raises:
        ValueError: for an unknown model, or a configuration the model does not support.
        ImportError: when a baseline package is not installed.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if model == "monai_sre":
        return sre_resnet18(
            spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, widen_factor=widen_factor
        )
    if model == "monai":
        from monai.networks.nets import resnet18

        return resnet18(
            spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes,
            conv1_t_size=3 if spatial_dims == 2 else 5, conv1_t_stride=1, no_max_pool=True, widen_factor=widen_factor,
        )  # fmt: skip
    if model not in ("sre-conv", "gmr-conv"):
        raise ValueError(f"model must be one of {sorted(_MODEL_LABELS)}, got {model!r}.")
    if widen_factor != 1.0:
        raise ValueError(f"{model} has no widen_factor; got widen_factor={widen_factor}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # both packages warn about torchvision internals on import
            if model == "sre-conv" and spatial_dims == 2:
                if in_channels != 3:
                    raise ValueError(f"sre-conv 1.0.2's sre_resnet18 takes 3 input channels, got {in_channels}.")
                from SRE_Conv import sre_resnet18 as public_sre_resnet18

                return public_sre_resnet18(num_classes=num_classes, sre_conv_size=[9, 9, 5, 5], skip_first_maxpool=True)
            if model == "sre-conv":
                from SRE_Conv.sre_resnet_3d import sre_r3d_18

                return sre_r3d_18(sre_conv_size=5, in_channels=in_channels, num_classes=num_classes)
            if spatial_dims != 2:
                raise ValueError("gmr-conv 1.0.3 is compared in 2D only.")
            from GMR_Conv import gmr_resnet18

            return gmr_resnet18(
                num_classes=num_classes, gmr_conv_size=[9, 9, 5, 5], skip_first_maxpool=True, in_channels=in_channels
            )
    except ModuleNotFoundError as e:
        raise ImportError(f"{model} is not installed ({e}); {_BASELINE_HINT}.") from e


# ------------------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def interleaved_medians(
    calls: dict[str, Callable[[], Any]],
    repeats: int,
    warmups: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    prepare: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Median seconds of each call, interleaved: ``warmups`` untimed rounds in order, then ``repeats`` timed rounds of
    one call each, in reverse order every other round, so that a drift of the machine's speed or of the allocator's
    state favours none of them (timed one after the other, the first call timed pays for the allocator's growth).

    Args:
        calls: named callables to time.
        repeats: timed rounds.
        warmups: untimed rounds first.
        clock: seconds now: wall-clock (``time.perf_counter``) or the process's CPU time (``time.process_time``).
        prepare: called with a call's name before each of its calls, untimed (e.g. to switch an implementation).

    Returns:
        ``{name: median seconds}``.
    """
    order = list(calls)
    times: dict[str, list[float]] = {name: [] for name in order}
    for round_ in range(-warmups, repeats):
        for name in order if round_ < 0 or round_ % 2 == 0 else order[::-1]:
            if prepare is not None:
                prepare(name)
            if round_ < 0:
                calls[name]()
                continue
            start = clock()
            calls[name]()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# -------------------------------------------------------------------------------------------------- layer suite
def _layer_contestants(spatial_dims: int, channels: int, kernel: int) -> dict[str, Callable[[], nn.Module]]:
    conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]

    def public_sre() -> nn.Module:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from SRE_Conv import SRE_Conv2d, SRE_Conv3d
        except ModuleNotFoundError as e:
            raise ImportError(f"sre-conv is not installed ({e}); {_BASELINE_HINT}.") from e
        return (SRE_Conv2d, SRE_Conv3d)[spatial_dims - 2](channels, channels, kernel, padding=kernel // 2, bias=False)

    return {
        "SREConv": lambda: SREConv(spatial_dims, channels, channels, kernel, bias=False),
        "SREConv dense": lambda: SREConv(spatial_dims, channels, channels, kernel, bias=False, path="dense"),
        "SREConv triton": lambda: SREConv(spatial_dims, channels, channels, kernel, bias=False, path="triton"),
        f"nn.Conv {kernel}": lambda: conv(channels, channels, kernel, padding=kernel // 2, bias=False),
        "nn.Conv 3": lambda: conv(channels, channels, 3, padding=1, bias=False),
        "sre-conv 1.0.2": public_sre,
    }


def _layer_train_step(module: nn.Module, x: torch.Tensor) -> None:
    module(x).sum().backward()


def _layer_inference(module: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        module(x)


def benchmark_layers(
    spatial_dims: Sequence[int] = (2, 3),
    repeats: int = 5,
    device: str | torch.device = "cpu",
    shapes: dict[int, list[tuple[int, int, int]]] | None = None,
    batch: dict[int, int] | None = None,
    slow_seconds: float = 20.0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time forward+backward and inference of SREConv beside dense convolutions and sre-conv 1.0.2's layer.

    Args:
        spatial_dims: which dimensionalities to run (2 and/or 3).
        repeats: timed rounds per layer shape (the median is reported).
        device: torch device.
        shapes: ``{dims: [(channels, size, kernel), ...]}``; default :data:`LAYER_SHAPES`.
        batch: ``{dims: batch size}``; default :data:`LAYER_BATCH`.
        slow_seconds: contestants whose warm-up forward+backward takes longer get one timed round.
        progress: called with a line of text after each shape (e.g. ``print``).

    Returns:
        one row per shape: ``dims, channels, size, kernel, batch, path`` (the path SREConv's automatic choice
        runs in training), ``train_ms`` and ``infer_ms`` (``{contestant: median ms}``; "SREConv triton" on CUDA
        only) and ``rounds``.

    Raises:
        ValueError: for ``repeats < 1`` or an unsupported dimensionality.
        ImportError: when sre-conv is not installed.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    device = torch.device(device)
    shapes = LAYER_SHAPES if shapes is None else shapes
    batch = LAYER_BATCH if batch is None else batch
    rows = []
    for dims in spatial_dims:
        if dims not in shapes:
            raise ValueError(f"spatial_dims must be among {sorted(shapes)}, got {dims}.")
        for channels, size, kernel in shapes[dims]:
            torch.manual_seed(0)
            makers = _layer_contestants(dims, channels, kernel)
            if not triton_available(device) or device.type != "cuda":  # the Triton path: CUDA only
                del makers["SREConv triton"]
            modules = {name: make().to(device) for name, make in makers.items()}
            x = torch.randn((batch[dims], channels) + (size,) * dims, device=device, requires_grad=True)
            path = modules["SREConv"].select_path(x)  # the training path (measured on CUDA, before any timing)

            train_times: dict[str, list[float]] = {name: [] for name in modules}
            infer_times: dict[str, list[float]] = {name: [] for name in modules}
            slow = set()
            for r in range(-1, repeats):  # round -1 warms up: allocator, oneDNN primitives, caches
                for name, m in modules.items():
                    if r > 0 and name in slow:
                        continue
                    # Mode switches stay untimed: sre-conv 1.0.2 rebuilds its dense kernel cache in eval().
                    m.train()
                    seconds = _timed(partial(_layer_train_step, m, x), device)
                    m.eval()
                    infer_seconds = _timed(partial(_layer_inference, m, x), device)
                    m.zero_grad(set_to_none=True)
                    x.grad = None
                    if r < 0:
                        if seconds > slow_seconds:
                            slow.add(name)
                        continue
                    train_times[name].append(seconds)
                    infer_times[name].append(infer_seconds)
            row = {
                "dims": dims, "channels": channels, "size": size, "kernel": kernel, "batch": batch[dims],
                "path": path,
                "train_ms": {n: 1000 * _median(t) for n, t in train_times.items()},
                "infer_ms": {n: 1000 * _median(t) for n, t in infer_times.items()},
                "rounds": {n: len(t) for n, t in train_times.items()},
            }  # fmt: skip
            rows.append(row)
            if progress is not None:
                progress(f"layer {dims}D {channels}ch@{size}, k={kernel}: done")
    return rows


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def layers_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown tables (training, then inference) of :func:`benchmark_layers` rows, with ratios to SREConv.

    Args:
        rows: the output of :func:`benchmark_layers`.

    Returns:
        the tables; a ratio ``r`` in column "X / SREConv" means SREConv is ``r`` times faster than X.
    """
    out = []
    triton = any("SREConv triton" in row["train_ms"] for row in rows)
    for key, title in (("train_ms", "forward+backward"), ("infer_ms", "inference (eval, no grad)")):
        out.append(f"Layer {title}, median ms (ratio = other / SREConv, > 1 means SREConv is faster):\n")
        out.append(
            "| layer | batch | SREConv path | SREConv | SREConv dense | nn.Conv kxk | nn.Conv 3x3 | sre-conv 1.0.2 "
            "| sre-conv 1.0.2 / SREConv | nn.Conv kxk / SREConv | nn.Conv 3x3 / SREConv |"
            + (" SREConv triton | nn.Conv 3x3 / SREConv triton |" if triton else "")
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if triton else ""))
        for row in rows:
            t = row[key]
            same = t[f"nn.Conv {row['kernel']}"]
            layer = f"{row['dims']}D {row['channels']}ch@{row['size']}^{row['dims']}, k={row['kernel']}"
            out.append(
                f"| {layer} | {row['batch']} | {row['path']} | {t['SREConv']:.1f} | {t['SREConv dense']:.1f} "
                f"| {same:.1f} | {t['nn.Conv 3']:.1f} | {t['sre-conv 1.0.2']:.1f} "
                f"| {_ratio(t['sre-conv 1.0.2'], t['SREConv'])} | {_ratio(same, t['SREConv'])} "
                f"| {_ratio(t['nn.Conv 3'], t['SREConv'])} |"
                + (f" {t['SREConv triton']:.1f} | {_ratio(t['nn.Conv 3'], t['SREConv triton'])} |" if triton else "")
            )
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ network suite
def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no procfs: the peak so far is the closest available baseline
        return _peak_resident_bytes()


def _peak_resident_bytes() -> int:
    # VmHWM is this address space's high-water mark; ru_maxrss would keep the parent's size across fork and exec.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _worker_main(spec_json: str) -> None:
    """Worker process: build one network from the JSON ``spec_json`` and answer the driver's commands read from
    stdin (``train``, ``infer``, ``memory``, ``stop``), one JSON line per answer on stdout."""

    def answer(status: str, value: Any) -> None:
        sys.stdout.write(json.dumps([status, value]) + "\n")
        sys.stdout.flush()

    try:
        spec = json.loads(spec_json)
        case = spec["case"]
        torch.set_num_threads(spec["threads"])
        dev = torch.device(spec["device"])
        torch.manual_seed(0)
        net = build_network(spec["model"], case["spatial_dims"], case["in_channels"], case["num_classes"],
                            case["widen_factor"]).to(dev)  # fmt: skip
        batch = spec["batch"]
        x = torch.randn((batch, case["in_channels"]) + (case["size"],) * case["spatial_dims"], device=dev)
        y = torch.randint(0, case["num_classes"], (batch,), device=dev)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        bf16 = spec["precision"] == "bf16"
        # torch.compile (default backend): the first training step and the first inference pay the compilation
        model = torch.compile(net) if spec.get("compiled") else net

        def train() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()

        def infer() -> None:
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                model(x)

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            baseline = torch.cuda.memory_allocated(dev)
        else:
            baseline = _resident_bytes()
        answer("ok", sum(p.numel() for p in net.parameters()))
        for line in sys.stdin:
            command = line.strip()
            if command == "train":
                net.train()
                answer("ok", _timed(train, dev))
            elif command == "infer":
                net.eval()
                answer("ok", _timed(infer, dev))
            elif command == "reset":  # after the warm-up: one-off allocations stay out of the CUDA peak
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                    baseline = torch.cuda.memory_allocated(dev)
                answer("ok", None)
            elif command == "memory":
                peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _peak_resident_bytes()
                answer("ok", max(peak - baseline, 0))
            else:
                break
    except Exception as e:  # noqa: BLE001 - any failure goes to the driver, which raises it with the model's name
        answer("error", f"{type(e).__name__}: {e}")


class _Worker:
    """Driver side of one worker process (a fresh interpreter, so that its peak memory is its network's alone)."""

    def __init__(self, model: str, case: NetworkCase, device: str, threads: int, precision: str,
                 compiled: bool = False) -> None:
        self.model = model
        spec = json.dumps({"model": model, "case": asdict(case), "device": device, "threads": threads,
                           "batch": case.batch_on(device), "precision": precision, "compiled": compiled})  # fmt: skip
        # This file, run as a script in the driver's interpreter and environment.
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", spec], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )

    def ask(self, command: str | None) -> Any:
        """Send ``command`` (None: only read the start-up answer) and return the worker's answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"benchmark worker for {self.model!r} exited with code {self.process.wait()} (see its error output)"
            )
        status, value = json.loads(line)
        if status == "error":
            raise RuntimeError(f"benchmark worker for {self.model!r} failed: {value}")
        return value

    def stop(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class _NetworkResult:
    model: str
    parameters: int
    train_s: list[float] = field(default_factory=list)
    infer_s: list[float] = field(default_factory=list)
    peak_bytes: int = 0


def benchmark_networks(
    cases: Sequence[NetworkCase] | None = None,
    repeats: int = 3,
    device: str | torch.device = "cpu",
    slow_seconds: float = 20.0,
    progress: Callable[[str], None] | None = None,
    precisions: Sequence[str] = ("fp32",),
    compiled: bool = False,
) -> list[dict[str, Any]]:
    """Training-step and inference throughput and peak training memory of the networks of each case.

    Each network lives in its own worker process (a fresh interpreter), so its memory is measured alone; the driver
    runs two warm-up training steps and one inference per worker, then ``repeats`` rounds that interleave the workers (a
    training step and an inference each), then asks every worker for its peak memory. A training step is SGD
    (momentum 0.9) on a cross-entropy loss of a random batch.

    Args:
        cases: the comparisons; None runs :data:`NETWORK_CASES`.
        repeats: timed rounds (the median is reported).
        device: torch device (``"cpu"``, ``"cuda"``, ...).
        slow_seconds: networks whose second warm-up training step takes longer get one timed round.
        progress: called with a line of text after each case (e.g. ``print``).
        precisions: among :data:`PRECISIONS`; each case runs in each.
        compiled: every network runs through ``torch.compile`` (default backend; the warm-up pays the compilation).

    Returns:
        one row per case, precision and model: ``case, precision, compiled, model, label, parameters, batch,
        train_ms, infer_ms, train_ips, infer_ips`` (images per second), ``peak_mb`` and ``rounds``.

    Raises:
        ValueError: for ``repeats < 1`` or an unknown precision.
        RuntimeError: when a worker fails (the message names the model and the error).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"precisions must be among {PRECISIONS}, got {list(precisions)}.")
    device = str(torch.device(device))
    threads = torch.get_num_threads()
    rows = []
    runs = [(case, precision) for case in (NETWORK_CASES if cases is None else cases) for precision in precisions]
    for case, precision in runs:
        workers = [_Worker(model, case, device, threads, precision, compiled) for model in case.models]
        try:
            results = [_NetworkResult(w.model, w.ask(None)) for w in workers]
            slow = set()
            for w in workers:
                # The first step pays one-off costs (in a fresh process: the C++ kernel's build or load, oneDNN's
                # primitives); the second tells a slow network (a first build once gave sre_resnet18 one round).
                w.ask("train")
                if w.ask("train") > slow_seconds:
                    slow.add(w.model)
                w.ask("infer")
                w.ask("reset")
            for r in range(repeats):
                for w, res in zip(workers, results):
                    if r > 0 and w.model in slow:
                        continue
                    res.train_s.append(w.ask("train"))
                    res.infer_s.append(w.ask("infer"))
            for w, res in zip(workers, results):
                res.peak_bytes = w.ask("memory")
        finally:
            for w in workers:
                w.stop()
        batch = case.batch_on(device)
        for res in results:
            train, infer = _median(res.train_s), _median(res.infer_s)
            rows.append({
                "case": case.name, "precision": precision, "compiled": compiled, "model": res.model,
                "label": _MODEL_LABELS[res.model],
                "parameters": res.parameters, "batch": batch,
                "train_ms": 1000 * train, "infer_ms": 1000 * infer,
                "train_ips": batch / train, "infer_ips": batch / infer,
                "peak_mb": res.peak_bytes / 2**20, "rounds": len(res.train_s),
            })  # fmt: skip
        if progress is not None:
            progress(f"networks {case.name} {precision}: done")
    return rows


def networks_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table per case of :func:`benchmark_networks` rows, with ratios to the case's first model.

    Args:
        rows: the output of :func:`benchmark_networks`.

    Returns:
        the tables; "speed-up" is the reference model's throughput divided by this model's (> 1: the reference is
        faster), "memory" this model's peak over the reference's.
    """
    out = []
    for case, precision in dict.fromkeys((r["case"], r.get("precision", "fp32")) for r in rows):
        group = [r for r in rows if r["case"] == case and r.get("precision", "fp32") == precision]
        ref = group[0]
        compiled = ", torch.compile" if ref.get("compiled") else ""
        out.append(f"{case}, batch {ref['batch']}, {precision}{compiled}; reference: {ref['label']}\n")
        out.append("| model | params | train step ms | train img/s | reference train speed-up | inference ms "
                   "| inference img/s | reference inference speed-up | peak train MB | reference memory / this "
                   "| rounds |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in group:
            out.append(
                f"| {r['label']} | {r['parameters'] / 1e6:.2f}M | {r['train_ms']:.0f} | {r['train_ips']:.1f} "
                f"| {_ratio(ref['train_ips'], r['train_ips'])} | {r['infer_ms']:.0f} | {r['infer_ips']:.1f} "
                f"| {_ratio(ref['infer_ips'], r['infer_ips'])} | {r['peak_mb']:.0f} "
                f"| {_ratio(ref['peak_mb'], r['peak_mb'])} | {r['rounds']} |"
            )
        out.append("")
    return "\n".join(out)


def machine_summary(device: str | torch.device = "cpu") -> str:
    """One line naming the machine, the library versions and the thread count, for the benchmark records.

    Args:
        device: the device the benchmark ran on.

    Returns:
        the summary line.
    """
    device = torch.device(device)
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
            hardware = names[0] if names else hardware
        except OSError:
            pass
    versions = []
    for package in ("torch", "monai", "sre-conv", "gmr-conv"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return (
        f"{datetime.date.today().isoformat()}; {hardware}, {os.cpu_count()} logical CPUs, "
        f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"device {device}; {', '.join(versions)}"
    )


def run_benchmarks(
    suite: str = "all",
    spatial_dims: Sequence[int] = (2, 3),
    repeats: int | None = None,
    device: str | torch.device = "cpu",
    command: str = "",
    progress: Callable[[str], None] | None = None,
    precisions: Sequence[str] = PRECISIONS,
    sizes: Sequence[int] | None = None,
    compiled: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Run the layer and/or network suite and format one Markdown report.

    Args:
        suite: ``"layers"``, ``"networks"`` or ``"all"``.
        spatial_dims: dimensionalities to run (layer shapes and network cases of these dims).
        repeats: timed rounds; None uses 5 for layers and 3 for networks.
        device: torch device.
        command: the command line that produced the report, recorded in it.
        progress: called with a line of text as the suites advance (e.g. ``print`` to stderr).
        precisions: precisions of the network suite (:data:`PRECISIONS`).
        sizes: image sizes of the network cases to run (None: all of :data:`NETWORK_CASES`).
        compiled: the networks run through ``torch.compile`` (:func:`benchmark_networks`).

    Returns:
        the Markdown report and the raw rows (``{"machine", "command", "layers", "networks"}``).

    Raises:
        ValueError: for an unknown suite or dimensionality, or ``repeats < 1``.
    """
    if suite not in ("layers", "networks", "all"):
        raise ValueError(f"suite must be 'layers', 'networks' or 'all', got {suite!r}.")
    for dims in spatial_dims:
        if dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 and/or 3, got {list(spatial_dims)}.")
    machine = machine_summary(device)
    raw: dict[str, Any] = {"machine": machine, "command": command, "layers": [], "networks": []}
    parts = [f"Machine: {machine}", ""]
    if command:
        parts[1:1] = [f"Command: `{command}`"]
    if suite in ("layers", "all"):
        raw["layers"] = benchmark_layers(
            spatial_dims, repeats=5 if repeats is None else repeats, device=device, progress=progress
        )
        parts.append(layers_markdown(raw["layers"]))
    if suite in ("networks", "all"):
        cases = [c for c in NETWORK_CASES if c.spatial_dims in spatial_dims and (sizes is None or c.size in sizes)]
        raw["networks"] = benchmark_networks(
            cases, repeats=3 if repeats is None else repeats, device=device, progress=progress, precisions=precisions,
            compiled=compiled,
        )
        parts.append(networks_markdown(raw["networks"]))
    return "\n".join(parts), raw


# ---------------------------------------------------------------------------------------------------- command line
def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Time SRE layers and networks against dense convolutions, sre-conv 1.0.2, gmr-conv 1.0.3 and "
        "MONAI's ResNet-18 (throughput and peak memory, as ratios); prints Markdown tables.",
    )
    p.add_argument("--suite", choices=("layers", "networks", "all"), default="all", help="what to run (default all)")
    p.add_argument("--dims", nargs="+", type=int, choices=(2, 3), default=[2, 3], help="dimensionalities (default 2 3)")
    p.add_argument("--repeats", type=int, help="timed rounds, median reported (default 5 for layers, 3 for networks)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="network precisions: fp32, bf16 (autocast); default both")  # fmt: skip
    p.add_argument("--sizes", nargs="+", type=int, metavar="N",
                   help="network cases of these image sizes only (default: every case)")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="run every network through torch.compile (default backend) in the network suite")  # fmt: skip
    p.add_argument("--out", metavar="FILE.md", help="also write the Markdown report to FILE.md")
    p.add_argument("--json", metavar="FILE.json", help="also write the raw timings to FILE.json")
    return p


def _write(target: str, text: str) -> None:
    write_text(target, text + "\n")  # atomic, with the user's umask: an earlier report is never left half-written


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the benchmarks from command-line arguments, print the report and optionally write it.

    Args:
        argv: the arguments (see ``--help``); None reads ``sys.argv[1:]``.
        prog: the command recorded in the report; None uses the running script's name.

    Returns:
        the exit status: 0 on success, 2 for bad arguments (with the reason on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"python {os.path.relpath(sys.argv[0])}"
    args = _parser(prog).parse_args(argv)
    problem = None
    if args.repeats is not None and args.repeats < 1:
        problem = f"--repeats must be >= 1, got {args.repeats}"
    elif args.threads is not None and args.threads < 1:
        problem = f"--threads must be >= 1, got {args.threads}"
    for option, target in (("--out", args.out), ("--json", args.json)):
        if problem is None and target is not None and not Path(target).resolve().parent.is_dir():
            problem = f"{option} {target}: folder {Path(target).resolve().parent} does not exist"
    if problem is not None:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report, raw = run_benchmarks(
        args.suite, args.dims, args.repeats, args.device, shlex.join([*prog.split(), *argv]),
        progress=lambda line: print(line, file=sys.stderr, flush=True), precisions=args.precision, sizes=args.sizes,
        compiled=args.compile,
    )  # fmt: skip
    print(report)
    for target, text in ((args.out, report), (args.json, json.dumps(raw, indent=2) if args.json else None)):
        if target is not None:
            _write(target, text)
            print(f"written to {Path(target).resolve()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker_main(sys.argv[2])
    else:
        sys.exit(main())
