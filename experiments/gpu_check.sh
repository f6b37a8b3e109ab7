#!/usr/bin/env bash
# The device check of issue 14, prepared for one call on a lent GPU machine (the tool
# library's `device` run): the card, the GPU tests, then experiments/bench_gpu.py.
# The machine's image has python3 with torch, torch-geometric, triton and pytest; the
# package runs from this checkout. Carry the FB15k-237 archive in an ignored folder:
#   mkdir -p gpu_data && cp ../shared/data/kg/FB15k-237.tar.gz gpu_data/
#   echo /gpu_data/ >> .git/info/exclude
# then run:  bash experiments/gpu_check.sh   (with carry: ["gpu_data"]).
# Logs go to $OUT (the device tool brings them back).
set -o pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    2>&1 | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/ops/test_mixture_bce.py \
    tests/ops/test_pos_weight.py tests/ops/test_edge_triton.py tests/ops/test_triton_scale.py \
    -k "triton" 2>&1 \
    | tee "$OUT/tests.log"
timeout 300 python3 experiments/bench_gpu.py --data-dir "${DATA_DIR:-gpu_data}" 2>&1 \
    | tee "$OUT/bench.log"
