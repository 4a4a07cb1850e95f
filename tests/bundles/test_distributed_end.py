# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The end of a torchrun bundle run (``monai_sre.bundle.end_distributed_run``, the multi-GPU configs' ``finalize``).

Each case runs in its own process: the function may end it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# one gloo process group of one rank, an exit handler that leaves a file, then the call and a line after it
SCRIPT = """
import atexit, pathlib, sys
import torch.distributed as dist
from monai_sre.bundle import end_distributed_run
out = pathlib.Path(sys.argv[1])
if sys.argv[2] != "none":
    dist.init_process_group("gloo", init_method=(out / "store").as_uri(), rank=0, world_size=1)
atexit.register(lambda: (out / "exit_handler_ran").write_text("yes"))
end_distributed_run(exit_process={"auto": None, "exit": True, "none": None}[sys.argv[2]])
print("returned, initialized:", dist.is_initialized(), flush=True)
"""


def _python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


@pytest.mark.parametrize("mode,returns", [("auto", True), ("exit", False), ("none", True)])
def test_end_distributed_run(tmp_path, mode, returns):
    """From the user's own Python code the group is destroyed and the call returns; asked to, it ends the process
    with status 0 after the exit handlers ran; with no process group it does nothing."""
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    proc = _python(tmp_path, "script.py", str(tmp_path), mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("returned, initialized: False" in proc.stdout) is returns
    assert (tmp_path / "exit_handler_ran").read_text() == "yes"


def test_gloo_bundle_command_ends_the_process(tmp_path):
    """Started as ``python -m monai.bundle`` with gloo, ``finalize`` ends the process: no interpreter teardown for
    gloo's worker threads to race (the module docstring has the core dump); the exit handlers still run."""
    config = {
        "imports": ["$import atexit", "$import pathlib", "$import torch.distributed as dist", "$import monai_sre",
                    "$import monai_sre.bundle"],
        "initialize": [
            f"$dist.init_process_group('gloo', init_method={(tmp_path / 'store').as_uri()!r}, rank=0, world_size=1)",
            f"$atexit.register(lambda: pathlib.Path({str(tmp_path / 'exit_handler_ran')!r}).write_text('yes'))",
        ],
        "run": ["$print('bundle command:', monai_sre.bundle.distributed.started_as_bundle_command(), flush=True)"],
        "finalize": ["$monai_sre.bundle.end_distributed_run()", "$print('teardown follows', flush=True)"],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = _python(tmp_path, "-m", "monai.bundle", "run", "--config_file", "config.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bundle command: True" in proc.stdout
    assert "teardown follows" not in proc.stdout  # ended inside end_distributed_run
    assert (tmp_path / "exit_handler_ran").read_text() == "yes"
