# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""One DDP rank of the metric test, in its own small module so that spawned processes import little."""

from __future__ import annotations

import torch
import torch.distributed as dist
from ignite.engine import Engine

from monai_sre.evaluation.metrics import MedMNISTACC, MedMNISTAUC

__all__ = ["sharded_batches", "ddp_worker"]


def sharded_batches(n: int = 40, k: int = 3, batch: int = 8, seed: int = 0):
    """Multi-class logits, labels (every class present) and their batches of ``batch`` samples."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g)
    labels = torch.cat([torch.arange(k), torch.randint(0, k, (n - k,), generator=g)])
    return logits, labels, [(logits[i : i + batch], labels[i : i + batch]) for i in range(0, n, batch)]


def ddp_worker(rank: int, world_size: int, port: int, queue) -> None:
    """Evaluate this rank's shard of the batches (uneven: 3 batches on rank 0, 2 on rank 1) and report."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        _, _, batches = sharded_batches()
        engine = Engine(lambda e, b: b)
        MedMNISTAUC("multi-class").attach(engine, "auc")
        MedMNISTACC("multi-class").attach(engine, "acc")
        state = engine.run(batches[rank::world_size])
        queue.put((rank, state.metrics["auc"], state.metrics["acc"]))
    finally:
        dist.destroy_process_group()
