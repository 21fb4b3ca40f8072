"""Tool-calling SFT data: one MiniMind SFT JSONL from the project's own corpus or a public function-calling set
(scripts/data_prepare_toolcall.py is the command). The default source, `local`, generates dialogues from the real
tool library instead: scripts/toolcall/synth.py (this module's parser serves both).

Sources (`--input` reads a local copy in the source's own layout; without it the hub path goes to `datasets`):

    corpus  dataset/build/tool_call.jsonl (or the bundled dataset/demo/tool_call_demo.jsonl): real dictionary,
            poem and calculator results; plus no-call dialogues (tools offered, a real answer that needs none,
            from the SFT/identity sets) and two-call dialogues joined from two real lookups
    hermes  NousResearch/hermes-function-calling-v1 (ShareGPT `conversations`, <tools> in the system prompt,
            python-literal or JSON <tool_call> blocks, <tool_response> turns)
    glaive  glaiveai/glaive-function-calling-v2 (`system` with JSON schemas, `chat` with USER:/ASSISTANT:/
            <functioncall>/FUNCTION RESPONSE: markers)
    xlam    Salesforce/xlam-function-calling-60k (`query`, `tools` with xLAM parameter specs converted to JSON
            Schema, `answers` = parallel calls; no tool results or final answers in the source)

Every record becomes

    {"conversations": [{"role": "system", "content": ..., "functions": [OpenAI tool schemas]},
                       {"role": "user", ...},
                       {"role": "assistant",
                        "content": "<tool_call>\\n{\\"name\\": ..., \\"arguments\\": {...}}\\n</tool_call>"},
                       {"role": "tool", "content": "<result JSON>"}, ..., {"role": "assistant", "content": answer}]}

which `dataset.lm_dataset.SFTDataset` trains with loss on assistant turns only; the chat template puts the schemas
in the system block and wraps tool turns in <tool_response>. Malformed records are dropped and counted per reason;
rows longer than --max_length tokens (the project tokenizer, rendered by the template) are dropped. Records are
shuffled with --seed, then split: the held-out file shares no tool-call instance (name + arguments) with the
training file; records that share an instance are kept on the same side.
"""
import argparse
import ast
import collections
import hashlib
import json
import random
import re
import sys
from pathlib import Path

from dataset.lm_dataset import parse_chat_record
from model.checkpoint import atomic_write_text, load_tokenizer
from model.runtime import UserError, repo_path
from scripts.toolcall.tool_mocks import canonical

HUB = {"hermes": "NousResearch/hermes-function-calling-v1", "glaive": "glaiveai/glaive-function-calling-v2",
       "xlam": "Salesforce/xlam-function-calling-60k"}
HUB_SUBSET = {"hermes": "func_calling_singleturn"}
SYSTEM_EN = "You are a helpful assistant"  # the template's default; it explains the call format itself
LOCAL_SYSTEM = ("你是 MiniMind，可以调用工具。需要查资料或计算时先调用合适的工具，再根据工具返回的结果回答；"
                "工具没有结果时如实告诉用户。")
TOOL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


class Malformed(ValueError):
    """A record dropped for `reason` (a short key counted in the summary); `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# ------------------------------------------------------------------------------------------- shared pieces

def parse_literal(text: str):
    """JSON, or a Python literal (hermes writes tool calls and schemas with single quotes); None if neither."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)  # literals only: no names, calls or operators are evaluated
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def normalise_tool(tool) -> dict:
    """An OpenAI tool schema {"type": "function", "function": {name, description, parameters}}."""
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise Malformed("bad_tool_schema", "a tool without a name")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict) or params.get("type", "object") != "object" or \
            not isinstance(params.get("properties", {}), dict):
        raise Malformed("bad_tool_schema", f"{fn['name']}: parameters must be a JSON Schema object")
    out = {"name": fn["name"].strip()}
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    out["parameters"] = params
    return {"type": "function", "function": out}


