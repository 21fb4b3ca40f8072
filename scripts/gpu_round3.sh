#!/usr/bin/env bash
# GPU speed, round 3 (issue 30): sections chosen by argument, JSON lines into $OUT/round3.jsonl, each step's log in
# $OUT/<step>.log. Every step runs under `timeout`; a failing or cut step writes an {"error": ...} line and the
# next one runs. Each section has a time budget (seconds; env A_S B_S C_S C2_S D_S E_S), so that
#   call 1:  OUT=$OUT bash scripts/gpu_round3.sh a c d      # 275 + 130 + 110 s: decode, model step, API server
#   call 2:  OUT=$OUT bash scripts/gpu_round3.sh b e c2     # 240 + 180 + 100 s: MiniMind's scripts, PPO + SPO, MFU
#   check:   OUT=/tmp/r3 bash scripts/gpu_round3.sh --cpu_smoke a b c c2 d e   # every section on a CPU, tiny sizes
# a  decode: 26M and 104M, batch 1 and 16, the default path (no MINIMIND_DECODE): a cold-cache process (first
#    request latency, when the background compile switched in, tokens/s), then a second process on the warm cache;
#    greedy tokens against the eager engine (rows equal of rows). Cache: .cache/compile-round3 (git-ignored, emptied
#    at the start of section a; sections c, d and later calls on a still-warm machine reuse it). `a_warm` runs only
#    the warm processes (no emptying), e.g. in call 2 when call 1 ran out of time for 104M.
# b  side by side: MiniMind's own train_pretrain.py and train_full_sft.py (the carried copy, default
#    bench_baseline/minimind-349e74e; its `datasets` stand-in on PYTHONPATH) with no flags vs ours with no flags
#    (only --save_dir/--checkpoint_dir, into a temp folder) on the same rows: the demo files repeated into
#    dataset/pretrain_hq.jsonl and dataset/sft_mini_512.jsonl of both trees (removed afterwards).
# c  model step at equal shapes, ours vs MiniMind's model in one compiled harness (512/8 at 128x512, 768/16 at
#    32x340), MFU against the measured bf16 peak.
# c2 the 512/8 MFU attempts, one line each: F.cross_entropy loss, chunked lm_head log-probs (model/fused_loss.py),
#    2x tokens per step (with and without chunking), expanded KV heads (MiniMind's attention), max-autotune.
# d  API server at 26M and 104M: scripts/bench_serve.py at 1, 16, 64 streams, 256-token prompts, output tok/s, TTFT
#    and ITL p50/p99; then the engine's raw tokens/s at the same batch sizes. Needs fastapi, uvicorn, openai, httpx:
#    when missing they are installed from $WHEELS (default bench_wheels/, carried) with pip --no-index into a
#    temp folder on PYTHONPATH.
# e  PPO and SPO, 26M from random weights, small settings: rollout tokens/s and training tokens/s.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PY=${PY:-python3}
SMOKE=0
SECTIONS=()
for arg in "$@"; do
    case $arg in
        --cpu_smoke) SMOKE=1 ;;
        a|a_warm|b|c|c2|d|e) SECTIONS+=("$arg") ;;
        *) echo "gpu_round3.sh: unknown argument '$arg' (sections: a a_warm b c c2 d e; --cpu_smoke)" >&2; exit 2 ;;
    esac
