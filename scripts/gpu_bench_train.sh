#!/usr/bin/env bash
# Training speed on one GPU in one go (issue 17, training half): JSON lines into $OUT/train_bench.jsonl, each
# step's full log in $OUT/<step>.log. A failing step writes an {"error": ...} line and the rest still runs.
#   1. env: torch / CUDA / transformers / numpy versions, GPU name
#   2. python trainer/train_pretrain.py with its defaults (demo data), 8 epochs so epoch boundaries are crossed:
#      steady tokens/s from its own log, wall-clock average, recompiles after warm-up
#   3. python trainer/train_full_sft.py with its defaults, from step 2's weights (2 epochs); part sft_minimind: at
#      MiniMind's flags (eager, batch 16, 8 workers)
#   4. scripts/bench_train.py --compare-defaults --measure_peak: MiniMind's flags / our defaults / best settings,
#      tokens/s, MFU (datasheet and measured peak), peak memory, recompiles; 512/8 all three, 768/16 and MoE 640/8
#      MiniMind's flags and best
#   (3b. only with CUDAGRAPHS=1: full_sft again with MINIMIND_COMPILE_MODE=reduce-overhead)
#
#   OUT=/tmp/o bash scripts/gpu_bench_train.sh                               # on the GPU box (~6 min on an H200)
#   PARTS="e2e small" OUT=/tmp/o bash scripts/gpu_bench_train.sh             # some of it: e2e (2, 3), sft (3), small (4:
#                                                                            # 512/8), base_moe (4: 768/16, MoE)
#   OUT=/tmp/o BENCH_DEVICE=cpu BENCH_TINY=1 bash scripts/gpu_bench_train.sh # CPU check of the driver itself
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PY=${PY:-python}
J="$OUT/train_bench.jsonl"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DEV=(); [ -n "${BENCH_DEVICE:-}" ] && DEV=(--device "$BENCH_DEVICE")
if [ -n "${BENCH_TINY:-}" ]; then   # tiny knobs: the same steps in seconds on a CPU
    SIZE=(--hidden_size 64 --num_hidden_layers 2 --max_seq_len 64); RUN=(--max_steps 3 --log_interval 1)
    SFT=(--max_steps 3 --log_interval 1); PRESETS_ALL=(tiny); PRESETS_TWO=(); STEPS=1
else
    SIZE=(); RUN=(--epochs "${E2E_EPOCHS:-8}" --log_interval 10); SFT=(--log_interval 20)
    PRESETS_ALL=(small); PRESETS_TWO=(base moe); STEPS=${BENCH_STEPS:-20}
fi
COMMON=(--save_interval 1000000 --save_dir "$WORK/out" --checkpoint_dir "$WORK/ckpt")

step() {  # step NAME TIMEOUT_S CMD...: JSON lines of CMD to $J, its log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$WORK/$name.jsonl" 2> "$OUT/$name.log"
    local rc=$?
    grep '^{' "$WORK/$name.jsonl" >> "$J"
    if [ $rc -ne 0 ]; then
        $PY -c 'import json,sys; print(json.dumps({"bench": sys.argv[1], "error": int(sys.argv[2]),
            "log_tail": open(sys.argv[3], errors="replace").read()[-1500:]}))' "$name" "$rc" "$OUT/$name.log" >> "$J"
    fi
    echo "$name: rc $rc, $((SECONDS - t0)) s" >&2
}

PARTS=" ${PARTS:-e2e sft_minimind small base_moe} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
step env 60 $PY -c 'import json, torch, transformers, numpy
cuda = torch.cuda.is_available()
print(json.dumps({"bench": "env", "torch": torch.__version__, "cuda": torch.version.cuda,
                  "transformers": transformers.__version__, "numpy": numpy.__version__,
                  "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "capability": torch.cuda.get_device_capability(0) if cuda else None}))'
part e2e && step pretrain_defaults 200 $PY scripts/bench_train.py --e2e pretrain -- "${SIZE[@]}" "${DEV[@]}" "${RUN[@]}" "${COMMON[@]}"
# full_sft from step 2's weights when it ran, else from random weights (the speed is the same)
sft_from() { [ -f "$WORK/out/pretrain_${SIZE[1]:-512}.pth" ] && echo pretrain || echo none; }
{ part e2e || part sft; } && step full_sft_defaults 150 $PY scripts/bench_train.py --e2e full_sft -- "${SIZE[@]}" "${DEV[@]}" "${SFT[@]}" \
    "${COMMON[@]}" --from_weight "$(sft_from)"
# MiniMind's SFT at its own flags: eager (no torch.compile), batch 16, its 8 loader workers; our loop otherwise
part sft_minimind && step full_sft_minimind_flags 150 $PY scripts/bench_train.py --e2e full_sft -- "${SIZE[@]}" \
    "${DEV[@]}" "${SFT[@]}" "${COMMON[@]}" --from_weight "$(sft_from)" --use_compile 0 --batch_size 16 --num_workers 8
if [ -n "${CUDAGRAPHS:-}" ]; then
    MINIMIND_COMPILE_MODE=reduce-overhead step full_sft_cudagraphs 150 $PY scripts/bench_train.py --e2e full_sft -- \
        "${SIZE[@]}" "${DEV[@]}" "${SFT[@]}" "${COMMON[@]}" --from_weight "$(sft_from)"
fi
part small && step compare_small 200 $PY scripts/bench_train.py --compare-defaults --measure_peak --preset "${PRESETS_ALL[@]}" \
    --steps "$STEPS" "${DEV[@]}"
if [ ${#PRESETS_TWO[@]} -gt 0 ] && part base_moe; then
    step compare_base_moe ${BASE_MOE_LIMIT:-300} $PY scripts/bench_train.py --compare-defaults --measure_peak \
        --configs minimind best --preset "${PRESETS_TWO[@]}" --steps "$STEPS" "${DEV[@]}"
fi
echo "results: $J" >&2
