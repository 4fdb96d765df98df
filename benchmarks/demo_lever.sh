#!/usr/bin/env bash
# One candidate setting of the demo, scored on questions the demo never reports, to choose its settings
# without looking at its held-out questions: train configs/demo.yaml with the given overrides into
# runs/lever-NAME, then evaluate the best adapter on 128 SQuAD-Shifts new_wiki questions (one per passage;
# "dev", used to choose) and on the demo's own 64 held-out questions ("test", reported). Appends one line to
# runs/levers.txt. THREADS (default 1) sets the thread count, so a setting can run beside other work.
#   bash benchmarks/demo_lever.sh base
#   bash benchmarks/demo_lever.sh b4s120 train.batch_size=4 train.steps=120 train.save_every=40
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
out=runs/lever-$name
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
start=$(date +%s)
ptmoe train configs/demo.yaml output_dir="$out" "$@"
t1=$(date +%s)
ptmoe eval configs/demo.yaml --adapter "$out/best" --out "$out/dev" 'data.eval=[squad_shifts_new_wiki/test]' \
  data.max_eval_examples=128 "$@"
ptmoe eval configs/demo.yaml --adapter "$out/best" --out "$out/test" "$@"
t2=$(date +%s)
python - "$out" "$name" $((t1 - start)) $((t2 - t1)) <<'PY'
import json, sys
out, name, train_s, eval_s = sys.argv[1:]
dev = json.load(open(f"{out}/dev/results.json"))["average"]
test = json.load(open(f"{out}/test/results.json"))["average"]
valid = [json.loads(line) for line in open(f"{out}/log.jsonl") if "valid_loss" in line]
line = (f"{name}: dev F1 {dev['f1']:.2f} EM {dev['em']:.2f} | test F1 {test['f1']:.2f} EM {test['em']:.2f} | "
        f"valid_loss {valid[-1]['valid_loss']:.4f} | train {train_s}s eval {eval_s}s")
print(line)
with open("runs/levers.txt", "a") as f:
    f.write(line + "\n")
PY
