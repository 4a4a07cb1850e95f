# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Layer benchmark: SREConv vs torch.nn.Conv (same kernel and 3x3) vs sre-conv 1.0.2, at SRE-ResNet-18's stage shapes.

The code lives in ``benchmarks/suite.py``; results and the machine they came from are in benchmarks/README.md.

Usage: ``python benchmarks/layers.py [--dims 2 3] [--repeats 5] [--device cpu] [--threads N] [--out layers.md]
[--json layers.json]``
"""

from __future__ import annotations

import sys

from suite import main  # this script's own folder, benchmarks/, is first on the import path

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main(["--suite", "layers", *sys.argv[1:]]))
