# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Old against new ring-decomposed operator, in one process: the ``ring_ops.py`` of a git revision (``--base``,
default ``main``) against this checkout's, on SRE-ResNet-18's layers and on the networks (training step and
inference), interleaved round by round, printing the medians and the ratio old / new (> 1: the new code is faster).

Both variants run the same modules on the same inputs: the base revision's ``monai_sre/layers/ring_ops.py`` is loaded
from git as a module of its own, and :mod:`monai_sre.layers.sre_conv` is pointed at its ``RingDecomposedConv``,
``ring_conv_forward`` and ``cpu_chunk_bytes`` for the old variant's steps. So only changes inside ``ring_ops.py`` that
keep those functions' signatures are compared. Measuring ratios within one process, interleaved, is what survives a
shared CPU (the absolute times do not); use ``--threads 1 --clock cpu`` there: with one thread the process's CPU time
(``time.process_time``) leaves out the time other jobs hold the core, which wall-clock time counts.

Usage: ``python benchmarks/ring_ab.py [--base main] [--suite layers networks] [--dims 2 3] [--repeats 5]
[--threads 1] [--clock wall|cpu]``
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

import monai_sre.layers.sre_conv as sre_conv
from monai_sre.layers import SREConv, ring_ops
from suite import CLOCKS, LAYER_BATCH, LAYER_SHAPES, NETWORK_CASES, build_network, interleaved_medians  # own folder

__all__ = ["load_base_ring_ops", "compare", "main"]

_PATCHED = ("RingDecomposedConv", "ring_conv_forward", "cpu_chunk_bytes")
_ROOT = Path(__file__).resolve().parent.parent


def load_base_ring_ops(revision: str) -> ModuleType:
    """``monai_sre/layers/ring_ops.py`` at ``revision`` of this repository, imported as a module of its own.

    Args:
        revision: a git revision (branch, tag or commit).

    Returns:
        the module.

    Raises:
        RuntimeError: when git cannot show the file at ``revision``.
    """
    shown = subprocess.run(["git", "-C", str(_ROOT), "show", f"{revision}:monai_sre/layers/ring_ops.py"],
                           capture_output=True, text=True)  # fmt: skip
    if shown.returncode != 0:
        raise RuntimeError(f"git cannot show monai_sre/layers/ring_ops.py at {revision!r}: {shown.stderr.strip()}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ring_ops_base.py"
        path.write_text(shown.stdout)
        spec = importlib.util.spec_from_file_location(f"ring_ops_{revision}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _use(module: ModuleType) -> None:
    for name in _PATCHED:
        setattr(sre_conv, name, getattr(module, name))


def compare(steps: dict[str, Callable[[], None]], variants: dict[str, ModuleType], repeats: int,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """Median seconds of every step under every variant, interleaved: step by step, one warm-up of each variant,
    then ``repeats`` rounds (the variants in reverse order every other round).

    Args:
        steps: named callables to time.
        variants: named ``ring_ops`` modules to run them with.
        repeats: timed rounds.
        clock: seconds now: wall-clock (``time.perf_counter``) or the process's CPU time (``time.process_time``).

    Returns:
        ``{step: {variant: median seconds}}``.
    """
    result = {}
    for step_name, step in steps.items():  # one step at a time, so that every call follows the same kind of call
        result[step_name] = interleaved_medians({name: step for name in variants}, repeats, clock=clock,
                                                prepare=lambda name: _use(variants[name]))  # fmt: skip
    _use(ring_ops)
    return result


def _print(label: str, result: dict[str, dict]) -> None:
    for step, medians in result.items():
        old, new = medians["old"], medians["new"]
        print(f"| {label} | {step} | {old * 1e3:.1f} | {new * 1e3:.1f} | {old / new:.3f} |", flush=True)


def _layer_steps(dims: int, channels: int, size: int, kernel: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    conv = SREConv(dims, channels, channels, kernel, path="decomposed")
    x = torch.randn((LAYER_BATCH[dims], channels) + (size,) * dims, requires_grad=True)

    def train() -> None:
        conv(x).sum().backward()

    def infer() -> None:
        with torch.no_grad():
            conv(x)

    return {"train": train, "infer": infer}


def _network_steps(dims: int, in_channels: int, size: int, batch: int, classes: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    net = build_network("monai_sre", dims, in_channels, classes)
    x = torch.randn((batch, in_channels) + (size,) * dims)
    y = torch.randint(0, classes, (batch,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train() -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()

    def infer() -> None:
        net.eval()
        with torch.no_grad():
            net(x)

    return {"train": train, "infer": infer}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; see the module docstring."""
    parser = argparse.ArgumentParser(prog="ring_ab.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision of the old ring_ops.py (default: main)")
    parser.add_argument("--suite", nargs="+", choices=("layers", "networks"), default=["layers", "networks"])
    parser.add_argument("--dims", nargs="+", type=int, choices=(2, 3), default=[2, 3])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time, or the process's CPU time (steadier on a shared machine, one thread)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    variants = {"old": load_base_ring_ops(args.base), "new": ring_ops}
    print(f"ring_ops.py of {args.base} (old) against this checkout (new); torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.clock} clock, median of {args.repeats} interleaved rounds\n")  # fmt: skip
    print("| case | step | old ms | new ms | old / new |\n|---|---|---|---|---|")
    if "layers" in args.suite:
        for dims in args.dims:
            for channels, size, kernel in LAYER_SHAPES[dims]:
                label = f"layer {dims}D {channels}ch@{size}, k={kernel}"
                _print(label, compare(_layer_steps(dims, channels, size, kernel), variants, args.repeats, clock))
    if "networks" in args.suite:
        for case in NETWORK_CASES:
            if case.spatial_dims in args.dims:
                steps = _network_steps(case.spatial_dims, case.in_channels, case.size, case.batch, case.num_classes)
                _print(f"sre_resnet18 {case.name} (batch {case.batch})", compare(steps, variants, args.repeats, clock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