def normalise_call(call) -> dict:
    """{"name": str, "arguments": dict} from a parsed call (arguments may come as a JSON string)."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"].strip():
        raise Malformed("bad_tool_call", "a call without a name")
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        args = parse_literal(args) if args.strip() else {}
    if not isinstance(args, dict):
        raise Malformed("bad_tool_call", f"{call['name']}: arguments are not a JSON object")
    return {"name": call["name"].strip(), "arguments": args}


def render_call(call: dict) -> str:
    """The exact text the chat template renders for an OpenAI tool_call (tojson = json.dumps, no ASCII escapes)."""
    return ("<tool_call>\n{\"name\": " + json.dumps(call["name"], ensure_ascii=False) + ", \"arguments\": "
            + json.dumps(call["arguments"], ensure_ascii=False) + "}\n</tool_call>")


def split_calls(text: str):
    """(content outside the blocks, [calls]) of an assistant turn holding <tool_call> blocks."""
    calls = []
    for block in TOOL_BLOCK.findall(text):
        parsed = parse_literal(block)
        if parsed is None:
            raise Malformed("bad_tool_call", f"not JSON: {block.strip()[:80]!r}")
        calls.append(normalise_call(parsed))
    rest = TOOL_BLOCK.sub("", text)
    if "<tool_call>" in rest or "</tool_call>" in rest:
        raise Malformed("bad_tool_call", "an unclosed <tool_call> block")
    return rest.strip(), calls


def tool_content(value) -> str:
    """A tool result as the text of a tool turn: JSON (no ASCII escapes) when it parses, else as given."""
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    text = re.sub(r"^\s*<tool_response>\s*|\s*</tool_response>\s*$", "", value)
    parsed = parse_literal(text)
    return json.dumps(parsed, ensure_ascii=False) if isinstance(parsed, (dict, list)) else text.strip()


def assistant(content: str, calls=()) -> dict:
    text = "\n".join(([content] if content else []) + [render_call(c) for c in calls])
    return {"role": "assistant", "content": text}


def build_record(system: str, tools: list, turns: list) -> dict:
    """Check one normalised dialogue and return its SFT row. `turns` are user/assistant/tool messages; assistant
    messages carry "calls" (list of {"name", "arguments"}) next to "content"."""
    names = {t["function"]["name"] for t in tools}
    if len(names) != len(tools):
        raise Malformed("bad_tool_schema", "two tools share a name")
    if not any(t["role"] == "user" for t in turns):
        raise Malformed("no_user_turn")
    if not any(t["role"] == "assistant" for t in turns):
        raise Malformed("no_assistant_turn")
    out, pending = [], 0
    for t in turns:
        if t["role"] == "assistant":
            calls = t.get("calls", [])
            for c in calls:
                if c["name"] not in names:
                    raise Malformed("unknown_tool", f"{c['name']} is not among the offered tools")
            if not calls and not t["content"].strip():
                raise Malformed("empty_turn", "an assistant turn with neither text nor calls")
            out.append(assistant(t["content"].strip(), calls))
            pending = len(calls)
        elif t["role"] == "tool":
            if pending == 0:
                raise Malformed("bad_turn_order", "a tool result that answers no call")
            pending -= 1
            out.append({"role": "tool", "content": t["content"]})
        else:
            if not t["content"].strip():
                raise Malformed("empty_turn", "an empty user turn")
            out.append({"role": "user", "content": t["content"].strip()})
    while out and out[-1]["role"] == "user":  # nothing to learn after the last answer
        out.pop()
    system_msg = {"role": "system", "content": system}
    if tools:
        system_msg["functions"] = tools
    return {"conversations": [system_msg] + out}


def record_calls(row: dict) -> list:
    """(name, canonical arguments) of every call in a row: the tool-call instances the split keeps apart."""
    found = []
    for m in row["conversations"]:
        if m["role"] == "assistant":
            found += [(c["name"], canonical(c["arguments"])) for c in split_calls(m["content"])[1]]
    return found


# --------------------------------------------------------------------------------------------- the sources

def convert_hermes(rec: dict) -> dict:
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise Malformed("bad_record", 'no "conversations" list')
    roles = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
             "tool": "tool", "function": "tool"}
    tools, turns = [], []
    for m in conv:
        if not isinstance(m, dict) or m.get("from") not in roles or not isinstance(m.get("value"), str):
            raise Malformed("bad_record", "a turn without a known 'from' and a string 'value'")
        role, value = roles[m["from"]], m["value"]
        if role == "system":
            # the real prompt first says "within <tools></tools> XML tags": the schemas are in the non-empty block
            found = [b for b in re.findall(r"<tools>(.*?)</tools>", value, re.S) if b.strip()]
            if found:
                listed = parse_literal(found[-1])
                if listed is None:
                    raise Malformed("bad_tool_schema", "the <tools> block is not JSON or a literal")
                tools = [normalise_tool(t) for t in (listed if isinstance(listed, list) else [listed])]
        elif role == "assistant":
            content, calls = split_calls(value)
            turns.append({"role": "assistant", "content": content, "calls": calls})
        elif role == "tool":
            responses = re.findall(r"<tool_response>(.*?)</tool_response>", value, re.S) or [value]
            turns += [{"role": "tool", "content": tool_content(r)} for r in responses]
        else:
            turns.append({"role": "user", "content": value})
    return build_record(SYSTEM_EN, tools, turns)


def _glaive_schemas(system: str) -> list:
    """The JSON objects written one after another after the system prompt's header."""
    decoder, tools, i = json.JSONDecoder(), [], system.find("{")
    while 0 <= i < len(system):
        try:
            obj, end = decoder.raw_decode(system, i)
        except json.JSONDecodeError:
            raise Malformed("bad_tool_schema", "a function schema in the system prompt is not JSON") from None
        tools.append(normalise_tool(obj))
        i = system.find("{", end)
    return tools


