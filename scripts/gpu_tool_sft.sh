#!/usr/bin/env bash
# Tool calling on one GPU (issue 16's proof): local tool dialogues -> tool SFT from a real full_sft weight -> the
# eval_tool_call.py suite before and after -> the API server serving tool_sft, driven by the official `openai`
# client (one plain and one streaming request with `tools`), the replies saved as JSON.
#
#   OUT=/tmp/tool bash scripts/gpu_tool_sft.sh         # after scripts/gpu_reference_run.sh wrote out/full_sft_512.pth
#
# Results in $OUT: prepare.json (rows per kind, tools train/held-out, token lengths), heldout.jsonl and bfcl/ (the
# held-out tools' cases, our layout and BFCL v3's), tool_eval_before.jsonl / tool_eval_after.jsonl (per case +
# summary), tool_sft.log, openai_tool_calls.json, server.log, tool.jsonl (phase timings and both summaries).
# Needs torch, transformers, jinja2 and, for the server step, fastapi + uvicorn + openai (carry them as wheels
# where the GPU machine has no registry; without them the server step is reported as skipped, not passed).
#
# Knobs (env): SAVE_DIR=out HIDDEN=512 LAYERS=8 TOOL_EPOCHS=3 TOOL_BATCH=32 TOOL_LR=2e-4 MAX_SAMPLES=10000
#   SEED=42 MAX_CASES=200 DEVICE=(auto) PORT=8997 PYTHON=python3 TOOL_DATA=(build here) WHEELS=bench_wheels
#   REAL_BFCL=(a folder of BFCL's own files, scored too) MAX_BFCL=50
# CPU smoke test: SAVE_DIR=/tmp/ref/out HIDDEN=64 LAYERS=2 TOOL_EPOCHS=1 MAX_SAMPLES=200 MAX_CASES=10 DEVICE=cpu \
#   OUT=/tmp/tool bash scripts/gpu_tool_sft.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
: "${OUT:?set OUT to the folder for results}"
mkdir -p "$OUT"
SAVE_DIR=${SAVE_DIR:-out}; HIDDEN=${HIDDEN:-512}; LAYERS=${LAYERS:-8}
SIZE=(--hidden_size "$HIDDEN" --num_hidden_layers "$LAYERS")
DEV=(); [ -z "${DEVICE:-}" ] || DEV=(--device "$DEVICE")
[ -f "$SAVE_DIR/full_sft_$HIDDEN.pth" ] || { echo "no $SAVE_DIR/full_sft_$HIDDEN.pth: run scripts/gpu_reference_run.sh first" >&2; exit 2; }
WORK=$(mktemp -d)
SERVER_PID=
trap '[ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
t0=$(date +%s)
note() { echo "{\"phase\": \"$1\", \"seconds\": $(( $(date +%s) - t0 ))${2:+, $2}}" | tee -a "$OUT/tool.jsonl"; }
: > "$OUT/tool.jsonl"
summary() { grep '"summary"' "$1" | tail -n 1 || echo '{}'; }

# 1. data: dialogues generated from the real tool library (offline); the held-out file holds only the held-out tool
# families, never trained on, and a BFCL v3 copy of it goes to $OUT/bfcl for a BFCL-style scorer
# TOOL_DATA: a prebuilt sft_tool_call.jsonl (its _heldout.jsonl and _bfcl/ beside it), e.g. built here and carried
if [ -n "${TOOL_DATA:-}" ]; then
    DATA=$TOOL_DATA
    cp -r "${DATA%.jsonl}_bfcl" "$OUT/bfcl"
    echo '{"prebuilt": "'"$DATA"'"}' > "$OUT/prepare.json"
else
    DATA=$WORK/sft_tool_call.jsonl
    "$PY" scripts/data_prepare_toolcall.py --source local --output "$DATA" --max_length 512 --bfcl_dir "$OUT/bfcl" \
        --max_samples "${MAX_SAMPLES:-10000}" --seed "${SEED:-42}" > "$OUT/prepare.json"
