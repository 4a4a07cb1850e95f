# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Bundle runs in separate processes, several at a time, that can be paused and killed at chosen points.

Run as a script, this module is ``python -m monai.bundle`` with two optional faults, chosen by environment variables
so that the bundle's own command line stays exactly the user's:

* ``RELIABILITY_PAUSE_AT_ITERATION=N``: after training iteration ``N`` the process writes the file
  ``RELIABILITY_MARKER`` and sleeps, so that the test kills it at a known point in the middle of an epoch.
* ``RELIABILITY_KILL_IN_SAVE=K``: the ``K``-th ``torch.save`` of a checkpoint of kind ``RELIABILITY_KILL_SAVE_KIND``
  (``last``: a resumable checkpoint, which holds the trainer's state; ``best``: the best model's bare state dict)
  writes half of its bytes, then the process kills itself with SIGKILL: a power cut in the middle of a save.

Processes cost ~8 s of imports each against ~1 s of training at tiny settings, so tests start them together.
"""

from __future__ import annotations

import io
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
MARKER = "paused.marker"

# Tiny settings: a few samples, 4..32 channels; 3 iterations per epoch in 2D, 2 in 3D.
TINY = {
    "sre_medmnist_2d": ["--max_samples", "24", "--widen_factor", "0.0625", "--batch_size", "8"],
    "sre_medmnist_3d": ["--max_samples", "8", "--widen_factor", "0.0625", "--batch_size", "4"],
}


@dataclass
class Job:
    """One ``python -m monai.bundle run training`` of a bundle folder.

    Args:
        bundle: the bundle folder (the process's working directory).
        overrides: ``--id value`` overrides after ``--config_file``.
        faults: ``RELIABILITY_*`` settings (see the module docstring), e.g. ``{"pause_at_iteration": 5}``.
        config_file: the ``--config_file`` value.
        nproc: processes; more than 1 runs under ``torch.distributed.run`` (DDP, gloo on CPU).
    """

    bundle: Path
    overrides: Sequence[str] = ()
    faults: Mapping[str, Any] = field(default_factory=dict)
    config_file: str = "configs/train.json"
    nproc: int = 1


@dataclass
class Finished:
    """How a job ended: its exit code (negative: killed by that signal) and its output."""

    bundle: Path
    returncode: int
    output: str

    def epochs_trained(self) -> list[int]:
        """The epochs in which the trainer ran iterations, from the StatsHandler's lines."""
        return sorted({int(m) for m in re.findall(r"Epoch: (\d+)/\d+, Iter:", self.output)})

    def last_error(self) -> str:
        """The last line that names an exception: what a user reads at the end of a failed run."""
        lines = [ln for ln in self.output.splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
        # MONAI's runner re-raises as "RuntimeError: Failed to ..."; the cause is the line before those wrappers.
        causes = [ln for ln in lines if "Failed to evaluate" not in ln and "Failed to instantiate" not in ln]
        return (causes or lines or [""])[-1]


def copy_bundle(tmp_path: Path, name: str, dst_name: str | None = None) -> Path:
    """A copy of bundle ``name`` without data, results or weights, as a user starts from."""
    dst = tmp_path / (dst_name or name)
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns("data", "eval", "*.pt", "*.ts", "*.onnx"))
    return dst


def _start(job: Job) -> tuple[subprocess.Popen, Any]:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.update({f"RELIABILITY_{k.upper()}": str(v) for k, v in job.faults.items()})
    env["RELIABILITY_MARKER"] = str(job.bundle / MARKER)
    log = open(job.bundle / "run.log", "w+")  # noqa: SIM115 - closed when the job ends
    launcher = [sys.executable]
    if job.nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={job.nproc}"]
    argv = [*launcher, str(Path(__file__).resolve()), "run", "training", "--config_file", job.config_file]
    # A session of its own, so that a kill reaches every process of the run (torchrun's workers too).
    proc = subprocess.Popen([*argv, *job.overrides], cwd=job.bundle, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    return proc, log


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_jobs(jobs: Mapping[str, Job], parallel: int = 3, timeout: float = 900.0) -> dict[str, Finished]:
    """Run bundle jobs, ``parallel`` at a time; a job that pauses (``pause_at_iteration``) is killed (SIGKILL) there.

    Returns:
        ``{name: Finished}`` for every job.
    """
    pending = list(jobs.items())
    active: dict[str, tuple[subprocess.Popen, Any]] = {}
    done: dict[str, Finished] = {}
    end = time.monotonic() + timeout
    try:
        while pending or active:
            while pending and len(active) < parallel:
                name, job = pending.pop(0)
                (job.bundle / MARKER).unlink(missing_ok=True)
                active[name] = _start(job)
            for name, (proc, log) in list(active.items()):
                bundle = jobs[name].bundle
                if (bundle / MARKER).exists() and proc.poll() is None:
                    _kill(proc)  # paused in the middle of an epoch: the kill the test is about
                if proc.poll() is not None:
                    log.seek(0)
                    done[name] = Finished(bundle, proc.returncode, log.read())
                    log.close()
                    del active[name]
            if time.monotonic() > end:
                raise TimeoutError(f"bundle jobs {sorted(active)} still running after {timeout} s")
            time.sleep(0.02)
    finally:
        for proc, log in active.values():
            _kill(proc)
            log.close()
    return done


def run_training(bundle: Path, *overrides: str, **faults: Any) -> Finished:
    """Run one job to its end and return how it ended."""
    return run_jobs({"job": Job(bundle, overrides, faults)})["job"]


def load_checkpoints(bundle: Path) -> dict[str, Any]:
    """Every ``*.pt`` file a run left in its run folder ``runs/default/``, read as users read them:
    ``torch.load(weights_only=True)``."""
    files = sorted((bundle / "runs" / "default").glob("*.pt"))
    return {p.name: torch.load(p, map_location="cpu", weights_only=True) for p in files}


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Bit-exact equality of nested checkpoint content: tensors by ``torch.equal`` and dtype, other values by ``==``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _install_faults() -> None:
    """Patch this process (before the bundle runs) with the faults its environment asks for."""
    pause_at = int(os.environ.get("RELIABILITY_PAUSE_AT_ITERATION", "0"))
    kill_in_save = int(os.environ.get("RELIABILITY_KILL_IN_SAVE", "0"))
    if pause_at:
        from monai.engines import SupervisedTrainer

        iteration = SupervisedTrainer._iteration

        def paused(self, engine, batchdata):
            output = iteration(self, engine, batchdata)
            if engine.state.iteration == pause_at:
                Path(os.environ["RELIABILITY_MARKER"]).write_text(str(pause_at))
                while True:  # the test kills the process here, in the middle of an epoch
                    time.sleep(1)
            return output

        SupervisedTrainer._iteration = paused
    if kill_in_save:
        resumable = os.environ.get("RELIABILITY_KILL_SAVE_KIND", "last") == "last"
        save = torch.save
        seen = [0]

        def dying_save(obj, f, *args, **kwargs):
            if isinstance(obj, Mapping) and ("trainer" in obj) == resumable:
                seen[0] += 1
                if seen[0] == kill_in_save:
                    buffer = io.BytesIO()
                    save(obj, buffer, *args, **kwargs)
                    data = buffer.getvalue()
                    handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f  # noqa: SIM115
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
            return save(obj, f, *args, **kwargs)

        torch.save = dying_save


if __name__ == "__main__":
    _install_faults()
    sys.argv = ["monai.bundle", *sys.argv[1:]]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