def _glaive_call(text: str) -> dict:
    # glaive quotes the arguments object as a Python string: {"name": "f", "arguments": '{"a": 1}'}
    fixed = re.sub(r"(\"arguments\"\s*:\s*)'(.*)'(\s*}\s*)$", r"\1\2\3", text.strip(), flags=re.S)
    call = parse_literal(fixed)
    if call is None:
        raise Malformed("bad_tool_call", f"<functioncall> is not JSON: {text.strip()[:80]!r}")
    return normalise_call(call)


def convert_glaive(rec: dict) -> dict:
    system, chat = rec.get("system"), rec.get("chat")
    if not isinstance(system, str) or not isinstance(chat, str):
        raise Malformed("bad_record", 'needs "system" and "chat" strings')
    tools = _glaive_schemas(system)
    parts = re.split(r"(USER:|ASSISTANT:|FUNCTION RESPONSE:)", chat.replace("<|endoftext|>", ""))
    turns = []
    for marker, text in zip(parts[1::2], parts[2::2]):
        text = text.strip()
        if marker == "USER:":
            turns.append({"role": "user", "content": text})
        elif marker == "FUNCTION RESPONSE:":
            turns.append({"role": "tool", "content": tool_content(text)})
        elif "<functioncall>" in text:
            before, _, call = text.partition("<functioncall>")
            turns.append({"role": "assistant", "content": before.strip(), "calls": [_glaive_call(call)]})
        else:
            turns.append({"role": "assistant", "content": text, "calls": []})
    if not turns:
        raise Malformed("bad_record", "no USER:/ASSISTANT: turns in chat")
    return build_record(SYSTEM_EN, tools, turns)


_XLAM_SCALARS = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
                 "number": "number", "bool": "boolean", "boolean": "boolean", "dict": "object", "object": "object",
                 "list": "array", "array": "array", "any": None}


def xlam_type(spec: str) -> dict:
    """JSON Schema for an xLAM type string such as "str", "int, optional", "List[int]", "Dict[str, Any]"."""
    t = re.sub(r",\s*optional\s*$", "", spec.strip(), flags=re.I).strip()
    m = re.fullmatch(r"(?:typing\.)?(List|list|Set|set|Tuple|tuple)\[(.+)\]", t)
    if m:
        return {"type": "array", "items": xlam_type(m.group(2).split(",")[0]) if m.group(1).lower() != "tuple"
                else {}}
    if re.fullmatch(r"(?:typing\.)?(Dict|dict)\[.*\]", t):
        return {"type": "object"}
    m = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", t)
    if m:
        return xlam_type(m.group(1))
    if t.lower() not in _XLAM_SCALARS:
        raise Malformed("bad_tool_schema", f"unknown xLAM parameter type {spec!r}")
    name = _XLAM_SCALARS[t.lower()]
    return {"type": name} if name else {}


