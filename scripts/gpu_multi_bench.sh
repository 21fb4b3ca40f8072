#!/usr/bin/env bash
# Several-GPU training on one host (issue 31): JSON lines into $OUT/multi_gpu.jsonl, each step's log in
# $OUT/<step>.log. A failing step writes an {"error": ...} line and the rest still runs.
#   scaling : 26M (small), 104M (base), MoE 145M (moe) x torchrun --nproc_per_node 1, 2, 4 (8 if present) x DDP
#             and FSDP2 at pretraining's default flags on synthetic full rows: tokens/s, collective-kernel share of
#             step time (torch.profiler), peak memory, losses; then efficiency vs 1 GPU and the DDP-vs-FSDP2 loss
#             difference (scripts/bench/multi_gpu.py scaling)
#   twonode : the 104M run as 2 nodes x N/2 GPUs: two `torchrun --nnodes 2` groups over 127.0.0.1 (what
#             run_train_npu.sh does with NNODES), each with its own half of the GPUs
#   resume  : train_pretrain.py on the demo data, DDP and FSDP2, on N GPUs: uninterrupted reference; a run with one
#             rank killed (SIGKILL) after its first save, resumed on N GPUs (weights identical to the reference
#             expected) and on N/2 GPUs (same rows per step; equal within float tolerance expected)
#   big     : a 4096-wide model with enough layers that DDP's 16 bytes per parameter exceed one card by 10% (>1B
#             parameters): DDP on 1 GPU (expected {"oom": true}) and FSDP2 on all GPUs, batch 4
#
#   OUT=/tmp/o bash scripts/gpu_multi_bench.sh                          # everything (longer than one 10-min call)
#   PARTS=scaling PRESETS=base OUT=/tmp/o bash scripts/gpu_multi_bench.sh   # one part / preset per call
#   PARTS="twonode resume big" OUT=/tmp/o bash scripts/gpu_multi_bench.sh
#   COUNTS="1 2" ...                                                    # other process counts
#   OUT=/tmp/o bash scripts/gpu_multi_bench.sh --cpu_smoke              # the same steps with gloo, tiny sizes
# Split over several calls, the efficiency lines need the 1-GPU line of the same preset: concatenate the calls'
# multi_gpu.jsonl files and run `python3 scripts/bench/multi_gpu.py scaling all.jsonl` (any machine, JSON only).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PY=${PY:-python3}
J="$OUT/multi_gpu.jsonl"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1

if [ "${1:-}" = "--cpu_smoke" ]; then  # every step with gloo on the CPU, tiny model, seconds each
    SMOKE=1; NGPU=2; DEV=(--device cpu); export OMP_NUM_THREADS=1
    PRESETS=${PRESETS:-tiny tiny_moe}; COUNTS=${COUNTS:-1 2}
    BENCH=(--steps 3 --profile_steps 2 --loss_every 1 --batch_size 4 --accumulation_steps 2 --max_seq_len 64)
    TWONODE_PRESET=tiny; SIZE=(--hidden_size 64 --num_hidden_layers 2 --max_seq_len 64)
    RESUME=(--batch_size 4 --max_steps 6 --save_interval 2); ACC=2
    BIG=(--hidden_size 64 --num_hidden_layers 4 --max_seq_len 64)
else
    SMOKE=""; DEV=()
    NGPU=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true)
    [ "$NGPU" -ge 1 ] || { echo "gpu_multi_bench.sh: no GPU found (nvidia-smi -L); use --cpu_smoke on a CPU" >&2; exit 2; }
    PRESETS=${PRESETS:-small base moe}
    if [ -z "${COUNTS:-}" ]; then
        COUNTS=""; for n in 1 2 4 8; do [ "$n" -le "$NGPU" ] && COUNTS="$COUNTS $n"; done
    fi
    BENCH=(--steps "${BENCH_STEPS:-30}" --profile_steps 3); TWONODE_PRESET=base; SIZE=()
    # per-GPU batch and rows per step stay fixed across world sizes in the resume test (8 x 2 x N rows per step)
    RESUME=(--batch_size 8 --max_steps 40 --save_interval 10 --log_interval 5); ACC=2  # inside epoch 1 at 4 and 2 GPUs
    BIG=(--hidden_size 4096)
fi
PARTS=" ${PARTS:-scaling twonode resume big} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
TORCHRUN=("$PY" -m torch.distributed.run)