done
[ ${#SECTIONS[@]} -eq 0 ] && SECTIONS=(a c d)
J="$OUT/round3.jsonl"
WORK=$(mktemp -d)
ROOT=$(pwd)
BASELINE=${BASELINE:-bench_baseline/minimind-349e74e}
WHEELS=${WHEELS:-bench_wheels}
CACHE="$ROOT/.cache/compile-round3"
unset MINIMIND_DECODE TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR
export PYTHONUNBUFFERED=1
RESTORE=()  # dataset files section b replaced: restored (or removed) on exit
cleanup() {
    for f in "${RESTORE[@]}"; do
        if [ -f "$WORK/saved/$(basename "$f")" ]; then mv -f "$WORK/saved/$(basename "$f")" "$f"; else rm -f "$f"; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ $SMOKE = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""
    GLOBAL=(--device cpu --cpu_smoke)
    PRESETS=(small); BATCHES=(1 4); NEW=16; SWITCH_COLD=60; SWITCH_WARM=30
    STEP=(--steps 2); C_SMOKE=(--backend aot_eager); STREAMS=(1 4); SERVE=(--presets small --max_tokens 8 --prompt_tokens 64 --compile_wait 120)
    UP_PRE=(--hidden_size 64 --num_hidden_layers 2 --batch_size 4 --max_seq_len 64 --num_workers 0 --log_interval 2
            --accumulation_steps 1 --device cpu)
    UP_SFT=(--hidden_size 64 --num_hidden_layers 2 --batch_size 4 --max_seq_len 64 --num_workers 0 --log_interval 2
            --epochs 1 --device cpu)
    OURS=(--hidden_size 64 --num_hidden_layers 2 --max_seq_len 64 --device cpu --log_interval 2 --num_workers 0)
    OURS_PRE=("${OURS[@]}" --max_steps 4); OURS_SFT=("${OURS[@]}" --max_steps 4)
    REPEAT_PRE=1; REPEAT_SFT=1; ROWS_PRE=48; ROWS_SFT=24
    RL=(--hidden_size 64 --num_hidden_layers 2 --device cpu --max_steps 2 --batch_size 2 --max_gen_len 16)
    UP_HIDDEN=64
else
    GLOBAL=()
    PRESETS=(small base); BATCHES=(1 16); NEW=256; SWITCH_COLD=${SWITCH_COLD:-100}; SWITCH_WARM=${SWITCH_WARM:-40}
    STEP=(--steps 10); C_SMOKE=(); STREAMS=(1 16 64); SERVE=(--presets small base --compile_wait 40)
    UP_PRE=(); UP_SFT=(); OURS_PRE=(); OURS_SFT=()
    # 8 x the 3,451 demo rows = 27,608 pretrain rows (MiniMind's script: ~30 s at the 333k tokens/s measured
    # before, 8 log lines; ours logs every 100 steps of 256 rows: one line after its compile step, plus the wall
    # average); 3 x 2,888 = 8,664 SFT rows (2 epochs at batch 16: ~35 s at 172k). Four runs + start-ups ~200 s.
    REPEAT_PRE=8; REPEAT_SFT=3; ROWS_PRE=0; ROWS_SFT=0
    RL=(--hidden_size 512 --max_steps 4 --batch_size 8 --max_gen_len 256)
    UP_HIDDEN=512
fi
SWITCH_COLD_BASE=${SWITCH_COLD_BASE:-120}
[ $SMOKE = 1 ] && SWITCH_COLD_BASE=$SWITCH_COLD

step() {  # step NAME LIMIT_S CMD...: JSON lines of CMD to $J, its stderr to $OUT/NAME.log; bounded by the section
    local name=$1 limit=$2; shift 2
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "{\"step\": \"$name\", \"error\": \"skipped: section budget spent\"}" >> "$J"; return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    timeout -k 15 "$limit" "$@" > "$WORK/$name.out" 2> "$OUT/$name.log"
    local rc=$?
    grep '^{' "$WORK/$name.out" >> "$J"
    if [ $rc -ne 0 ]; then
        $PY -c 'import json, sys; print(json.dumps({"step": sys.argv[1], "error": int(sys.argv[2]),
            "timed_out": sys.argv[2] in ("124", "137"), "limit_s": int(sys.argv[4]),
            "log_tail": open(sys.argv[3], errors="replace").read()[-1500:]}))' "$name" "$rc" "$OUT/$name.log" \
            "$limit" >> "$J"
    fi
    echo "$name: rc $rc, $((SECONDS - t0)) s" >&2
    return $rc
}
budget() {  # the CPU smoke checks plumbing, not budgets: its tiny steps get 300 s a section on a loaded machine
    local s=$1; [ $SMOKE = 1 ] && [ "$s" -lt 300 ] && s=300
    DEADLINE=$((SECONDS + s)); echo "section $2: budget $s s" >&2
}
R3=("$PY" scripts/bench_round3.py "${GLOBAL[@]}")

DEADLINE=$((SECONDS + 60))
step env 60 $PY -c 'import importlib.util, json, sys, torch, transformers
cuda = torch.cuda.is_available()
print(json.dumps({"bench": "env", "python": sys.version.split()[0], "torch": torch.__version__,
                  "cuda": torch.version.cuda, "transformers": transformers.__version__,
                  "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "packages": {m: importlib.util.find_spec(m) is not None
                               for m in ("fastapi", "uvicorn", "openai", "httpx", "datasets", "triton")}}))'

