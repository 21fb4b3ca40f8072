#!/usr/bin/env bash
# Reference run on one GPU: the 26M preset (hidden 512, 8 layers) through pretrain -> full SFT for a fixed time
# budget, then the evaluation harness on untrained / pretrain / full_sft and the training report.
#
#   bash scripts/gpu_reference_run.sh pack    # here, once: dataset/build/ -> dataset/build/gpu/*.jsonl.xz (fits 64 MiB)
#   OUT=/tmp/ref bash scripts/gpu_reference_run.sh            # on the GPU machine (carry dataset/build/gpu)
#
# `pack` needs dataset/build/ from `python scripts/build_corpus.py build`: it writes a seeded random subsample of
# dataset/build/pretrain.jsonl (as many rows as fit in PACK_MB MiB of xz) and the build's SFT and tool-call sets,
# xz-compressed, so the working tree plus corpus travel within the device's 64 MiB. The run itself needs only torch,
# transformers, numpy and this repository (stdlib lzma unpacks the corpus); without dataset/build/gpu it falls back
# to the bundled dataset/demo/ files and says so. matplotlib is optional there: without it report.md has no PNGs,
# and `python scripts/report.py --save_dir $OUT/copy` redraws them from the logs copied to $OUT.
#
# Time: the pretrain step count is sized from a short timing run (CAL_STEPS steps) so pretraining takes about
# PRETRAIN_S seconds and SFT about SFT_S seconds; evaluation adds about a minute on an H200 (not measured yet).
# Weights stay in $SAVE_DIR (default out/: out/pretrain_512.pth, out/full_sft_512.pth + sidecars + metrics logs);
# everything else (JSON lines, report.md, PNGs, sample answers) goes to $OUT.
#
# Knobs (env): PRETRAIN_S=330 SFT_S=75 CAL_STEPS=30 HIDDEN=512 LAYERS=8 SEQ=512 BATCH=64 SFT_SEQ=512 SFT_BATCH=64
#   PRETRAIN_LR=1.5e-3 SFT_LR=3e-4 DEVICE=(auto) USE_COMPILE=0 GEN_LIMIT=200 EVAL_LIMIT=0 NUM_WORKERS=4
#   SAVE_DIR=out CKPT_DIR=checkpoints PACK_MB=40 SKIP_EVAL=0 PYTHON=python3
# CPU smoke test (about 3 minutes on 2 cores):
#   OUT=/tmp/ref SAVE_DIR=/tmp/ref/out CKPT_DIR=/tmp/ref/ck HIDDEN=64 LAYERS=2 SEQ=64 BATCH=4 SFT_SEQ=64 SFT_BATCH=4 \
#     PRETRAIN_S=20 SFT_S=10 CAL_STEPS=3 GEN_LIMIT=4 EVAL_LIMIT=20 DEVICE=cpu bash scripts/gpu_reference_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
GPU_DATA=dataset/build/gpu

if [ "${1:-run}" = pack ]; then
    [ -f dataset/build/pretrain.jsonl ] || { echo "no dataset/build/pretrain.jsonl: run python scripts/build_corpus.py build first" >&2; exit 2; }
    "$PY" - "$GPU_DATA" "${PACK_MB:-40}" <<'EOF'
import json, lzma, random, sys
from pathlib import Path
out, limit = Path(sys.argv[1]), float(sys.argv[2]) * 2**20
out.mkdir(parents=True, exist_ok=True)
held = {json.loads(l)["text"] for l in open("dataset/demo/eval_heldout.jsonl", encoding="utf-8")}
sft_bytes = b""
for name in ("sft", "tool_call"):  # the SFT set, and the tool dialogues for scripts/gpu_tool_sft.sh
    src = Path(f"dataset/build/{name}.jsonl")
    if src.is_file():
        data = lzma.compress(src.read_bytes(), preset=9)
        (out / f"{name}.jsonl.xz").write_bytes(data)
        sft_bytes += data
lines = Path("dataset/build/pretrain.jsonl").read_text(encoding="utf-8").splitlines()
random.Random(0).shuffle(lines)
comp, size, rows, chars, overlap = lzma.LZMACompressor(preset=9), 0, 0, 0, 0
budget = limit - len(sft_bytes)
with open(out / "pretrain.jsonl.xz", "wb") as f:
    for line in lines:
        text = json.loads(line)["text"]
        overlap += text in held
        data = comp.compress((line + "\n").encode("utf-8"))
        f.write(data)
        size += len(data)
        rows, chars = rows + 1, chars + len(text)
        if size > budget - 2**20:  # the compressor buffers; stop 1 MiB early
            break
    f.write(comp.flush())
