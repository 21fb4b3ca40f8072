#!/usr/bin/env bash
# End-to-end demo on the bundled data: install, pretrain, full SFT, one chat answer, then a report of what was
# learned (held-out bits per character and multiple-choice accuracy, untrained vs pretrain vs SFT, through
# scripts/eval_bench.py), a training report with loss curves ($DIR/report.md, report/*.png), the files, next commands.
# A small model (hidden 256, 4 layers, ~5M parameters) so it finishes in minutes on a CPU; on a GPU/NPU it is seconds.
# Everything goes to out/demo/ and checkpoints/demo/, never over the default out/*_512.pth weights.
#
# Where it installs: into the active virtual environment (or conda env) when there is one; otherwise into a project
# environment .venv/ that it creates (with uv when uv is installed, else python3 -m venv), because Debian 12 and
# current Ubuntu refuse `pip install` into the system Python (PEP 668, "externally-managed-environment").
# With torch's CPU build the install downloads about 0.5 GB and takes 2.1 GB on disk (PyPI's default torch on Linux
# is the CUDA build: several GB more; TORCH_INDEX_URL below avoids it). A second run reuses the environment.
#   bash scripts/demo.sh                           # everything
#   SKIP_INSTALL=1 bash scripts/demo.sh            # no install: run with $PYTHON (default: .venv's if any, else python3)
#   DEMO_INSTALL_ONLY=1 bash scripts/demo.sh       # only make/fill the environment, print its python
#   DEMO_SYSTEM_SITE=1 bash scripts/demo.sh        # .venv sees the system's packages (reuse a CUDA/NPU torch there)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/demo.sh   # CPU-only torch (smaller download)
#   DEMO_DIR=/tmp/d DEMO_CHECKPOINT_DIR=/tmp/c PRETRAIN_STEPS=2 SFT_STEPS=2 SKIP_INSTALL=1 bash scripts/demo.sh  # smoke
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)  # the summary's time is the whole run: install and report included
VENV=${DEMO_VENV:-.venv}
REQUIREMENTS=${DEMO_REQUIREMENTS:-requirements.txt}
say() { echo "$@"; }
in_env() {  # is this python a virtual environment's or a conda environment's (pip may install into it)?
  "$1" -c 'import os, sys; sys.exit(0 if sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix else 1)'
}
pip_install() {  # $@: pip arguments, through uv when the environment was made by uv
  if [ "$INSTALLER" = uv ]; then uv pip install --python "$PY" "$@"; else "$PY" -m pip install "$@"; fi
}

PY=${PYTHON:-}
if [ "${SKIP_INSTALL:-0}" = "1" ]; then
  if [ -z "$PY" ]; then if [ -x "$VENV/bin/python" ]; then PY=$VENV/bin/python; else PY=python3; fi; fi
else
  echo "== [1/5] install   (0s elapsed)"
  PY=${PY:-python3}
  INSTALLER=pip
  if in_env "$PY"; then
    say "environment: the active one, $("$PY" -c 'import sys; print(sys.prefix)') (pip)"
  else
    if [ ! -x "$VENV/bin/python" ]; then
      site=(); [ "${DEMO_SYSTEM_SITE:-0}" = "1" ] && site=(--system-site-packages)
      if command -v uv >/dev/null 2>&1 && [ "${DEMO_NO_UV:-0}" != "1" ]; then
        uv venv --seed --python "$PY" "${site[@]}" "$VENV"
      elif ! "$PY" -m venv "${site[@]}" "$VENV"; then
        echo "error: could not create the virtual environment $VENV with $PY -m venv. On Debian/Ubuntu install the" \
             "venv module first: sudo apt install python3-venv (or install uv), then run this again" >&2
        rm -rf "$VENV"
        exit 2
      fi
    fi
    # a venv made by uv has no pip unless seeded; use uv for it whenever uv is there
    if command -v uv >/dev/null 2>&1 && [ "${DEMO_NO_UV:-0}" != "1" ]; then INSTALLER=uv; fi
    PY=$VENV/bin/python
    say "environment: $VENV (project virtual environment, installer $INSTALLER; the system Python is not touched)"
  fi
  say "installing: torch, then $REQUIREMENTS (first time: ~0.5 GB to download with the CPU torch, 2.1 GB on disk)"
  # torch first: the pinned build; on a CUDA/NPU machine install your matching torch beforehand (DEMO_SYSTEM_SITE=1
  # reuses one installed system-wide). requirements-lock.txt pins the versions the tests pass with (torch excluded).
  if ! "$PY" -c "import torch" 2>/dev/null; then
    pip_install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
  pip_install -r "$REQUIREMENTS" -c requirements-lock.txt
  say "installed in $(( $(date +%s) - start ))s; python: $PY"
  if [ "$PY" != "${PYTHON:-python3}" ]; then
    say "to use it yourself: source $VENV/bin/activate   (then: python -m pytest -q, python eval_llm.py ...)"
  fi
  if [ "${DEMO_INSTALL_ONLY:-0}" = "1" ]; then exit 0; fi
fi
SIZE=(--hidden_size 256 --num_hidden_layers 4)
DIR=${DEMO_DIR:-out/demo}
OUT=(--save_dir "$DIR" --checkpoint_dir "${DEMO_CHECKPOINT_DIR:-checkpoints/demo}")
times=()
stage() {
  local now; now=$(date +%s)
  [ -n "${last_name:-}" ] && times+=("$last_name=$(( now - last_at ))")
  last_name=$3 last_at=$now
  echo; echo "== [$1/5] $2   ($(( now - start ))s elapsed)"
}
[ "${SKIP_INSTALL:-0}" = "1" ] || times+=("install=$(( $(date +%s) - start ))")

stage 2 "pretrain: next-token prediction on dataset/demo/pretrain_demo.jsonl -> $DIR/pretrain_256.pth" pretrain
"$PY" trainer/train_pretrain.py "${SIZE[@]}" "${OUT[@]}" --max_seq_len 256 --batch_size 16 --accumulation_steps 1 \
  --packing 1 --learning_rate 2e-3 --warmup_steps 20 --log_interval 20 --save_interval 1000 \
  --max_steps "${PRETRAIN_STEPS:-200}"

stage 3 "full SFT: chat turns of dataset/demo/sft_demo.jsonl, loss on the answers -> $DIR/full_sft_256.pth" sft
"$PY" trainer/train_full_sft.py "${SIZE[@]}" "${OUT[@]}" --max_seq_len 256 --batch_size 16 --epochs 1 \
  --learning_rate 5e-4 --log_interval 20 --save_interval 1000 --max_steps "${SFT_STEPS:-120}"

stage 4 "chat: one answer from $DIR/full_sft_256.pth" chat
printf '成语“画蛇添足”是什么意思？\n/exit\n' | "$PY" eval_llm.py chat --save_dir "$DIR" --weight full_sft \
  --max_new_tokens 64 --temperature 0.7 --show_speed 1

stage 5 "report: untrained vs pretrain vs full_sft (held-out bits/char, multiple choice vs chance), curves, next commands" report
# the evaluation harness (scripts/eval_bench.py) on the three models, then the training report ($DIR/report.md + PNGs);
# the summary's time is taken at its very end, so it is the whole run's wall time
"$PY" scripts/demo_report.py --save_dir "$DIR" --started_at "$start" --stage_seconds "${times[@]}"