def xlam_tool(tool) -> dict:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise Malformed("bad_tool_schema", "an xLAM tool without a name")
    props, required = {}, []
    params = tool.get("parameters") or {}
    if not isinstance(params, dict):
        raise Malformed("bad_tool_schema", f"{tool['name']}: parameters is not an object")
    for pname, spec in params.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise Malformed("bad_tool_schema", f"{tool['name']}.{pname}: no type")
        prop = xlam_type(spec["type"])
        if isinstance(spec.get("description"), str):
            prop["description"] = spec["description"]
        if "default" in spec and spec["default"] not in (None, ""):
            prop["default"] = spec["default"]
        props[pname] = prop
        if not re.search(r"optional", spec["type"], re.I):
            required.append(pname)
    fn = {"name": tool["name"], "description": tool.get("description", ""),
          "parameters": {"type": "object", "properties": props, "required": required}}
    return normalise_tool(fn)


def convert_xlam(rec: dict) -> dict:
    query, tools, answers = rec.get("query"), rec.get("tools"), rec.get("answers")
    if not isinstance(query, str):
        raise Malformed("bad_record", 'no "query" string')
    try:
        tools = json.loads(tools) if isinstance(tools, str) else tools
        answers = json.loads(answers) if isinstance(answers, str) else answers
    except json.JSONDecodeError as e:
        raise Malformed("bad_record", f'"tools" or "answers" is not valid JSON ({e.msg})') from None
    if not isinstance(tools, list) or not isinstance(answers, list):
        raise Malformed("bad_record", '"tools" and "answers" must be lists (or JSON strings of lists)')
    calls = [normalise_call(a) for a in answers]
    turns = [{"role": "user", "content": query}]
    turns.append({"role": "assistant", "content": "" if calls else "None of the offered functions fits this "
                  "request.", "calls": calls})
    return build_record(SYSTEM_EN, [xlam_tool(t) for t in tools], turns)


def convert_sft_row(rec: dict) -> dict:
    """A row already in MiniMind SFT format with tools (the corpus' tool_call files): re-checked and normalised."""
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv or not all(isinstance(m, dict) for m in conv):
        raise Malformed("bad_record", 'no "conversations" list of messages')
    system, tools, turns = LOCAL_SYSTEM, [], []
    for i, m in enumerate(conv):
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str):
            raise Malformed("bad_record", f"message {i} has no string content")
        if role == "system" and i == 0:
            system = content
            listed = m.get("functions") or m.get("tools") or rec.get("tools") or []
            listed = parse_literal(listed) if isinstance(listed, str) else listed
            tools = [normalise_tool(t) for t in listed]
        elif role == "assistant":
            text, calls = split_calls(content)
            turns.append({"role": "assistant", "content": text, "calls": calls})
        elif role in ("user", "tool"):
            turns.append({"role": role, "content": content})
        else:
            raise Malformed("bad_record", f"message {i} has role {role!r}")
    return build_record(system, tools, turns)


CONVERTERS = {"hermes": convert_hermes, "glaive": convert_glaive, "xlam": convert_xlam, "corpus": convert_sft_row}


# ------------------------------------------------------------------------------------------- local extras

def _single_turn(row):
    conv = row.get("conversations", [])
    turns = [m for m in conv if m.get("role") in ("user", "assistant")]
    if len(turns) == 2 and turns[0]["role"] == "user" and len(conv) == 2:
        return turns[0]["content"], turns[1]["content"]
    return None


def local_no_call_rows(paths, tools: list, n: int, rng: random.Random) -> list:
    """Tools offered, but the question needs none: English FAQ/chat and identity rows keep their real answer.

    Chinese dictionary and poem questions are left out on purpose: the tool rows teach a call for those."""
    pool = []
    for path in paths:
        if not path.is_file():
            continue
        for line in path.open(encoding="utf-8"):
            pair = _single_turn(json.loads(line))
            if not pair:
                continue
            q, a = pair
            cjk = any("\u4e00" <= c <= "\u9fff" for c in q)
            if path.name.startswith("lora_identity") or not cjk:
                pool.append((q, a))
    rows = []
    for q, a in rng.sample(pool, min(n, len(pool))):
        offered = rng.sample(tools, rng.randint(1, min(3, len(tools))))
        rows.append(build_record(LOCAL_SYSTEM, offered, [{"role": "user", "content": q},
                                                          {"role": "assistant", "content": a}]))
    return rows