print(json.dumps({"pretrain_rows": rows, "of_rows": len(lines), "pretrain_chars": chars,
                  "pretrain_xz_mib": round((out / "pretrain.jsonl.xz").stat().st_size / 2**20, 2),
                  "sft_and_tool_xz_mib": round(len(sft_bytes) / 2**20, 2), "heldout_texts_in_pretrain": overlap}))
EOF
    exit 0
fi

: "${OUT:?set OUT to the folder for results}"
mkdir -p "$OUT"
SAVE_DIR=${SAVE_DIR:-out}
CKPT_DIR=${CKPT_DIR:-checkpoints}
HIDDEN=${HIDDEN:-512}; LAYERS=${LAYERS:-8}
SIZE=(--hidden_size "$HIDDEN" --num_hidden_layers "$LAYERS")
DEV=(); [ -z "${DEVICE:-}" ] || DEV=(--device "$DEVICE")
COMMON=("${SIZE[@]}" "${DEV[@]}" --save_dir "$SAVE_DIR" --checkpoint_dir "$CKPT_DIR" --use_compile "${USE_COMPILE:-0}"
        --num_workers "${NUM_WORKERS:-4}" --accumulation_steps 1 --epochs 100 --save_interval 100000)
t0=$(date +%s)
note() { echo "{\"phase\": \"$1\", \"seconds\": $(( $(date +%s) - t0 ))${2:+, $2}}" | tee -a "$OUT/run.jsonl"; }
: > "$OUT/run.jsonl"

# the corpus: the packed build if it came along, else the bundled demo files
if [ -f "$GPU_DATA/pretrain.jsonl.xz" ]; then
    "$PY" -c "import lzma, shutil, sys
for name in sys.argv[1:]:
    src = '$GPU_DATA/' + name + '.jsonl.xz'
    try:
        with lzma.open(src) as s, open('$GPU_DATA/' + name + '.jsonl', 'wb') as d:
            shutil.copyfileobj(s, d)
    except FileNotFoundError:
        pass" pretrain sft
    PRETRAIN_DATA=$GPU_DATA/pretrain.jsonl
else
    echo "note: $GPU_DATA/pretrain.jsonl.xz not here (run 'bash scripts/gpu_reference_run.sh pack' and carry $GPU_DATA); using the bundled demo text" >&2
    PRETRAIN_DATA=dataset/demo/pretrain_demo.jsonl
fi
SFT_DATA=$GPU_DATA/sft.jsonl; [ -f "$SFT_DATA" ] || SFT_DATA=dataset/demo/sft_demo.jsonl
note data "\"pretrain\": \"$PRETRAIN_DATA\", \"pretrain_rows\": $(wc -l < "$PRETRAIN_DATA"), \"pretrain_bytes\": $(wc -c < "$PRETRAIN_DATA"), \"sft\": \"$SFT_DATA\", \"sft_rows\": $(wc -l < "$SFT_DATA")"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
HAVE_JINJA=1; "$PY" -c "import jinja2" 2>/dev/null || { HAVE_JINJA=0; echo "note: no jinja2 here: chat-template generation checks skipped" >&2; }

PRE=(--data_path "$PRETRAIN_DATA" --max_seq_len "${SEQ:-512}" --batch_size "${BATCH:-64}" --packing 1
     --learning_rate "${PRETRAIN_LR:-1.5e-3}" --warmup_steps 100)
