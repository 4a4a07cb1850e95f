# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``sre_resnet18`` of a git revision against this checkout's, whole package, with MONAI's ResNet-18 as the control.

:mod:`ring_ab` compares two versions of the ring operator inside one process; a change elsewhere (the network, the
layer, BatchNorm folding) needs the whole package of each revision. Here three worker processes run side by side:
``sre_resnet18`` of ``--base`` (its ``monai_sre/`` extracted with ``git archive`` and put first on ``PYTHONPATH``),
``sre_resnet18`` of this checkout, and MONAI's ``resnet18`` (the configuration of ``suite.build_network``). The driver
interleaves them round by round (a training step, then an inference, in each), so a slower or busier machine slows
all three alike: MONAI's time is the same code in every round and shows how much the machine itself moved. Only
``monai_sre.networks.sre_resnet18`` is used from the base revision, so any revision that has it can be compared.

``--clock cpu`` times each step by the worker's process CPU time (``time.process_time``) instead of wall-clock time:
with ``--threads 1`` on a shared machine it leaves out the time other jobs hold the core, as in :mod:`ring_ab`.

Usage: ``python benchmarks/revision_ab.py --base REV [--dims 2 3] [--repeats 7] [--threads N] [--clock wall|cpu]
[--compile]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["extract_package", "summarize", "main"]

REPO = Path(__file__).resolve().parents[1]
DIMS = (2, 3)


def _case(dims: int) -> dict:
    """The first case of ``suite.NETWORK_CASES`` in ``dims`` (2D 3x32x32, 3D 1x32^3), as the workers' JSON spec.

    Only the driver and the MONAI worker import the suite: it imports the checkout's ``monai_sre``, which the base
    revision's worker must not see."""
    from dataclasses import asdict

    from suite import NETWORK_CASES  # this script's own folder

    return asdict(next(c for c in NETWORK_CASES if c.spatial_dims == dims))


def extract_package(revision: str, dest: Path) -> Path:
    """Write ``monai_sre/`` as it is at git ``revision`` under ``dest``; return ``dest`` (for ``PYTHONPATH``).

    Raises:
        ValueError: when git cannot read the revision (the message names it and quotes git).
    """
    done = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision, "monai_sre"],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        raise ValueError(f"--base {revision!r}: git archive failed: {done.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=done.stdout, check=True)
    return dest


def _worker(model: str, case: dict, threads: int, clock: str = "wall", compiled: bool = False) -> None:
    """Build one network for ``case`` (:func:`_case`), answer ``train`` / ``infer`` with the seconds of one step, one
    line each, until EOF; ``clock`` ``"cpu"`` counts the process's CPU time instead of wall-clock time; ``compiled``
    runs the network through ``torch.compile`` (the warm-up steps pay the compilation)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dims, channels, classes = case["spatial_dims"], case["in_channels"], case["num_classes"]
    if model == "monai":
        from suite import build_network

        net = build_network("monai", dims, channels, classes, case["widen_factor"])
    else:  # what suite.build_network("monai_sre", ...) builds, without importing the suite (see _case)
        from monai_sre.networks import sre_resnet18

        net = sre_resnet18(spatial_dims=dims, n_input_channels=channels, num_classes=classes,
                           widen_factor=case["widen_factor"])  # fmt: skip
    run = torch.compile(net) if compiled else net
    x = torch.randn((case["batch"], channels) + (case["size"],) * dims)
    y = torch.randint(0, classes, (case["batch"],))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train() -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(run(x), y).backward()
        optimizer.step()

    def infer() -> None:
        net.eval()
        with torch.no_grad():
            run(x)

    steps = {"train": train, "infer": infer}
    timer = time.process_time if clock == "cpu" else time.perf_counter
    print("ready", flush=True)
    for line in sys.stdin:
        t0 = timer()
        steps[line.strip()]()
        print(timer() - t0, flush=True)


def summarize(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Median milliseconds per worker and step, plus ``base / current`` (> 1: this checkout is faster) and
    ``monai / current`` (> 1: this checkout's SRE network is faster than MONAI's ResNet-18).

    ``times`` maps worker (``base``, ``current``, ``monai``) to step (``train``, ``infer``) to seconds per round.
    """
    out = {w: {s: 1000 * statistics.median(v) for s, v in steps.items()} for w, steps in times.items()}
    for other in ("base", "monai"):
        out[f"{other} / current"] = {s: out[other][s] / out["current"][s] for s in out["current"]}
    return out


def _compare(
    case: dict, base_path: Path, repeats: int, threads: int, clock: str = "wall", compiled: bool = False
) -> dict[str, dict[str, float]]:
    def first_on_path(root: Path) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}

    env_of = {"base": first_on_path(base_path), "current": first_on_path(REPO), "monai": dict(os.environ)}
    workers = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--worker", "monai" if name == "monai" else "sre", "--case", json.dumps(case),
             "--threads", str(threads), "--clock", clock, *(["--compile"] if compiled else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir(),
        )
        for name, env in env_of.items()
    }  # fmt: skip

    def ask(name: str, command: str | None) -> float:
        proc = workers[name]
        if command is not None:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {name!r} worker exited with code {proc.wait()} (see its error output)")
        return 0.0 if line.strip() == "ready" else float(line)

    try:
        for name in workers:
            ask(name, None)
            for step in ("train", "infer"):  # warm-up
                ask(name, step)
        times = {name: {"train": [], "infer": []} for name in workers}
        for _ in range(repeats):
            for name in workers:
                for step in ("train", "infer"):
                    times[name][step].append(ask(name, step))
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    return summarize(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git revision to compare with this checkout (e.g. a commit or main)")
    parser.add_argument("--dims", type=int, nargs="+", choices=DIMS, default=list(DIMS))
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (medians are printed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall-clock time, or each worker's process CPU time (steadier with --threads 1)")
    parser.add_argument("--compile", action="store_true",
                        help="run all three networks through torch.compile (default backend)")
    parser.add_argument("--worker", choices=["sre", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a worker's network case, JSON
    args = parser.parse_args(argv)
    import torch

    threads = args.threads or torch.get_num_threads()
    if args.worker:
        _worker(args.worker, json.loads(args.case), threads, args.clock, args.compile)
        return 0
    if not args.base:
        parser.error("--base is required")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            base_path = extract_package(args.base, Path(tmp))
        except ValueError as e:
            parser.error(str(e))
        print(f"sre_resnet18 at {args.base} (base) against this checkout (current), MONAI resnet18 as control; "
              f"{threads} threads, {args.clock} clock, medians of {args.repeats} interleaved rounds"
              f"{', all compiled (torch.compile)' if args.compile else ''}")  # fmt: skip
        for dims in args.dims:
            case = _case(dims)
            result = _compare(case, base_path, args.repeats, threads, args.clock, args.compile)
            print(f"{case['name']}, batch {case['batch']}:")
            for name, steps in result.items():
                unit = "x" if "/" in name else " ms"
                print(f"  {name:>15}: train {steps['train']:8.2f}{unit}  infer {steps['infer']:8.2f}{unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
