#!/usr/bin/env bash
# The GPU speed work's checks on one GPU in one call: `ptmoe bench` with PEFT side by side (training step,
# real Disfl-QA, generation), the backbone options (--compile, --liger), torch.profiler summaries of our
# generate (fast path and plain path) and PEFT's, and the fast path's greedy tokens against the plain
# path's on 64 questions. OUTDIR ends with two files (a device call returns at most eight):
# summary.md (every table, in order) and runs.tar.gz (each run's bench.json and log).
#
# Usage:
#   bash scripts/gpu-bench.sh --prepare        # here, once: the data, tokenizer and Liger wheel to carry
#   bash scripts/gpu-bench.sh OUTDIR [DEADLINE_S]
# The device call (benchmarks/RESULTS.md has it whole) carries .devcache and .whl made by --prepare.
# Settings by environment (defaults: the issue's): DEVICE=cuda MODEL=shape:llama-3.2-1b DTYPE=bf16
# BATCH=8 SEQ=512 STEPS=10 REAL=256 GEN=64 NEW=32 METHODS= (the first run's; empty: all of bench's).
# On a CPU in a few minutes (the tiny shape's byte tokenizer needs SEQ=512 for Disfl-QA):
#   DEVICE=cpu MODEL=shape:tiny DTYPE=fp32 BATCH=2 SEQ=512 STEPS=1 REAL=4 GEN=4 NEW=4 METHODS=forward,peft-pt,ptmoe \
#     OMP_NUM_THREADS=1 bash scripts/gpu-bench.sh /tmp/gb 600
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    cache="${PTMOE_CACHE:-$HOME/.cache/ptmoe}"
    exclude=$(git rev-parse --git-path info/exclude)  # (a worktree's is the main checkout's)
    mkdir -p "$(dirname "$exclude")"
    for d in /.devcache/ /.whl/; do grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"; done
    mkdir -p .devcache/data/prepared .devcache/models/smollm2-135m-instruct .whl
    cp -r "$cache/data/prepared/disflqa" "$cache/data/prepared/manifest.json" .devcache/data/prepared/ || exit 1
    # the 1B shape's tokenizer is the embedded model's: its folder without the weights
    find "$cache/models/smollm2-135m-instruct" -maxdepth 1 -type f ! -name '*.safetensors' \
        -exec cp {} .devcache/models/smollm2-135m-instruct/ \; || exit 1
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl liger-kernel==0.8.5 || exit 1
    du -sh .devcache .whl
    exit 0
fi

outdir=${1:?usage: bash scripts/gpu-bench.sh OUTDIR [DEADLINE_S] | --prepare}
deadline=${2:-540}
DEVICE=${DEVICE:-cuda} MODEL=${MODEL:-shape:llama-3.2-1b} DTYPE=${DTYPE:-bf16}
BATCH=${BATCH:-8} SEQ=${SEQ:-512} STEPS=${STEPS:-10} REAL=${REAL:-256} GEN=${GEN:-64} NEW=${NEW:-32}
METHODS=${METHODS:-}
[ -d .devcache ] && export PTMOE_CACHE="${PTMOE_CACHE:-$PWD/.devcache}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $((deadline - ($(date +%s) - start))); }
work="$outdir/work"
mkdir -p "$work"
common=(--model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --batch-size "$BATCH" --seq-len "$SEQ"
    --prompt-length 40 --steps "$STEPS" --real-examples "$REAL" --gen-examples "$GEN" --max-new-tokens "$NEW")
three=(--methods forward,peft-pt,ptmoe)

# one `ptmoe bench` run: NAME SHARE_OF_TIME_LEFT ARGS...; each gets its share of what is left
bench() {
    local name=$1 share=$2
    shift 2
    local t=$(($(left) / share))
    if [ "$t" -lt 20 ]; then
        echo "[gpu-bench] $name: skipped, $(left) s left" | tee -a "$work/skipped.txt"
        return
    fi
    echo "[gpu-bench] $name (${t} s of $(left) s left)"
    timeout "$t" python3 -m ptmoe.cli bench "${common[@]}" "$@" --out "$work/$name" >"$work/$name.log" 2>&1 \
        || echo "[gpu-bench] $name: exit $? (see $name.log)" | tee -a "$work/skipped.txt"
    grep -E '^\[bench\]|^  ' "$work/$name.log" | grep -v -i warn
}

[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$work/device.txt" 2>&1
# 1. the headline: every part with PEFT side by side, our generate on the static cache (compiled on CUDA)
bench main 2 --parts synthetic,real,generate --gen-cache static ${METHODS:+--methods "$METHODS"}
# 2. the fast path: its greedy tokens against the plain path's, and its profile beside PEFT's
bench fast 3 --parts tokens,profile --gen-cache static
# 3. the plain path (dynamic cache, eager): generation and profile, as before this issue
bench plain 4 --parts generate,profile --gen-cache dynamic
# 4. the backbone options, each against the same forward and PEFT
bench compile 3 --parts synthetic "${three[@]}" --compile
if python3 -c 'import liger_kernel' 2>/dev/null; then
    bench liger 1 --parts synthetic "${three[@]}" --liger
else
    echo "[gpu-bench] liger: skipped, liger-kernel not importable" | tee -a "$work/skipped.txt"
fi

for name in main fast plain compile liger; do
    [ -f "$work/$name/bench.md" ] || continue
    printf '\n## %s\n\n' "$name"
    cat "$work/$name/bench.md"
done >"$outdir/summary.md"
[ -f "$work/skipped.txt" ] && { printf '\n## not run\n\n'; cat "$work/skipped.txt"; } >>"$outdir/summary.md"
tar czf "$outdir/runs.tar.gz" -C "$work" . && rm -r "$work"
echo "[gpu-bench] done in $(($(date +%s) - start)) s"
cat "$outdir/summary.md"
