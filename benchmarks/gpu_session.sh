#!/usr/bin/env bash
# Every GPU figure of docs/gpu-results.md in one time-boxed session on a CUDA machine (xtlens installed).
#
#   bash benchmarks/gpu_session.sh OUTDIR [BUDGET_S]      # then: tar czf gpu.tgz -C OUTDIR .
#
# BUDGET_S (default 480) bounds the whole session: a step starts only with at least 20 s left.
# Steps, most important first; each has a hard time limit and writes its Markdown report and rows as it goes
# (a step stopped at its limit still leaves every finished point). Timed steps run alone on the GPU; the
# untimed ones (pytest -m gpu, the training probe) run side by side at the end. STEPS="criterion untimed"
# (environment) runs a subset; PARTS_BF16_LENS, PARTS_BF16_ATTN, PARTS_BF16_FLAGS, PARTS_FP32_LENS, PARTS_FP32_S
# change what steps 1 and 2 measure.
#   0. the issue-11 criterion, interleaved: seed / seed-no-alibi, as built / FlexAttention, at 8192, bf16 and fp32
#   1. breakdown + what-if (as built, FlexAttention, cuDNN), bf16, 8192 first, then 1024, 2048, 4096
#   2. the same in fp32 at 8192 and 1024
#   3. what-if torch.compile and CUDA graphs, bf16, forward, 8192 and 1024
#   4. the GPU check (memory, latency, forced SDPA backends), bf16 and fp32, 8192 first
#   5. pytest -m gpu  |  a full-size scaling probe of the seed (dim 256 / 512 / 768, vocabulary 20,000)
set -u
OUT=${1:?usage: gpu_session.sh OUTDIR [BUDGET_S]}
BUDGET=${2:-480}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$OUT/session.log"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
# step NAME SECONDS CMD...: run CMD with a limit of min(SECONDS, what is left of the budget)
step() {
  local name=$1 want=$2; shift 2
  local lim; lim=$(left); [ "$want" -lt "$lim" ] && lim=$want
  if [ "$lim" -lt 20 ]; then log "skip $name (budget spent)"; return; fi
  log "start $name (limit ${lim} s)"
  timeout --kill-after=10 "$lim" "$@" >>"$OUT/$name.log" 2>&1
  log "end $name: exit $?"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $PY -c "import torch, x_transformers, sys; from importlib.metadata import version as v
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'cudnn', torch.backends.cudnn.version(), 'x-transformers', v('x-transformers'))
try: print('triton', v('triton'))
except Exception: pass"
} >"$OUT/versions.txt" 2>&1
log "versions: $(tr '\n' ' ' <"$OUT/versions.txt" | cut -c1-400)"

G="$PY benchmarks/gpu_check.py --device cuda --no-pytest-gpu"
STEPS=${STEPS:-criterion parts_bf16 parts_fp32 compiled check untimed}
has() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }
has criterion && step criterion 90 $G --no-check --no-latency-parts --interleaved 8192 --rounds 15 \
  --dtypes bfloat16,float32 --md-out "$OUT/criterion.md"
has parts_bf16 && step parts_bf16 150 $G --no-check --latency-parts --dtypes bfloat16 \
  --parts-seq-lens "${PARTS_BF16_LENS:-8192,1024,2048,4096}" --attention "${PARTS_BF16_ATTN:-asbuilt,flex,cudnn}" \
  ${PARTS_BF16_FLAGS:-} --time-budget 120 --md-out "$OUT/parts_bf16.md" --out "$OUT/parts_bf16.csv"
has parts_fp32 && step parts_fp32 "${PARTS_FP32_S:-75}" $G --no-check --latency-parts --dtypes float32 \
  --parts-seq-lens "${PARTS_FP32_LENS:-8192,1024}" --attention asbuilt,flex,cudnn \
  --time-budget $(( ${PARTS_FP32_S:-75} - 20 )) --md-out "$OUT/parts_fp32.md" --out "$OUT/parts_fp32.csv"
has compiled && step compiled 90 $G --no-check --latency-parts --no-breakdown --dtypes bfloat16 --parts-seq-lens 8192,1024 \
  --attention asbuilt,compile,cudagraphs --whatif-phases forward --time-budget 70 \
  --md-out "$OUT/compiled.md" --out "$OUT/compiled.csv"
has check && step check 90 $G --no-latency-parts --dtypes bfloat16,float32 --seq-lens 8192,1024,4096,2048,512 \
  --time-budget 70 --md-out "$OUT/check.md" --out "$OUT/check.csv"

# untimed: side by side
lim=$(left)
if has untimed && [ "$lim" -ge 30 ]; then
  log "start pytest_gpu + probe_scaling (limit ${lim} s)"
  ( timeout --kill-after=10 "$lim" $PY -m pytest -m gpu -q -p no:cacheprovider \
      $(grep -rl "@pytest.mark.gpu" tests --include='test_*.py' | sort) >"$OUT/pytest_gpu.log" 2>&1
    echo "exit $?" >>"$OUT/pytest_gpu.log" ) &
  ( timeout --kill-after=10 "$lim" $PY -m xtlens.profiling.cli probe scaling --preset seed --full-size --device cuda \
      --vocab 20000 --axis dim --values 256,512,768 --seeds 0,1 --seq-len 512 --batch 8 --tokens 524288 --lr 1e-3 \
      --time-limit $(( lim - 15 )) --no-cache --out "$OUT/probe_scaling.csv" >"$OUT/probe_scaling.log" 2>&1
    echo "exit $?" >>"$OUT/probe_scaling.log" ) &
  wait
  log "end pytest_gpu + probe_scaling"
else
  log "skip pytest_gpu + probe_scaling (budget spent)"
fi
log "done"
