# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Input and output shared by every layer above ``networks``: one module per concern, imported by full name.

* :mod:`monai_sre.io.files`: atomic file output with the user's umask, and a folder lock.
* :mod:`monai_sre.io.checkpoints`: checkpoint reading (``weights_only``, DDP prefix), SHA-256 and input-contract
  checks, promotion of a training run to the shipped weights.
"""