fi
cp "${DATA%.jsonl}_heldout.jsonl" "$OUT/heldout.jsonl"
note prepare "\"train_rows\": $(wc -l < "$DATA"), \"heldout_rows\": $(wc -l < "${DATA%.jsonl}_heldout.jsonl")"
# the GPU machine has no package registry: llguidance (constrained decoding) and the server's packages come as
# wheels in $WHEELS (default bench_wheels/, carried) when they are not installed
if ! "$PY" -c "import llguidance, fastapi, uvicorn, openai" 2>/dev/null && [ -d "${WHEELS:-bench_wheels}" ]; then
    "$PY" -m pip install -q --no-index --find-links "${WHEELS:-bench_wheels}" --target "$WORK/site" \
        llguidance fastapi uvicorn openai httpx || echo "note: installing the carried wheels failed" >&2
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
EVAL=(scripts/eval_tool_call.py --save_dir "$SAVE_DIR" "${SIZE[@]}" "${DEV[@]}" --data_path "${DATA%.jsonl}_heldout.jsonl"
      --max_cases "${MAX_CASES:-200}" --max_new_tokens 160)

# 2. before: the general SFT model on the same cases
"$PY" "${EVAL[@]}" --weight full_sft --out "$OUT/tool_eval_before.jsonl" > "$OUT/tool_eval_before.md"
note eval_before "\"summary\": $(summary "$OUT/tool_eval_before.jsonl")"

# 3. tool SFT, as the fork documents it (--from_weight full_sft --save_weight tool_sft --max_seq_len 512)
"$PY" trainer/train_full_sft.py "${SIZE[@]}" "${DEV[@]}" --save_dir "$SAVE_DIR" --checkpoint_dir "$WORK/ckpt" \
    --data_path "$DATA" --from_weight full_sft --save_weight tool_sft --max_seq_len 512 \
    --epochs "${TOOL_EPOCHS:-3}" --batch_size "${TOOL_BATCH:-32}" --learning_rate "${TOOL_LR:-2e-4}" \
    --log_interval 20 --save_interval 100000 > "$OUT/tool_sft.log" 2>&1 || { tail -n 30 "$OUT/tool_sft.log"; exit 1; }
note tool_sft

# 4. after: the held-out dialogues (our layout) and the held-out tools' BFCL copy, free and grammar-constrained;
# with REAL_BFCL (a folder of BFCL's own files) also BFCL's categories, MAX_BFCL cases each
"$PY" "${EVAL[@]}" --weight tool_sft --out "$OUT/tool_eval_after.jsonl" > "$OUT/tool_eval_after.md"
note eval_after "\"summary\": $(summary "$OUT/tool_eval_after.jsonl")"
if "$PY" -c "import llguidance" 2>/dev/null; then
    "$PY" "${EVAL[@]}" --weight tool_sft --constrained 1 --out "$OUT/tool_eval_after_constrained.jsonl" \
        > "$OUT/tool_eval_after_constrained.md"
    note eval_after_constrained "\"summary\": $(summary "$OUT/tool_eval_after_constrained.jsonl")"
fi
BFCL=(scripts/eval_tool_call.py --save_dir "$SAVE_DIR" "${SIZE[@]}" "${DEV[@]}" --weight tool_sft --max_new_tokens 200)
for c in 0 1; do
    [ "$c" = 0 ] || "$PY" -c "import llguidance" 2>/dev/null || continue
    "$PY" "${BFCL[@]}" --bfcl_dir "$OUT/bfcl" --max_cases "${MAX_CASES:-200}" --constrained "$c" \
        --out "$OUT/bfcl_heldout_c$c.jsonl" > "$OUT/bfcl_heldout_c$c.md" || echo "note: BFCL held-out eval failed" >&2
    note bfcl_heldout_c$c "\"summary\": $(summary "$OUT/bfcl_heldout_c$c.jsonl")"
    if [ -n "${REAL_BFCL:-}" ]; then
        "$PY" "${BFCL[@]}" --bfcl_dir "$REAL_BFCL" --max_cases "${MAX_BFCL:-50}" --constrained "$c" \
            --out "$OUT/bfcl_real_c$c.jsonl" > "$OUT/bfcl_real_c$c.md" || echo "note: BFCL eval failed" >&2
        note bfcl_real_c$c "\"summary\": $(summary "$OUT/bfcl_real_c$c.jsonl")"
    fi
