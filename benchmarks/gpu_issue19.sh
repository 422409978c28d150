#!/usr/bin/env bash
# Issue 19's GPU checks in one time-boxed run (device tool): calibrate + held-out latency on CUDA, the H200
# reference rows predicted from that calibration, pytest -m gpu (fit bisection, CUDA memory, calibration).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/xtlens && for d in core profiling dashboard; do ln -sfn "$PWD/$d" /tmp/site/xtlens/$d; done
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 XTLENS_CACHE_DIR=/tmp/xtlens-cache
T0=$(date +%s); log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/session.log"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, sys; from importlib.metadata import version as v; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'x-transformers', v('x-transformers'))"; } >> "$OUT/session.log" 2>&1
log "heldout (calibrate in the run, then predict/measure interleaved)"
timeout 150 python3 benchmarks/latency_heldout.py --device cuda --save-calibration "$OUT/cal-h200.json" > "$OUT/heldout.log" 2>&1; log "heldout exit $?"
cp docs/latency/heldout-cuda*.csv "$OUT/" 2>/dev/null
log "reference rows from that calibration"
timeout 60 python3 benchmarks/latency_heldout.py --reference H200 --calibration "$OUT/cal-h200.json" --no-write >> "$OUT/heldout.log" 2>&1; log "reference exit $?"
log "pytest -m gpu"
timeout 200 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/profiling/test_fit_gpu.py tests/profiling/test_setups.py tests/profiling/test_calibrate.py tests/profiling/test_memory.py tests/profiling/test_latency_model_gpu.py > "$OUT/pytest-gpu.log" 2>&1; log "pytest exit $?"
tail -5 "$OUT/pytest-gpu.log"; tail -30 "$OUT/heldout.log"
