#!/usr/bin/env bash
# One prepared check of a machine with an NVIDIA GPU, in under 8 minutes. Everything goes under
# $OUT (or the folder given as the first argument):
#
#   doctor/capture.yaml, doctor/doctor.json  gpuops doctor --capture (what the machine is)
#   doctor/deep.json                         gpuops doctor --deep (each framework imported, a GPU conv)
#   train_step_cuda.md                       gpuops' training step against a hand-written loop, CUDA
#   sr_fast_cuda.{md,png,json}               sr_fast for 3 minutes on CUDA: PSNR curve, NVML GPU use,
#                                            and the MLflow run's system/gpu_* metrics
#   selfcheck_pytorch.json                   the framework self-check of this Python's pytorch
#   SUMMARY.md                               one line per step: exit code, seconds, the key figure
#
#   bench/gpu/run.sh [OUT_DIR]                 on the GPU machine
#   bench/gpu/run.sh --cpu-dry-run [OUT_DIR]   anywhere: the same steps with the CUDA parts skipped
#                                              or shrunk to seconds (what CI runs, so it cannot rot)
#
# Without a GPU and without --cpu-dry-run it says so in one line and exits 2. Exit code 1 when a
# step failed (the others still run), 0 otherwise.
set -u

DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then
    DRY=1
    shift
fi
OUT_DIR="${1:-${OUT:-}}"
if [ -z "$OUT_DIR" ]; then
    echo "bench/gpu/run.sh: give an output folder (argument or \$OUT)" >&2
    exit 2
fi

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi

if [ "$DRY" = 0 ]; then
    smi="not found"
    if command -v nvidia-smi >/dev/null 2>&1; then
        smi="$(nvidia-smi -L 2>&1 | head -n 1)"
    fi
    cuda="$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null || echo "torch missing")"
    if [ "$cuda" != "True" ]; then
        echo "bench/gpu/run.sh: no NVIDIA GPU here (nvidia-smi: ${smi}; torch.cuda.is_available(): ${cuda}); nothing measured (--cpu-dry-run checks the script itself)"
        exit 2
    fi
fi

mkdir -p "$OUT_DIR/doctor"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/SUMMARY.md"
FAILED=0
cd "$REPO" || exit 2
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

{
    echo "# bench/gpu/run.sh $([ "$DRY" = 1 ] && echo '(CPU dry run: CUDA parts skipped or shrunk)')"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), python $("$PY" -c 'import sys; print(sys.version.split()[0])')"
    echo
    echo "| step | exit | seconds | result |"
    echo "| --- | --- | --- | --- |"
} > "$SUMMARY"

# step NAME OK_CODES TIMEOUT_S RESULT_CMD -- COMMAND...: run, time, record in SUMMARY.md
step() {
    local name="$1" ok="$2" limit="$3" result="$4"
    shift 5
    local began rc took
    began=$(date +%s)
    timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    took=$(( $(date +%s) - began ))
    local res
    res="$(eval "$result" 2>/dev/null | head -c 300 | tr '\n|' '  ')"
    if ! printf '%s\n' $ok | grep -qx "$rc"; then
        FAILED=1
        res="FAILED: $(tail -n 3 "$OUT_DIR/$name.log" | tr '\n|' '  ' | head -c 300)"
    fi
    echo "| $name | $rc | $took | $res |" >> "$SUMMARY"
    echo "$name: exit $rc in ${took}s"
}

# 1. the machine, as doctor sees it (exit 1 = an error finding: a result, not a failure)
step doctor "0 1" 120 \
    "$PY -c \"import json; d=json.load(open('$OUT_DIR/doctor/doctor.json')); print(d.get('verdict_line'), '-', len(d.get('findings', [])), 'findings')\"" -- \
    bash -c '"$0" -m gpuops doctor --capture "$1/doctor/capture.yaml" --json > "$1/doctor/doctor.json"' "$PY" "$OUT_DIR"
# 2. doctor --deep: imports each framework in a child process, a tiny GPU convolution
step doctor_deep "0 1" 180 \
    "$PY -c \"import json; d=json.load(open('$OUT_DIR/doctor/deep.json')); print(d.get('verdict_line'))\"" -- \
    bash -c '"$0" -m gpuops doctor --deep --json > "$1/doctor/deep.json"' "$PY" "$OUT_DIR"
# 3. the training step against a hand-written loop
if [ "$DRY" = 1 ]; then
    step train_step 0 120 "grep -m1 'Ratio' '$OUT_DIR/train_step_cpu.md'" -- \
        "$PY" bench/train_step.py --device cpu --rounds 2 --steps 1 --out "$OUT_DIR/train_step_cpu.md"
else
    step train_step 0 120 "grep -m1 'Ratio' '$OUT_DIR/train_step_cuda.md'" -- \
        "$PY" bench/train_step.py --device cuda --batch 128 --steps 10 --rounds 20 \
        --out "$OUT_DIR/train_step_cuda.md"
fi
# 4. sr_fast on CUDA for 3 minutes: PSNR curve, NVML utilisation, MLflow's GPU system metrics
STORE="sqlite:///$OUT_DIR/mlflow.db"
if [ "$DRY" = 1 ]; then
    step sr_fast 0 300 "grep -m1 'sr_fast.yaml' '$OUT_DIR/sr_fast_cpu.md'" -- \
        "$PY" bench/sr_time_to_quality.py --specs experiments/sr_fast.yaml --smoke --device cpu \
        --tracking-uri "$STORE" --out "$OUT_DIR/sr_fast_cpu"
else
    step sr_fast 0 330 "grep -E -m2 'sr_fast.yaml|GPU \(NVML' '$OUT_DIR/sr_fast_cuda.md'" -- \
        "$PY" bench/sr_time_to_quality.py --specs experiments/sr_fast.yaml --device cuda --threads 8 \
        --budget 3 --eval-every 2000 --set train.iterations=60000 --set train.checkpoint_every=0 \
        --tracking-uri "$STORE" --nvml --out "$OUT_DIR/sr_fast_cuda"
    # the run must carry MLflow's GPU system metrics (system/gpu_0_utilization_percentage, ...)
    step system_metrics 0 60 "cat '$OUT_DIR/system_metrics.log'" -- \
        "$PY" -c "import json, sys; r = json.load(open('$OUT_DIR/sr_fast_cuda.json'))['results'][0]; \
g = [k for k in r.get('system_metrics', []) if k.startswith('system/gpu')]; \
print(len(g), 'GPU system metrics on run', r.get('run_id'), g[:3]); sys.exit(0 if g else 1)"
fi
# 5. the framework self-check of this Python's pytorch
step selfcheck 0 300 "$PY -c \"import json; d=json.load(open('$OUT_DIR/selfcheck_pytorch.json')); print('ok' if d.get('ok') else 'NOT ok', d.get('version'), 'cuda', d.get('cuda_available'), d.get('gpu', ''))\"" -- \
    "$PY" -c "import json, sys; from gpuops.envs.selfcheck import selfcheck_local; \
r = selfcheck_local('pytorch', sys.executable); open('$OUT_DIR/selfcheck_pytorch.json', 'w').write(json.dumps(r, indent=2)); \
sys.exit(0 if r.get('ok') and ($DRY or r.get('gpu_op') is not None) else 1)"

echo >> "$SUMMARY"
echo "overall: $([ "$FAILED" = 0 ] && echo ok || echo 'a step failed')" >> "$SUMMARY"
cat "$SUMMARY"
exit "$FAILED"
