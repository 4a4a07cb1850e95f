#!/usr/bin/env bash
# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
#
# The GPU check of the speed issue, in one short run (at most 8 minutes, each step under its own time limit):
#   1. the Triton path's correctness tests on CUDA (float32 against the dense path, fp16/bf16 autocast,
#      path="auto"'s measured choice);
#   2. benchmarks/networks.py on CUDA: the layer table (with the Triton path's column), then SRE-ResNet-18 against
#      MONAI ResNet-18, sre-conv 1.0.2 and gmr-conv 1.0.3, 2D (batch 128) and 3D (batch 16), fp32 and bf16, as
#      three runs of the script so that a time limit hit late still leaves the earlier tables.
# Results go to $OUT (default: a new temporary folder): tests.log (machine, versions, test results), bench.log,
# layers.md, networks_2d.md/.json, networks_3d.md/.json.
#
# It needs what `pip install -e ".[bench]"` gives (torch with Triton, MONAI, sre-conv, gmr-conv). On a GPU machine
# without package access, carry the pure-Python wheels in .whl/ (ignored by git), fetched where PyPI is reachable:
#   python -m pip download --no-deps --only-binary=:all: -d .whl monai==1.6.1 sre-conv==1.0.2 gmr-conv==1.0.3
# and this script installs them into a private folder first. Usage, from anywhere:
#   OUT=/path/to/results bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" >/dev/null; then
    SITE="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    "$PY" -c "import monai_sre, monai; print('monai_sre', monai_sre.__file__, 'monai', monai.__version__)"
    git log --oneline -1 2>/dev/null || true
} 2>&1 | tee "$OUT/tests.log"

status=0
echo "== 1. correctness on CUDA" | tee -a "$OUT/tests.log"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -n 0 -p no:logging tests/layers/test_ring_triton.py \
    2>&1 | tee -a "$OUT/tests.log" || status=1

echo "== 2. benchmark on CUDA" | tee "$OUT/bench.log"
for part in "layers --dims 2 3:layers:90" "networks --dims 2:networks_2d:150" "networks --dims 3:networks_3d:200"; do
    IFS=: read -r args name limit <<<"$part"
    # shellcheck disable=SC2086
    json=()
    [ "$name" = layers ] || json=(--json "$OUT/$name.json")
    timeout "$limit" "$PY" benchmarks/networks.py --device cuda --suite $args --out "$OUT/$name.md" "${json[@]}" \
        2>&1 | tee -a "$OUT/bench.log" || status=1
done
echo "results in $OUT (status $status)"
exit $status
