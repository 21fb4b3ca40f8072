#!/usr/bin/env bash
# Decoding speed on one GPU (issue 17, decoding half): JSON lines into $OUT/decode_bench.jsonl.
#   model: scripts/bench_model.py --skip_train: the Engine with CUDA graphs over the compiled decode step, with
#      graphs alone, its eager path and HF generate at batch 1 / 16 / 64 for the 26M and 104M presets, plus greedy
#      compiled == graphs == eager == HF checks in bf16
#   grpo: GRPO rollout tokens/s (the `gen_tok_s` of trainer/train_grpo.py's metrics log) for each MINIMIND_DECODE
#      mode in $GRPO_MODES (eager: before, no graphs and a host read per token; graphs; compile; default), same
#      seed, same steps; from $SAVE_DIR/full_sft_512.pth when it is there (scripts/gpu_reference_run.sh), else
#      from random weights
#
#   OUT=/tmp/o bash scripts/gpu_decode_bench.sh                                # on the GPU box (~8 min, H200)
#   OUT=/tmp/o PARTS=grpo GRPO_MODES="eager default" bash scripts/gpu_decode_bench.sh   # one part
#   OUT=/tmp/o BENCH_DEVICE=cpu BENCH_TINY=1 bash scripts/gpu_decode_bench.sh  # CPU check of the driver itself
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PY=${PY:-python3}
J="$OUT/decode_bench.jsonl"
: > "$J"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SAVE_DIR=${SAVE_DIR:-out}
DEV=(); [ -n "${BENCH_DEVICE:-}" ] && DEV=(--device "$BENCH_DEVICE")
if [ -n "${BENCH_TINY:-}" ]; then
    MODEL=(--preset tiny --decode_batches 1 4 --new_tokens 16); HIDDEN=64; SIZE=(--hidden_size 64 --num_hidden_layers 2)
    RL=(--max_steps 2 --batch_size 2 --num_generations 2 --max_gen_len 16)
else
    MODEL=(--preset ${DECODE_PRESETS:-small base} --decode_batches 1 16 64 --new_tokens 256); HIDDEN=512; SIZE=(--hidden_size 512)
    RL=(--max_steps "${RL_STEPS:-6}" --batch_size 8 --num_generations 8 --max_gen_len 256)
fi

PARTS=${PARTS:-model grpo}
if [[ " $PARTS " == *" model "* ]]; then
    timeout ${MODEL_LIMIT:-540} $PY scripts/bench_model.py --skip_train "${MODEL[@]}" "${DEV[@]}" >> "$J" 2> "$OUT/bench_model.log" ||
        echo "{\"bench\": \"bench_model\", \"error\": $?}" >> "$J"
fi
[[ " $PARTS " == *" grpo "* ]] || { cat "$J"; exit 0; }

FROM=none
if [ -f "$SAVE_DIR/full_sft_$HIDDEN.pth" ]; then
    cp "$SAVE_DIR/full_sft_$HIDDEN.pth" "$SAVE_DIR/full_sft_$HIDDEN.json" "$WORK/" && FROM=full_sft
fi
for mode in ${GRPO_MODES:-eager graphs compile}; do
    rm -f "$WORK/grpo_$HIDDEN.metrics.jsonl"
    MINIMIND_DECODE=$([ $mode = default ] || echo $mode) timeout 200 $PY trainer/train_grpo.py "${SIZE[@]}" \
        "${DEV[@]}" "${RL[@]}" --from_weight "$FROM" --reward rule --seed 0 --log_interval 1 --save_interval 100000 \
        --save_dir "$WORK" --checkpoint_dir "$WORK/ckpt" > "$OUT/grpo_$mode.log" 2>&1
    rc=$?
    $PY - "$WORK/grpo_$HIDDEN.metrics.jsonl" "$mode" "$FROM" "$rc" >> "$J" <<'EOF'
import json, statistics, sys
path, mode, start, rc = sys.argv[1:]
try:
    rows = [json.loads(l) for l in open(path) if l.strip()]
except FileNotFoundError:
    rows = []
speeds = [r["gen_tok_s"] for r in rows[1:]]  # the first rollout captures the graphs: reported apart
print(json.dumps({"bench": "grpo_rollout", "decode": mode, "from_weight": start, "rc": int(rc), "steps": len(rows),
                  "first_gen_tok_s": round(rows[0]["gen_tok_s"], 1) if rows else None,
                  "median_gen_tok_s": round(statistics.median(speeds), 1) if speeds else None,
                  "mean_resp_len": round(statistics.mean(r["resp_len"] for r in rows), 1) if rows else None}))
EOF
done
cat "$J"