step() {  # step NAME TIMEOUT_S CMD...: JSON lines of CMD to $J, its log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$WORK/$name.jsonl" 2> "$OUT/$name.log"
    local rc=$?
    grep '^{' "$WORK/$name.jsonl" >> "$J"
    if [ $rc -ne 0 ]; then error_line "$name" "$rc"; fi
    echo "$name: rc $rc, $((SECONDS - t0)) s" >&2
}
error_line() {
    "$PY" -c 'import json,sys; print(json.dumps({"bench": sys.argv[1], "error": int(sys.argv[2]),
        "log_tail": open(sys.argv[3], errors="replace").read()[-1500:]}))' "$1" "$2" "$OUT/$1.log" >> "$J"
}
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
visible() { seq -s, "$1" "$2"; }  # visible FIRST LAST -> "FIRST,...,LAST"

step env 60 "$PY" -c 'import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({"bench": "env", "torch": torch.__version__, "cuda": torch.version.cuda,
                  "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
                  "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}))'

# ------------------------------------------------------------------------------------------------------ scaling
if part scaling; then
    for preset in $PRESETS; do
        for n in $COUNTS; do
            for fsdp in 0 1; do
                step "scaling_${preset}_${n}gpu_fsdp${fsdp}" "${SCALING_LIMIT:-400}" "${TORCHRUN[@]}" --standalone \
                    --nproc_per_node "$n" scripts/bench/multi_gpu.py worker --preset "$preset" --fsdp "$fsdp" \
                    "${BENCH[@]}" "${DEV[@]}"
            done
        done
    done
    "$PY" scripts/bench/multi_gpu.py scaling "$J" > "$WORK/scaling.jsonl" && cat "$WORK/scaling.jsonl" >> "$J"
fi

# ----------------------------------------------------------------------------------- two nodes emulated on one host
node_cmd() {  # node_cmd RANK: NODE_CMD = one `torchrun --nnodes 2` group of $per_node processes on its own GPUs
    local first=$(( $1 * per_node ))
    NODE_CMD=()
    [ -z "$SMOKE" ] && NODE_CMD=(env CUDA_VISIBLE_DEVICES="$(visible "$first" $(( first + per_node - 1 )))")
    NODE_CMD+=("${TORCHRUN[@]}" --nnodes 2 --node_rank "$1" --nproc_per_node "$per_node" --master_addr 127.0.0.1
               --master_port "$port" scripts/bench/multi_gpu.py worker --preset "$TWONODE_PRESET" --fsdp "$fsdp"
               --tag 2node "${BENCH[@]}" "${DEV[@]}")
}
if part twonode; then
    per_node=$(( NGPU >= 4 ? 2 : 1 ))
    [ -n "$SMOKE" ] && per_node=1
    if [ "$NGPU" -ge 2 ]; then
        for fsdp in 0 1; do
            name="twonode_fsdp${fsdp}" port=$(free_port) t0=$SECONDS
            node_cmd 1
            timeout "${TWONODE_LIMIT:-400}" "${NODE_CMD[@]}" > "$WORK/$name.node1" 2> "$OUT/$name.node1.log" &
            node1=$!
            node_cmd 0
            timeout "${TWONODE_LIMIT:-400}" "${NODE_CMD[@]}" > "$WORK/$name.jsonl" 2> "$OUT/$name.log"
            rc=$?
            wait "$node1" || rc=$(( rc ? rc : 1 ))
            grep '^{' "$WORK/$name.jsonl" >> "$J"
            [ $rc -ne 0 ] && error_line "$name" "$rc"
            echo "$name: rc $rc, $((SECONDS - t0)) s" >&2
        done
    else
        echo '{"bench": "twonode", "skipped": "needs 2 GPUs"}' >> "$J"
    fi
fi

# ---------------------------------------------------------------------------------- kill one rank, then resume
# run_killed NAME NPROC FLAGS...: start a torchrun group, SIGKILL one worker after the first resume save is logged
run_killed() {
    local name=$1 n=$2; shift 2
    "${TORCHRUN[@]}" --standalone --nproc_per_node "$n" trainer/train_pretrain.py "$@" \
        > "$OUT/$name.log" 2>&1 &
    local launcher=$! deadline=$(( SECONDS + ${KILL_WAIT:-300} ))
    until grep -q "_resume.* (step" "$OUT/$name.log" || [ $SECONDS -gt $deadline ]; do sleep 0.2; done
    local victim
    victim=$(pgrep -P "$launcher" | tail -n 1)  # the last-started rank, one process
    if [ -n "$victim" ]; then
        kill -9 "$victim"
    fi
    wait "$launcher"
    local rc=$?
    echo "{\"bench\": \"resume_kill\", \"run\": \"$name\", \"killed_pid\": \"${victim:-none}\", \"torchrun_rc\": $rc}" >> "$J"
}

