#!/usr/bin/env bash
# End-to-end demo on the bundled data: install, pretrain, full SFT, then one chat answer.
# A small model (hidden 256, 4 layers, ~5M parameters) so it finishes in minutes on a CPU; on a GPU/NPU it is seconds.
#   bash scripts/demo.sh            # everything
#   SKIP_INSTALL=1 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  # torch first: the pinned CPU build here; on a CUDA/NPU machine install your matching torch beforehand
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install torch==2.13.0
  "$PY" -m pip install -r requirements.txt
fi
SIZE=(--hidden_size 256 --num_hidden_layers 4)
OUT=(--save_dir out/demo --checkpoint_dir checkpoints/demo)
echo "== pretrain (bundled dataset/demo/pretrain_demo.jsonl)"
"$PY" trainer/train_pretrain.py "${SIZE[@]}" "${OUT[@]}" --max_seq_len 256 --batch_size 16 --accumulation_steps 1 \
  --packing 1 --learning_rate 2e-3 --warmup_steps 20 --log_interval 20 --save_interval 200 --max_steps "${PRETRAIN_STEPS:-200}"
echo "== full SFT (bundled dataset/demo/sft_demo.jsonl)"
"$PY" trainer/train_full_sft.py "${SIZE[@]}" "${OUT[@]}" --max_seq_len 256 --batch_size 16 --epochs 1 \
  --learning_rate 5e-4 --log_interval 20 --save_interval 200 --max_steps "${SFT_STEPS:-120}"
echo "== chat"
printf '成语“画蛇添足”是什么意思？\n/exit\n' | "$PY" eval_llm.py chat --save_dir out/demo --weight full_sft \
  --max_new_tokens 64 --temperature 0.7 --show_speed 1