done
cat "$OUT/tool_eval_before.md" "$OUT/tool_eval_after.md" "$OUT"/tool_eval_after_constrained.md "$OUT"/bfcl_*.md 2>/dev/null || true

# 5. the server with tool_sft, and the official openai client
if ! "$PY" -c "import fastapi, uvicorn, openai" 2>/dev/null; then
    note server "\"skipped\": \"fastapi/uvicorn/openai not importable here\""
    exit 0
fi
PORT=${PORT:-8997}
"$PY" scripts/serve_openai_api.py --weight tool_sft --save_dir "$SAVE_DIR" "${SIZE[@]}" "${DEV[@]}" --port "$PORT" \
    > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
"$PY" - "$PORT" "${DATA%.jsonl}_heldout.jsonl" "$OUT/openai_tool_calls.json" <<'EOF'
import json, sys, time
import openai
port, heldout, out = sys.argv[1:]
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
for _ in range(240):  # the server loads the weight first
    try:
        client.models.list()
        break
    except (openai.APIConnectionError, openai.InternalServerError):  # not up yet, or 503 while loading
        time.sleep(0.5)
# the first held-out dialogues whose reference answer calls a tool: the user turn and the tools, nothing else
cases = []
for line in open(heldout, encoding="utf-8"):
    conv = json.loads(line)["conversations"]
    if any(m["role"] == "assistant" and "<tool_call>" in (m.get("content") or "") for m in conv):
        user = next(m for m in conv if m["role"] == "user")
        cases.append({"messages": [{"role": "user", "content": user["content"]}], "tools": conv[0]["functions"]})
    if len(cases) == 8:
        break
def parses_to_object(text):
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


results = []
for case in cases:
    t = time.perf_counter()
    reply = client.chat.completions.create(model="minimind", temperature=0, max_tokens=160, **case)
    msg = reply.choices[0].message
    plain = {"finish_reason": reply.choices[0].finish_reason, "content": msg.content,
             "tool_calls": [c.model_dump() for c in (msg.tool_calls or [])], "seconds": round(time.perf_counter() - t, 3)}
    t, calls, text, finish = time.perf_counter(), {}, "", None
    for chunk in client.chat.completions.create(model="minimind", temperature=0, max_tokens=160, stream=True, **case):
        if not chunk.choices:
            continue
        delta, finish = chunk.choices[0].delta, chunk.choices[0].finish_reason or finish
        text += delta.content or ""
        for c in delta.tool_calls or []:
            slot = calls.setdefault(c.index, {"name": "", "arguments": ""})
            slot["name"] += (c.function.name or "") if c.function else ""
            slot["arguments"] += (c.function.arguments or "") if c.function else ""
    streamed = {"finish_reason": finish, "content": text, "tool_calls": [calls[k] for k in sorted(calls)],
                "seconds": round(time.perf_counter() - t, 3)}
    # tool_choice "required": with constrained decoding on (the server's default when llguidance is there) the
    # reply must be a call whose arguments parse as JSON
    try:
        reply = client.with_options(max_retries=0).chat.completions.create(
            model="minimind", temperature=0, max_tokens=200, tool_choice="required", **case)
        calls = reply.choices[0].message.tool_calls or []
        required = {"finish_reason": reply.choices[0].finish_reason, "calls": [c.model_dump() for c in calls],
                    "arguments_parse": all(parses_to_object(c.function.arguments) for c in calls)}
    except openai.APIStatusError as e:  # e.g. max_tokens ended the reply inside the call: counted, not fatal
        required = {"error": f"{e.status_code}: {e.message}"[:300], "calls": [], "arguments_parse": False}
    results.append({"user": case["messages"][0]["content"], "tools": [t["function"]["name"] for t in case["tools"]],
                    "plain": plain, "stream": streamed, "required": required})
    print(json.dumps(results[-1], ensure_ascii=False))
json.dump(results, open(out, "w", encoding="utf-8"), ensure_ascii=False, indent=1)
EOF
note server "$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({'cases': len(r), 'auto_tool_call_replies': sum(bool(x['plain']['tool_calls']) for x in r), 'required_valid_calls': sum(bool(x['required']['calls']) and x['required']['arguments_parse'] for x in r)})[1:-1])" "$OUT/openai_tool_calls.json")"