steps_for() {  # steps_for SECONDS TOKENS_PER_STEP METRICS_LOG: steps that fill SECONDS at the logged median speed
    "$PY" - "$@" <<'EOF'
import json, sys
seconds, per_step, log = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(log) if l.strip()]
speeds = sorted(r["tokens_per_s"] for r in rows[1:] if r["tokens_per_s"]) or [rows[-1]["tokens_per_s"] or 1.0]
print(max(10, int(0.92 * seconds * speeds[len(speeds) // 2] / per_step)))
EOF
}

# 1. timing run (its weights are overwritten by the real run)
CAL=$(mktemp -d)  # its weights and resume state (300+ MB at 512/8) stay out of $OUT
"$PY" trainer/train_pretrain.py "${COMMON[@]}" "${PRE[@]}" --max_steps "${CAL_STEPS:-30}" --log_interval 1 \
    --save_dir "$CAL" --checkpoint_dir "$CAL" > "$OUT/calibration.log" 2>&1
cp "$CAL/pretrain_${HIDDEN}.metrics.jsonl" "$OUT/calibration.metrics.jsonl"
rm -rf "$CAL"
PRE_STEPS=$(steps_for "${PRETRAIN_S:-330}" $(( ${BATCH:-64} * ${SEQ:-512} )) "$OUT/calibration.metrics.jsonl")
note calibrated "\"pretrain_steps\": $PRE_STEPS"

# 2. pretrain, 3. full SFT from it
"$PY" trainer/train_pretrain.py "${COMMON[@]}" "${PRE[@]}" --max_steps "$PRE_STEPS" --log_interval 50 \
    > "$OUT/pretrain.log" 2>&1 || { tail -n 30 "$OUT/pretrain.log"; exit 1; }
grep -E "step [0-9]+/[0-9]+ |saved" "$OUT/pretrain.log" | tail -n 3 || true
note pretrain "\"steps\": $PRE_STEPS"
SFT_STEPS=$(steps_for "${SFT_S:-75}" $(( ${SFT_BATCH:-64} * ${SFT_SEQ:-512} )) "$SAVE_DIR/pretrain_${HIDDEN}.metrics.jsonl")
"$PY" trainer/train_full_sft.py "${COMMON[@]}" --data_path "$SFT_DATA" --max_seq_len "${SFT_SEQ:-512}" \
    --batch_size "${SFT_BATCH:-64}" --learning_rate "${SFT_LR:-3e-4}" --warmup_steps 20 --max_steps "$SFT_STEPS" \
    --log_interval 20 > "$OUT/full_sft.log" 2>&1 || { tail -n 30 "$OUT/full_sft.log"; exit 1; }
grep -E "step [0-9]+/[0-9]+ |saved" "$OUT/full_sft.log" | tail -n 3 || true
note full_sft "\"steps\": $SFT_STEPS"

# 4. the harness on untrained / pretrain / full_sft, 5. the report (SKIP_EVAL=1: stop after training, e.g. before
# scripts/gpu_tool_sft.sh when only the weights are needed)
if [ "${SKIP_EVAL:-0}" = 1 ]; then note finished "\"eval\": \"skipped\""; exit 0; fi
TASKS=(heldout mc); [ "$HAVE_JINJA" -eq 0 ] || TASKS+=(gen)
"$PY" scripts/eval_bench.py --save_dir "$SAVE_DIR" "${DEV[@]}" --hidden_size "$HIDDEN" --compare untrained pretrain full_sft \
    --tasks "${TASKS[@]}" --gen_limit "${GEN_LIMIT:-200}" --limit "${EVAL_LIMIT:-0}" --batch_size 64 \
    --max_new_tokens 64 --output "$OUT/eval_bench.jsonl" | tee "$OUT/eval_table.md"
note eval
"$PY" scripts/report.py --save_dir "$SAVE_DIR" --eval "$OUT/eval_bench.jsonl" || echo "note: report.py failed" >&2
mkdir -p "$OUT/copy"
for stem in "pretrain_$HIDDEN" "full_sft_$HIDDEN"; do
    cp "$SAVE_DIR/$stem.metrics.jsonl" "$SAVE_DIR/$stem.json" "$OUT/copy/"
done
cp "$OUT/eval_bench.jsonl" "$OUT/copy/"
cp "$SAVE_DIR/report.md" "$OUT/" 2>/dev/null || true
[ ! -d "$SAVE_DIR/report" ] || cp -r "$SAVE_DIR/report" "$OUT/"
"$PY" - "$OUT/eval_bench.jsonl" > "$OUT/samples.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
auto = [r for r in rows if r["task"] == "auto_prompts" and r["model"] == "full_sft"]
for s in (auto[0]["samples"][:3] if auto else []):
    print(f"- 💬 {s['prompt']}\n  🤖 {s['answer'].strip()}\n")
EOF
note finished
cat "$OUT/samples.md"