section_a() {  # $1 = 1: cold then warm, 0: warm only
    budget "${A_S:-275}" a
    [ "$1" = 1 ] && rm -rf "$CACHE"
    mkdir -p "$CACHE"
    for preset in "${PRESETS[@]}"; do
        local cold=$SWITCH_COLD; [ "$preset" = base ] && cold=$SWITCH_COLD_BASE
        local extra=(); [ $SMOKE = 1 ] && extra=(--background_on_cpu --backend aot_eager --check_rows 4 --repeats 1)
        if [ "$1" = 1 ]; then
            MINIMIND_COMPILE_CACHE=$CACHE step "a_${preset}_cold" $((cold + 90)) "${R3[@]}" decode --preset "$preset" \
                --label cold --batches "${BATCHES[@]}" --new_tokens $NEW --switch_wait "$cold" "${extra[@]}"
        fi
        MINIMIND_COMPILE_CACHE=$CACHE step "a_${preset}_warm" $((SWITCH_WARM + 90)) "${R3[@]}" decode \
            --preset "$preset" --label warm --batches "${BATCHES[@]}" --new_tokens $NEW --switch_wait $SWITCH_WARM \
            "${extra[@]}"
    done
}

section_b() {
    budget "${B_S:-240}" b
    if [ ! -f "$BASELINE/trainer/train_pretrain.py" ]; then
        echo "{\"step\": \"b\", \"error\": \"no MiniMind copy at $BASELINE: carry it (see the header)\"}" >> "$J"
        return
    fi
    local up="$WORK/upstream"
    cp -r "$BASELINE" "$up" && mkdir -p "$up/out" "$up/checkpoints" "$WORK/saved"
    # the same rows for both: demo files repeated; ours reads dataset/<MiniMind name> when it is there
    for f in dataset/pretrain_hq.jsonl dataset/sft_mini_512.jsonl; do
        [ -f "$f" ] && cp "$f" "$WORK/saved/"
        RESTORE+=("$ROOT/$f")
    done
    $PY - "$REPEAT_PRE" "$REPEAT_SFT" "$ROWS_PRE" "$ROWS_SFT" "$up/dataset" dataset <<'EOF'
import sys
rep_pre, rep_sft, rows_pre, rows_sft, *folders = sys.argv[1:]
for name, src, rep, rows in (("pretrain_hq.jsonl", "dataset/demo/pretrain_demo.jsonl", int(rep_pre), int(rows_pre)),
                             ("sft_mini_512.jsonl", "dataset/demo/sft_demo.jsonl", int(rep_sft), int(rows_sft))):
    lines = [l for l in open(src, encoding="utf-8") if l.strip()] * rep
    lines = lines[:rows] if rows else lines
    for folder in folders:
        with open(f"{folder}/{name}", "w", encoding="utf-8") as f:
            f.writelines(lines)
    print(name, len(lines), file=sys.stderr)
EOF
    local n_pre n_sft
    n_pre=$(wc -l < dataset/pretrain_hq.jsonl); n_sft=$(wc -l < dataset/sft_mini_512.jsonl)
    # MiniMind's scripts: run from its trainer/ folder (its paths are ../dataset, ../out), lines timestamped
    local t0=$SECONDS
    (cd "$up/trainer" && PYTHONPATH="$up/_shim" timeout -k 10 "${UP_PRE_S:-90}" $PY -u train_pretrain.py "${UP_PRE[@]}" 2>&1 |
        $PY "$ROOT/scripts/bench_round3.py" stamp > "$OUT/b_minimind_pretrain.log"; exit "${PIPESTATUS[0]}")
    local rc=$?
    echo "b_minimind_pretrain: rc $rc, $((SECONDS - t0)) s" >&2
    "${R3[@]}" upstream --log "$OUT/b_minimind_pretrain.log" --stage pretrain --rc $rc --rows "$n_pre" \
        --batch_size "$([ $SMOKE = 1 ] && echo 4 || echo 32)" --accumulation_steps "$([ $SMOKE = 1 ] && echo 1 || echo 8)" \
        --max_seq_len "$([ $SMOKE = 1 ] && echo 64 || echo 340)" >> "$J"
    # its SFT starts from ../out/pretrain_512.pth: its own pretrain saves it at the end; random weights otherwise
    [ -f "$up/out/pretrain_$UP_HIDDEN.pth" ] || "${R3[@]}" weights --preset small --path "$up/out/pretrain_$UP_HIDDEN.pth"
    t0=$SECONDS
    (cd "$up/trainer" && PYTHONPATH="$up/_shim" timeout -k 10 "${UP_SFT_S:-80}" $PY -u train_full_sft.py "${UP_SFT[@]}" 2>&1 |
        $PY "$ROOT/scripts/bench_round3.py" stamp > "$OUT/b_minimind_full_sft.log"; exit "${PIPESTATUS[0]}")
    rc=$?
    echo "b_minimind_full_sft: rc $rc, $((SECONDS - t0)) s" >&2
    "${R3[@]}" upstream --log "$OUT/b_minimind_full_sft.log" --stage full_sft --rc $rc --rows "$n_sft" \
        --batch_size "$([ $SMOKE = 1 ] && echo 4 || echo 16)" --max_seq_len "$([ $SMOKE = 1 ] && echo 64 || echo 340)" >> "$J"
    local dirs=(--save_dir "$WORK/ours_out" --checkpoint_dir "$WORK/ours_ckpt")
    step b_ours_pretrain "${OURS_PRE_S:-90}" $PY scripts/bench_train.py --e2e pretrain -- "${OURS_PRE[@]}" "${dirs[@]}"
    step b_ours_full_sft "${OURS_SFT_S:-90}" $PY scripts/bench_train.py --e2e full_sft -- "${OURS_SFT[@]}" "${dirs[@]}"
    echo "{\"bench\": \"e2e_rows\", \"pretrain_rows_in_file\": $n_pre, \"sft_rows_in_file\": $n_sft}" >> "$J"
}

