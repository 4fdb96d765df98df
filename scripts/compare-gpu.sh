#!/usr/bin/env bash
# Run a compare config on one GPU: one `ptmoe compare --only METHOD` process per method side by side
# (a 135M model leaves most of an H100 idle in one process), then the table from every finished run.
# Usage: bash scripts/compare-gpu.sh CONFIG [DEADLINE_S [KEY=VALUE ...]]
# With DEADLINE_S > 0, the method processes are stopped after that many seconds; their finished runs
# are stored, and running the same command again resumes where they stopped. KEY=VALUE overrides go to
# every `ptmoe compare` call, e.g. train.steps=1000 for configs/compare-math.yaml.
set -u
config=${1:?usage: bash scripts/compare-gpu.sh CONFIG [DEADLINE_S [KEY=VALUE ...]]}
deadline=${2:-0}
shift $(( $# < 2 ? $# : 2 ))
ptmoe="${PTMOE:-ptmoe}"
# TF32 tensor-core matmuls for the fp32 configs (fp32 storage, reduced-precision products)
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
# first line: output_dir; then one method name per line
listing=$(python3 - "$config" <<'PY'
import sys, yaml
try:
    cfg = yaml.safe_load(open(sys.argv[1]))
    names = [m["name"] for m in cfg["methods"]]
    print(cfg["output_dir"])
except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
    sys.exit(f"compare-gpu.sh: {sys.argv[1]}: cannot read output_dir and methods[].name ({type(e).__name__}: {e})")
print("\n".join(names))
PY
) || exit 1
out=$(head -n 1 <<< "$listing")
names=$(tail -n +2 <<< "$listing")
threads=$(( $(nproc) / $(wc -l <<< "$names") )); [ "$threads" -ge 1 ] || threads=1
stop=(); [ "$deadline" -gt 0 ] && stop=(timeout "$deadline")
mkdir -p "$out/logs"
pids=()
while IFS= read -r name; do
    log="$out/logs/$(echo "$name" | tr -c 'A-Za-z0-9\n' '_').log"
    OMP_NUM_THREADS=$threads "${stop[@]}" $ptmoe compare "$config" "$@" --only "$name" </dev/null >"$log" 2>&1 &
    pids+=($!)
    echo "[compare-gpu] $name -> $log"
done <<< "$names"
for p in "${pids[@]}"; do wait "$p" || echo "[compare-gpu] a method process ended with status $? (see $out/logs)"; done
$ptmoe compare "$config" "$@" --report
