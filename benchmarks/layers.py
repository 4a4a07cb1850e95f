# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Layer benchmark: SREConv vs torch.nn.Conv (same kernel and 3x3) vs sre-conv 1.0.2, at SRE-ResNet-18's stage shapes.

Same as ``monai-sre benchmark --suite layers``; options as that command (``--dims 2``, ``--repeats 5``, ``--out FILE``).
The code lives in :mod:`monai_sre.benchmarking`; results and the machine they came from are in benchmarks/README.md.

Usage: ``python benchmarks/layers.py [--dims 2 3] [--repeats 5] [--out layers.md]``
"""

from __future__ import annotations

import sys

from monai_sre.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main(["benchmark", "--suite", "layers", *sys.argv[1:]]))
