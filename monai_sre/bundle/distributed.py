# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The end of a multi-process (torchrun) bundle run: the ``finalize`` step of ``multi_gpu_train.json`` and
``multi_gpu_evaluate.json``.

Why not the model zoo's plain ``barrier`` + ``destroy_process_group``: with the CPU backend (gloo) that ending
aborted about one torchrun run in 60 on a loaded 2-core machine (2 of 121 runs of the DDP test's command beside two
1-thread training jobs, 2026-12-04), after both ranks had finished and written everything, with ``terminate called without
an active exception`` (SIGABRT) in one rank. The core dump shows why: ``ProcessGroupGloo.shutdown()`` does nothing,
so gloo's worker threads outlive ``destroy_process_group``; one of them was still releasing the finished barrier,
which holds the last metric broadcast (``AsyncBarrierWork`` -> ``AsyncBroadcastWork``) and so a tensor created in
Python, while the main thread was already in ``Py_FinalizeEx``. Dropping that tensor takes the GIL, CPython 3.11
ends a thread that asks for the GIL during finalization with ``pthread_exit``, and its unwinding through a C++
destructor calls ``std::terminate`` (the class of bug in pybind/pybind11#3274; pytorch/pytorch#179291 tried to fix
it upstream and was abandoned). Nothing in Python can wait for gloo's workers to let go, so a gloo run started as
``python -m monai.bundle`` ends here, after the barrier, the exit handlers and a flush, without interpreter
teardown; a workflow run from the user's own Python code (``ConfigWorkflow(...).finalize()``) returns as usual.
NCCL's ``shutdown`` aborts its communicators and joins its threads, so GPU runs end the usual way.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

import torch.distributed as dist

__all__ = ["end_distributed_run", "started_as_bundle_command"]


def started_as_bundle_command() -> bool:
    """Whether this process is ``python -m monai.bundle ...`` (torchrun's ``-m monai.bundle`` included)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "monai.bundle.__main__"


def end_distributed_run(exit_process: bool | None = None) -> None:
    """Wait for every rank, destroy the default process group and, for gloo, end the process.

    Args:
        exit_process: end the process after the process group is destroyed (exit handlers run and the standard
            streams and log handlers are flushed first; the exit status is 0). ``None`` (the bundles' setting):
            only when the backend is gloo and the process was started as ``python -m monai.bundle``. Nothing
            happens when no process group is initialised.
    """
    if not dist.is_initialized():
        return
    gloo = dist.get_backend() == dist.Backend.GLOO
    dist.barrier()
    dist.destroy_process_group()
    if exit_process is None:
        exit_process = gloo and started_as_bundle_command()
    if exit_process:
        atexit._run_exitfuncs()  # what a normal exit runs before the teardown skipped here
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
