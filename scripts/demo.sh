#!/usr/bin/env bash
# End-to-end demo on the bundled data: install, pretrain, full SFT, one chat answer, then a report of what was
# learned (held-out bits per character and multiple-choice accuracy, untrained vs pretrain vs SFT, through
# scripts/eval_bench.py), a training report with loss curves ($DIR/report.md, report/*.png), the files, next commands.
# A small model (hidden 256, 4 layers, ~5M parameters) so it finishes in minutes on a CPU; on a GPU/NPU it is seconds.
# Everything goes to out/demo/ and checkpoints/demo/, never over the default out/*_512.pth weights.
#   bash scripts/demo.sh            # everything
#   SKIP_INSTALL=1 bash scripts/demo.sh
#   DEMO_DIR=/tmp/d DEMO_CHECKPOINT_DIR=/tmp/c PRETRAIN_STEPS=2 SFT_STEPS=2 SKIP_INSTALL=1 bash scripts/demo.sh  # smoke
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  # torch first: the pinned CPU build here; on a CUDA/NPU machine install your matching torch beforehand.
  # requirements-lock.txt pins the versions the tests pass with (torch excluded).
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install torch==2.13.0
  "$PY" -m pip install -r requirements.txt -c requirements-lock.txt
fi
SIZE=(--hidden_size 256 --num_hidden_layers 4)
DIR=${DEMO_DIR:-out/demo}
OUT=(--save_dir "$DIR" --checkpoint_dir "${DEMO_CHECKPOINT_DIR:-checkpoints/demo}")
start=$(date +%s)
stage() { echo; echo "== [$1/4] $2   ($(( $(date +%s) - start ))s elapsed)"; }

stage 1 "pretrain: next-token prediction on dataset/demo/pretrain_demo.jsonl -> $DIR/pretrain_256.pth"
"$PY" trainer/train_pretrain.py "${SIZE[@]}" "${OUT[@]}" --max_seq_len 256 --batch_size 16 --accumulation_steps 1 \
  --packing 1 --learning_rate 2e-3 --warmup_steps 20 --log_interval 20 --save_interval 1000 \
  --max_steps "${PRETRAIN_STEPS:-200}"

stage 2 "full SFT: chat turns of dataset/demo/sft_demo.jsonl, loss on the answers -> $DIR/full_sft_256.pth"
"$PY" trainer/train_full_sft.py "${SIZE[@]}" "${OUT[@]}" --max_seq_len 256 --batch_size 16 --epochs 1 \
  --learning_rate 5e-4 --log_interval 20 --save_interval 1000 --max_steps "${SFT_STEPS:-120}"

stage 3 "chat: one answer from $DIR/full_sft_256.pth"
printf '成语“画蛇添足”是什么意思？\n/exit\n' | "$PY" eval_llm.py chat --save_dir "$DIR" --weight full_sft \
  --max_new_tokens 64 --temperature 0.7 --show_speed 1

stage 4 "report: untrained vs pretrain vs full_sft (held-out bits/char, multiple choice vs chance), curves, next commands"
# the evaluation harness (scripts/eval_bench.py) on the three models, then scripts/report.py: $DIR/report.md + PNGs
"$PY" scripts/demo_report.py --save_dir "$DIR" --seconds "$(( $(date +%s) - start ))"
