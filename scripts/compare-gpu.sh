#!/usr/bin/env bash
# Run a compare config on one GPU: one `ptmoe compare --only METHOD` process per method side by side
# (a 135M model leaves most of an H100 idle in one process), then the table from every finished run.
# Usage: bash scripts/compare-gpu.sh CONFIG [DEADLINE_S [KEY=VALUE ...]]
# With DEADLINE_S > 0, the method processes are stopped after that many seconds; their finished runs
# are stored, and running the same command again resumes where they stopped. KEY=VALUE overrides go to
# every `ptmoe compare` call, e.g. train.steps=1000 for configs/compare-math.yaml.
set -u
config=${1:?usage: bash scripts/compare-gpu.sh CONFIG [DEADLINE_S]}
deadline=${2:-0}
shift $(( $# < 2 ? $# : 2 ))
ptmoe="${PTMOE:-ptmoe}"
# TF32 tensor-core matmuls for the fp32 configs: the same storage and accumulation, ~8x the fp32 rate
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
names=$(python3 - "$config" <<'PY'
import sys, yaml
for m in yaml.safe_load(open(sys.argv[1]))["methods"]:
    print(m["name"])
PY
) || exit 1
threads=$(( $(nproc) / $(echo "$names" | wc -l) )); [ "$threads" -ge 1 ] || threads=1
out=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['output_dir'])" "$config")
mkdir -p "$out/logs"
pids=()
while IFS= read -r name; do
    log="$out/logs/$(echo "$name" | tr -c 'A-Za-z0-9\n' '_').log"
    if [ "$deadline" -gt 0 ]; then
        OMP_NUM_THREADS=$threads timeout "$deadline" $ptmoe compare "$config" "$@" --only "$name" </dev/null >"$log" 2>&1 &
    else
        OMP_NUM_THREADS=$threads $ptmoe compare "$config" "$@" --only "$name" </dev/null >"$log" 2>&1 &
    fi
    pids+=($!)
    echo "[compare-gpu] $name -> $log"
done <<< "$names"
for p in "${pids[@]}"; do wait "$p" || echo "[compare-gpu] a method process ended with status $? (see $out/logs)"; done
$ptmoe compare "$config" "$@" --report
