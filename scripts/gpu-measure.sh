#!/usr/bin/env bash
# Every measurement the docs leave to a GPU, in one call on one GPU machine, within a deadline:
#   1. the speed table of benchmarks/RESULTS.md (Llama-3.2-1B shape, bf16, batch 8 x 512), with the GPU to itself;
#   2. until the deadline, every run of the comparisons on one Ray instance started here: the 300-step QA
#      protocol (configs/compare-qa-gpu.yaml), the 60-step QA table (configs/compare-qa.yaml, the CPU
#      protocol: same runs, only faster) and the four ablations (configs/ablation-*.yaml), each config one
#      `ptmoe compare --executor ray` whose runs are Ray tasks of GPUS_PER_RUN of the GPU (default 0.08:
#      twelve at once) and one CPU core each;
#   3. every table from the runs that finished, and those runs (results, logs, configs and adapters; no
#      optimizer checkpoints) packed into OUTDIR/runs.tar.xz, to unpack into runs/ elsewhere.
# OUTDIR ends with five files (a device call returns at most eight): summary.md (every table),
# bench.md and bench.json, runs.tar.xz, and logs.tar.xz (each step's log).
# Usage: bash scripts/gpu-measure.sh OUTDIR [DEADLINE_S [CONFIG ...]]
# With CONFIGs, step 2 runs those instead; BENCH=0 skips step 1; RAY_ADDRESS=host:port uses a running Ray
# cluster instead of starting one. What is still to run after the sessions so far (docs/parity.md):
#   BENCH=0 bash scripts/gpu-measure.sh OUT 540 configs/compare-qa-gpu.yaml configs/ablation-routing.yaml
# Runs are stored by config hash, so the same command resumes what a deadline stopped.
set -u
outdir=${1:?usage: bash scripts/gpu-measure.sh OUTDIR [DEADLINE_S [CONFIG ...]]}
deadline=${2:-3600}
shift $(($# < 2 ? $# : 2))
configs=("$@")
[ ${#configs[@]} -eq 0 ] && configs=(configs/compare-qa-gpu.yaml configs/compare-qa.yaml configs/ablation-*.yaml)
ptmoe="${PTMOE:-ptmoe}"
share=${GPUS_PER_RUN:-0.08}
start=$(date +%s)
left() { echo $((deadline - ($(date +%s) - start))); }
work="$outdir/work"
mkdir -p "$work"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$work/device.txt" 2>&1

if [ "${BENCH:-1}" != 0 ]; then
    echo "[gpu-measure] 1. speed table ($(left) s left)"
    timeout $(($(left) / 4)) $ptmoe bench --model shape:llama-3.2-1b --device cuda --dtype bf16 --batch-size 8 \
        --seq-len 512 --prompt-length 40 --out benchmarks/gpu-llama1b 2>&1 | tee "$work/bench.log"
    cp benchmarks/gpu-llama1b/bench.md benchmarks/gpu-llama1b/bench.json "$outdir/" 2>/dev/null
fi

# leave a minute for the reports and the packing
stop=$(($(left) - 60))
echo "[gpu-measure] 2. comparisons on Ray for ${stop} s (${share} of the GPU per run)"
# TF32 tensor-core matmuls for the fp32 configs (fp32 storage, reduced-precision products); the Ray
# workers inherit it from the instance started here
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
started_ray=0
if [ -z "${RAY_ADDRESS:-}" ]; then
    ray start --head --include-dashboard=false --disable-usage-stats >"$work/ray-start.log" 2>&1 && started_ray=1
    export RAY_ADDRESS=auto
fi
pids=()
for config in "${configs[@]}"; do  # all configs' runs share the instance: Ray fills the GPU with them
    timeout "$stop" $ptmoe compare "$config" --executor ray --address "$RAY_ADDRESS" --gpus-per-run "$share" \
        --cpus-per-run 1 </dev/null >"$work/$(basename "$config" .yaml).log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
[ "$started_ray" = 1 ] && ray stop >>"$work/ray-start.log" 2>&1
for config in "${configs[@]}"; do
    $ptmoe compare "$config" --report >"$work/$(basename "$config" .yaml).md" 2>&1
done

echo "[gpu-measure] 3. packing ($(left) s left)"
dirs=$(for c in "${configs[@]}"; do
    python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["output_dir"])' "$c"; done)
# shellcheck disable=SC2086
tar cJf "$outdir/runs.tar.xz" --exclude=checkpoint --exclude=tensorboard $dirs 2>/dev/null
for f in "$work"/*.md; do printf '\n## %s\n\n' "$(basename "$f" .md)"; cat "$f"; done >"$outdir/summary.md"
tar cJf "$outdir/logs.tar.xz" -C "$work" . && rm -r "$work"
ls -la "$outdir"
cat "$outdir/summary.md"