section_c() {
    budget "${C_S:-130}" c
    local up=(); [ -f "$BASELINE/model/model_minimind.py" ] && up=(--upstream "$BASELINE")
    [ ${#up[@]} -eq 0 ] && echo "{\"step\": \"c\", \"error\": \"no MiniMind copy at $BASELINE: ours only\"}" >> "$J"
    step c_equal_shapes 400 "${R3[@]}" step "${up[@]}" "${STEP[@]}" "${C_SMOKE[@]}" --only equal_shapes
}

section_c2() {
    budget "${C2_S:-100}" c2
    step c2_attempts 400 "${R3[@]}" step "${STEP[@]}" "${C_SMOKE[@]}" --only attempt_cross_entropy attempt_chunked_ce \
        attempt_2x_tokens attempt_expanded_kv attempt_2x_tokens_chunked_ce attempt_max_autotune
}

section_d() {
    budget "${D_S:-110}" d
    if ! $PY -c 'import fastapi, uvicorn, openai, httpx' 2>/dev/null; then
        if [ -d "$WHEELS" ]; then
            step d_install 60 $PY -m pip install -q --no-index --find-links "$WHEELS" --target "$WORK/site" \
                fastapi uvicorn openai httpx
            export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
        else
            echo "{\"step\": \"d\", \"error\": \"fastapi/uvicorn/openai/httpx missing and no wheels at $WHEELS\"}" >> "$J"
            return
        fi
    fi
    MINIMIND_COMPILE_CACHE=$CACHE step d_serve 400 "${R3[@]}" serve --work "$WORK/serve" --log_dir "$OUT" --streams "${STREAMS[@]}" \
        "${SERVE[@]}"
}

section_e() {
    budget "${E_S:-180}" e
    local stage
    for stage in ppo spo; do
        local name; name=$([ $stage = ppo ] && echo ppo_actor || echo spo)
        local hidden=${RL[1]}
        MINIMIND_COMPILE_CACHE=$CACHE step "e_$stage" 100 $PY trainer/train_$stage.py "${RL[@]}" --from_weight none --reward rule --seed 0 \
            --log_interval 1 --save_interval 100000 --save_dir "$WORK/rl" --checkpoint_dir "$WORK/rl/ckpt"
        local rc=$?
        "${R3[@]}" rl --metrics "$WORK/rl/${name}_${hidden}.metrics.jsonl" --stage $stage --rc $rc >> "$J"
    done
}

for s in "${SECTIONS[@]}"; do
    case $s in
        a) section_a 1 ;;
        a_warm) section_a 0 ;;
        b) section_b ;;
        c) section_c ;;
        c2) section_c2 ;;
        d) section_d ;;
        e) section_e ;;
    esac
done
echo "results: $J" >&2