if part resume; then
    n=$(( NGPU >= 4 ? 4 : NGPU )); m=$(( n / 2 ))
    [ -n "$SMOKE" ] && { n=2; m=1; }
    if [ "$m" -ge 1 ]; then
        for fsdp in 0 1; do
            r="$WORK/resume$fsdp"
            common=("${SIZE[@]}" "${DEV[@]}" "${RESUME[@]}" --fsdp "$fsdp" --data_path dataset/demo/pretrain_demo.jsonl)
            if [ "$fsdp" = 1 ]; then state=pretrain_${SIZE[1]:-512}_resume.dcp; else state=pretrain_${SIZE[1]:-512}_resume.pth; fi
            step "resume_reference_fsdp$fsdp" 500 "${TORCHRUN[@]}" --standalone --nproc_per_node "$n" \
                trainer/train_pretrain.py "${common[@]}" --accumulation_steps "$ACC" \
                --save_dir "$r/ref" --checkpoint_dir "$r/cref"
            run_killed "resume_killed_fsdp$fsdp" "$n" "${common[@]}" --accumulation_steps "$ACC" \
                --save_dir "$r/o" --checkpoint_dir "$r/c"
            cp -r "$r/o" "$r/o_m"; cp -r "$r/c" "$r/c_m"
            step "resume_same_${n}gpu_fsdp$fsdp" 500 "${TORCHRUN[@]}" --standalone --nproc_per_node "$n" \
                trainer/train_pretrain.py "${common[@]}" --accumulation_steps "$ACC" --from_resume 1 \
                --save_dir "$r/o" --checkpoint_dir "$r/c"
            step "resume_compare_same_fsdp$fsdp" 120 "$PY" scripts/bench/multi_gpu.py compare_weights \
                "$r/cref/$state" "$r/c/$state" "fsdp$fsdp ${n}gpu killed -> ${n}gpu"
            # DDP's .pth resume converts the data position by per-process batches: same per-GPU batch, twice the
            # accumulation, so the rows per optimizer step stay the same
            if [ "$m" -eq 1 ] && [ "$fsdp" = 0 ]; then
                launch=("$PY" trainer/train_pretrain.py)  # one process: plain python, as run_train_npu.sh does
            else
                launch=("${TORCHRUN[@]}" --standalone --nproc_per_node "$m" trainer/train_pretrain.py)
            fi
            step "resume_${n}to${m}gpu_fsdp$fsdp" 500 "${launch[@]}" "${common[@]}" \
                --accumulation_steps $(( ACC * n / m )) --from_resume 1 --save_dir "$r/o_m" --checkpoint_dir "$r/c_m"
            step "resume_compare_${n}to${m}_fsdp$fsdp" 120 "$PY" scripts/bench/multi_gpu.py compare_weights \
                "$r/cref/$state" "$r/c_m/$state" "fsdp$fsdp ${n}gpu killed -> ${m}gpu"
        done
    else
        echo '{"bench": "resume", "skipped": "needs 2 GPUs"}' >> "$J"
    fi
fi

# ------------------------------------------------------------------------------ FSDP2 past one card's memory
if part big; then
    if [ -n "$SMOKE" ]; then
        big=("${BIG[@]}")
    else
        layers=$("$PY" scripts/bench/multi_gpu.py big_layers "${BIG[@]}")
        big=("${BIG[@]}" --num_hidden_layers "$layers")
    fi
    flags=(--batch_size 4 --accumulation_steps 1 --steps 6 --profile_steps 0 --loss_every 1 --tag big)
    step big_ddp_1gpu "${BIG_LIMIT:-600}" "${TORCHRUN[@]}" --standalone --nproc_per_node 1 \
        scripts/bench/multi_gpu.py worker "${big[@]}" "${flags[@]}" "${DEV[@]}"
    step "big_fsdp_${NGPU}gpu" "${BIG_LIMIT:-600}" "${TORCHRUN[@]}" --standalone --nproc_per_node "$NGPU" \
        scripts/bench/multi_gpu.py worker "${big[@]}" "${flags[@]}" --fsdp 1 "${DEV[@]}"
fi
echo "results: $J" >&2
