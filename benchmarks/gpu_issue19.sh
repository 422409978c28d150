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
log "xtlens calibrate --device cuda (every dtype, stored)"
timeout 90 python3 -m xtlens.profiling.cli calibrate --device cuda --out "$OUT/cal-h200.json" > "$OUT/heldout.log" 2>&1; log "calibrate exit $?"
for dt in bfloat16 float32; do
  log "heldout $dt (calibrate in the run, then predict/measure interleaved)"
  timeout 120 python3 benchmarks/latency_heldout.py --device cuda --dtype $dt --save-calibration "$OUT/cal-h200-$dt.json" >> "$OUT/heldout.log" 2>&1; log "heldout $dt exit $?"
  cp docs/latency/heldout-cuda.csv "$OUT/heldout-cuda-$dt.csv" 2>/dev/null
done
log "reference rows from the stored calibration"
timeout 60 python3 benchmarks/latency_heldout.py --reference H200 --calibration "$OUT/cal-h200.json" --no-write >> "$OUT/heldout.log" 2>&1; log "reference exit $?"
log "pytest -m gpu"
timeout 200 python3 -m pytest -m gpu -q -s -p no:cacheprovider ${GPU_TESTS:-tests/profiling/test_fit_gpu.py tests/profiling/test_setups.py tests/profiling/test_calibrate.py tests/profiling/test_memory.py tests/profiling/test_latency_model_gpu.py} > "$OUT/pytest-gpu.log" 2>&1; log "pytest exit $?"
grep -E "predicted|passed|failed|FAILED" "$OUT/pytest-gpu.log" | tail -20; grep -E "configurations|reference rows|calibrated|framework|targets" "$OUT/heldout.log"
