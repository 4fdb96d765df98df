#!/usr/bin/env bash
# Every measurement the docs leave to a GPU, in one call on one GPU machine, within a deadline:
#   1. the speed table of benchmarks/RESULTS.md (Llama-3.2-1B shape, bf16, batch 8 x 512), with the GPU to itself;
#   2. side by side until the deadline: the 300-step QA protocol (configs/compare-qa-gpu.yaml), the 60-step
#      QA table (configs/compare-qa.yaml, the CPU protocol: same runs, only faster) and the four ablations
#      (configs/ablation-*.yaml, one process each);
#   3. every table from the runs that finished, and those runs (results, logs, configs and adapters; no
#      optimizer checkpoints) packed into OUTDIR/runs.tar.xz, to unpack into runs/ elsewhere.
# OUTDIR ends with five files (a device call returns at most eight): summary.md (every table),
# bench.md and bench.json, runs.tar.xz, and logs.tar.xz (each step's log).
# Usage: bash scripts/gpu-measure.sh OUTDIR [DEADLINE_S [CONFIG ...]]
# With CONFIGs, step 2 runs those (each as one process per method, scripts/compare-gpu.sh) instead;
# BENCH=0 skips step 1. What is still to run after the sessions so far (docs/parity.md):
#   BENCH=0 bash scripts/gpu-measure.sh OUT 540 configs/compare-qa-gpu.yaml configs/ablation-routing.yaml
# Runs are stored by config hash, so the same command resumes what a deadline stopped.
set -u
outdir=${1:?usage: bash scripts/gpu-measure.sh OUTDIR [DEADLINE_S [CONFIG ...]]}
deadline=${2:-3600}
shift $(($# < 2 ? $# : 2))
# one process per method (compare-gpu.sh) for these; one process per config for the ablations by default
split=("$@") single=()
[ ${#split[@]} -eq 0 ] && split=(configs/compare-qa-gpu.yaml configs/compare-qa.yaml) single=(configs/ablation-*.yaml)
ptmoe="${PTMOE:-ptmoe}"
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
echo "[gpu-measure] 2. comparisons side by side for ${stop} s"
pids=()
for config in "${split[@]}"; do
    PTMOE="$ptmoe" bash scripts/compare-gpu.sh "$config" "$stop" >"$work/$(basename "$config" .yaml).md" 2>&1 &
    pids+=($!)
done
for config in "${single[@]}"; do
    (OMP_NUM_THREADS=1 timeout "$stop" $ptmoe compare "$config" </dev/null >"$work/$(basename "$config" .yaml).log" 2>&1
     $ptmoe compare "$config" --report >"$work/$(basename "$config" .yaml).md" 2>&1) &
    pids+=($!)
done
wait "${pids[@]}"

echo "[gpu-measure] 3. packing ($(left) s left)"
dirs=$(for c in "${split[@]}" "${single[@]}"; do
    python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["output_dir"])' "$c"; done)
# shellcheck disable=SC2086
tar cJf "$outdir/runs.tar.xz" --exclude=checkpoint --exclude=tensorboard $dirs 2>/dev/null
for f in "$work"/*.md; do printf '\n## %s\n\n' "$(basename "$f" .md)"; cat "$f"; done >"$outdir/summary.md"
tar cJf "$outdir/logs.tar.xz" -C "$work" . && rm -r "$work"
ls -la "$outdir"
cat "$outdir/summary.md"