def local_two_call_rows(rows: list, n: int, rng: random.Random) -> list:
    """Two real lookups of one tool asked together: two parallel calls, two results, both answers."""
    by_tool = collections.defaultdict(list)
    for row in rows:
        conv = row["conversations"]
        if len(conv) != 5 or conv[3]["content"] in ("{}", "[]"):
            continue
        calls = split_calls(conv[2]["content"])[1]
        if len(calls) == 1 and calls[0]["name"] in ("lookup_idiom", "lookup_char"):
            by_tool[calls[0]["name"]].append((conv[0], calls[0], conv[3]["content"], conv[4]["content"]))
    out = []
    for name in sorted(by_tool):
        items = by_tool[name]
        for _ in range(min(n // max(len(by_tool), 1), len(items) // 2)):
            (sys_a, a, ra, ans_a), (_, b, rb, ans_b) = rng.sample(items, 2)
            if a == b:
                continue
            key = "word" if name == "lookup_idiom" else "char"
            kind = "成语" if name == "lookup_idiom" else "字"
            q = rng.choice(["「{x}」和「{y}」这两个{k}分别是什么意思？", "帮我查一下{k}「{x}」和「{y}」。",
                            "{k}「{x}」「{y}」各怎么解释？"])
            q = q.format(x=a["arguments"][key], y=b["arguments"][key], k=kind)
            out.append(build_record(sys_a["content"], sys_a["functions"], [
                {"role": "user", "content": q}, {"role": "assistant", "content": "", "calls": [a, b]},
                {"role": "tool", "content": ra}, {"role": "tool", "content": rb},
                {"role": "assistant", "content": ans_a + "\n\n" + ans_b}]))
    return out


# ------------------------------------------------------------------------------------------------- reading

def read_records(path: Path):
    """Records of a local copy: a JSON array (hermes/xlam files), JSON lines, or parquet (through datasets)."""
    if not path.is_file():
        raise UserError(f"--input {path}: no such file; download the dataset's file or drop --input to load it "
                        f"from the hub through `datasets`")
    if path.suffix == ".parquet":
        import datasets
        return list(datasets.load_dataset("parquet", data_files=str(path), split="train"))
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix the file or give JSON lines")
        return data
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                out.append(Malformed("bad_json", f"{path}:{n}: {e.msg}"))
    return out


def load_source(args):
    if args.input:
        return read_records(repo_path(args.input))
    if args.source == "corpus":
        for candidate in ("dataset/build/tool_call.jsonl", "dataset/demo/tool_call_demo.jsonl"):
            if repo_path(candidate).is_file():
                print(f"local source: {candidate}", file=sys.stderr)
                return read_records(repo_path(candidate))
        raise UserError("no local tool dialogues: dataset/demo/tool_call_demo.jsonl is missing; restore it with "
                        "`git checkout dataset/demo` or build it with `python scripts/build_corpus.py bundle`")
    import datasets
    try:
        return datasets.load_dataset(HUB[args.source], args.subset or HUB_SUBSET.get(args.source), split="train")
    except Exception as e:  # offline, gated (xlam needs its terms accepted), renamed upstream
        raise UserError(f"cannot load {HUB[args.source]} through datasets ({type(e).__name__}: {e}); download "
                        f"the file yourself and pass it with --input") from None


# ---------------------------------------------------------------------------------------------------- split

def split_heldout(rows: list, ratio: float, seed: int) -> tuple:
    """(train, heldout): records linked by a shared tool-call instance form one group; each group goes to one
    side by a hash of its smallest instance, so no instance is on both sides."""
    # Why groups: a held-out dialogue whose exact call (lookup_idiom("画蛇添足")) is also in training would be
    # scored as generalisation while it is recall. Union-find over shared instances keeps every such pair on one
    # side; the hash (not a shuffle) makes the split the same for the same seed whatever the row order.
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = []
    for i, row in enumerate(rows):
        inst = [json.dumps(c, ensure_ascii=False) for c in record_calls(row)]
        if not inst:  # a no-call row is its own group, named by its first user message
            user = next(m["content"] for m in row["conversations"] if m["role"] == "user")
            inst = ["nocall:" + user]
        for x in inst[1:]:
            parent[find(x)] = find(inst[0])
        keys.append(inst[0])
    members, smallest = collections.defaultdict(list), {}
    for i, k in enumerate(keys):
        members[find(k)].append(i)
    for x in list(parent):
        r = find(x)
        smallest[r] = min(smallest.get(r, x), x)
    train, held = [], []
    for root, idx in members.items():
        name = smallest[root]
        h = int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if h < ratio else train).extend(idx)
    return [rows[i] for i in sorted(train)], [rows[i] for i in sorted(held)]


def count_tokens(row: dict, tokenizer) -> int:
    chat = parse_chat_record(json.loads(json.dumps(row)))  # exactly what SFTDataset will render
    text = tokenizer.apply_chat_template(chat.messages, tools=chat.tools, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_length(row: dict, tokenizer, max_length: int) -> tuple:
    """(tokens, whether schemas were dropped): a row over max_length loses the schemas of tools it never calls,
    last first, keeping at least one, until it fits. A schema costs 150-270 tokens with the project tokenizer, so
    this keeps most corpus dialogues (one call plus distractor tools) inside MiniMind's 512."""
    n = count_tokens(row, tokenizer)
    system = row["conversations"][0]
    called = {name for name, _ in record_calls(row)}
    trimmed = False
    while n > max_length and len(system.get("functions", [])) > 1:
        unused = [i for i, t in enumerate(system["functions"]) if t["function"]["name"] not in called]
        if not unused:
            break
        del system["functions"][unused[-1]]
        trimmed = True
        n = count_tokens(row, tokenizer)
    return n, trimmed


# ---------------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="工具调用 SFT 数据准备 / prepare tool-calling SFT data",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--source", default="local", choices=["local", "corpus", "hermes", "glaive", "xlam"],
        help="数据来源：local = 真实工具库生成（离线，含留出工具集）；corpus = 本项目语料里录好的词典/诗词对话 / "
             "where the dialogues come from: local = generated from the real tool library (offline, with a "
             "held-out tool set); corpus = the recorded dictionary/poem dialogues of this project's corpus")
    add("--input", default=None, help="来源格式的本地文件 (.json/.jsonl/.parquet) / a local copy in the source's "
                                      "layout; default: the hub through `datasets` (corpus: the bundled corpus; "
                                      "local reads none)")
    add("--subset", default=None, help="hub 配置名 / hub config name (hermes default: func_calling_singleturn)")
    add("--output", default="dataset/sft_tool_call.jsonl", help="训练集输出 / training JSONL")
    add("--heldout_output", default=None, help="留出集输出 / held-out JSONL; default: <output>_heldout.jsonl")
    add("--bfcl_dir", default=None, help="local：留出集的 BFCL v3 格式目录 / local: the held-out set in the BFCL "
                                         "v3 layout; default: <output>_bfcl/")
    add("--heldout_ratio", type=float, default=0.1,
        help="留出比例 / held-out share (local: rows of the held-out tools; others: tool-call groups)")
    add("--max_samples", type=int, default=10000, help="最多保留条数（打乱后）/ most records kept, after shuffling")
    add("--max_length", type=int, default=512, help="最长 token 数（项目分词器+对话模板）/ most tokens per row")
    add("--no_call_ratio", type=float, default=0.15,
        help="corpus：无需调用的对话占工具对话的比例 / corpus: no-call dialogues per tool dialogue")
    add("--two_call_ratio", type=float, default=0.1,
        help="corpus：两次并行调用的对话比例 / corpus: two-call dialogues per tool dialogue")
    add("--seed", type=int, default=42, help="打乱与划分的种子 / shuffle and split seed")
    add("--tokenizer_path", default="model", help="计算长度用的分词器 / tokenizer used for --max_length")
    return p


def prepare(args) -> dict:
    """Read, convert, length-filter, split and write; returns the summary printed as one JSON line."""
    if not 0 <= args.heldout_ratio < 1:
        raise UserError(f"--heldout_ratio {args.heldout_ratio}: must be in [0, 1)")
    if args.max_samples < 1 or args.max_length < 16:
        raise UserError("--max_samples must be >= 1 and --max_length >= 16")
    rng = random.Random(args.seed)
    raw = load_source(args)
    convert = CONVERTERS[args.source]
    dropped, examples, rows, seen, longest = collections.Counter(), {}, [], set(), 0

    def drop(reason, detail):
        dropped[reason] += 1
        examples.setdefault(reason, detail)

    for n, rec in enumerate(raw, 1):
        try:
            if isinstance(rec, Malformed):
                raise rec
            if not isinstance(rec, dict):
                raise Malformed("bad_record", f"record {n} is a {type(rec).__name__}, not an object")
            rows.append(convert(dict(rec)))
        except Malformed as e:
            drop(e.reason, f"record {n}: {e.detail}")
    if args.source == "corpus":
        tools = {t["function"]["name"]: t for r in rows for t in r["conversations"][0].get("functions", [])}
        paths = [repo_path(p) for p in ("dataset/build/sft.jsonl", "dataset/demo/sft_demo.jsonl",
                                        "dataset/demo/lora_identity_demo.jsonl")]
        paths = [p for p in paths if p.is_file() and not (p.name == "sft_demo.jsonl" and paths[0].is_file())]
        extra_rng = random.Random(args.seed + 1)
        rows += local_two_call_rows(rows, int(len(rows) * args.two_call_ratio), extra_rng)
        rows += local_no_call_rows(paths, [tools[k] for k in sorted(tools)], int(len(rows) * args.no_call_ratio),
                                   extra_rng)
    read = len(raw)
    tokenizer = load_tokenizer(repo_path(args.tokenizer_path))
    kept, trimmed_rows = [], 0
    rng.shuffle(rows)
    for row in rows:
        key = json.dumps(row, ensure_ascii=False, sort_keys=True)
        if key in seen:
            drop("duplicate", "an identical dialogue came earlier")
            continue
        seen.add(key)
        n_tokens, trimmed = fit_length(row, tokenizer, args.max_length)
        if n_tokens > args.max_length:
            drop("too_long", f"{n_tokens} tokens > --max_length {args.max_length}")
            longest = max(longest, n_tokens)
            continue
        trimmed_rows += trimmed
        kept.append(row)
        if len(kept) >= args.max_samples:
            break
    if not kept:
        raise UserError(f"no usable records from {args.input or args.source} (dropped: {dict(dropped)}); "
                        f"check that the file has the {args.source} layout")
    train, held = split_heldout(kept, args.heldout_ratio, args.seed)
    out = repo_path(args.output)
    held_out = repo_path(args.heldout_output) if args.heldout_output else out.with_name(out.stem + "_heldout.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    held_out.parent.mkdir(parents=True, exist_ok=True)
    for path, part in ((out, train), (held_out, held)):
        atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), path)
    calls = collections.Counter(name for r in kept for name, _ in record_calls(r))
    summary = {"source": args.source, "read": read, "converted": len(rows), "kept": len(kept), "train": len(train),
               "heldout": len(held), "dropped": dict(sorted(dropped.items())), "calls_per_tool": dict(calls),
               "rows_with_unused_tools_dropped": trimmed_rows,
               "no_call_rows": sum(1 for r in kept if not record_calls(r)),
               "parallel_call_rows": sum(1 for r in kept for m in r["conversations"]
                                         if m["role"] == "assistant" and m["content"].count("<tool_call>") > 1),
               "output": str(out), "heldout_output": str(held_out)}
    for reason, detail in sorted(examples.items()):
        print(f"dropped {dropped[reason]} x {reason}, e.g. {detail}", file=sys.stderr)
    if dropped["too_long"]:  # the bundled dialogues: 45% are over MiniMind's 512 (issue 32)
        print(f"note: {dropped['too_long']} of {len(rows)} dialogues ({100 * dropped['too_long'] / len(rows):.0f}%) "
              f"are longer than --max_length {args.max_length} tokens and were left out; --max_length {longest} "
              f"keeps them (then train with --max_seq_len {longest})", file=sys.stderr)
    return summary

