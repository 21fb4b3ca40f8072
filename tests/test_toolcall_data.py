"""scripts/data_prepare_toolcall.py: each source's converter on small files in that source's own layout (malformed
records included, counted per reason), the corpus source offline, the instance-disjoint held-out split,
determinism, and the rendered calls being byte-identical to what SFTDataset trains on and ReplyParser reads back.
The default `local` source (the real tool library) is tested in test_toolcall_library.py."""
import json
from pathlib import Path

import pytest

from conftest import run_main
from dataset.lm_dataset import IGNORE_INDEX, SFTDataset, parse_chat_record
from model.chat_protocol import split_reply
from model.checkpoint import load_tokenizer
from scripts import data_prepare_toolcall
from scripts.toolcall import data as prep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def run_prep(tmp_path, *args):
    out = tmp_path / "sft_tool_call.jsonl"
    proc = run_main(data_prepare_toolcall.main, ["--output", out, *args])
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    held_path = tmp_path / "sft_tool_call_heldout.jsonl"
    held = [json.loads(x) for x in held_path.read_text(encoding="utf-8").splitlines()] if held_path.exists() else []
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    return proc, rows, held, summary


def write_json(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ hermes

HERMES_SYSTEM = ("You are a function calling AI model. You are provided with function signatures within <tools></tools>"
                 " XML tags.<tools>\n[{'type': 'function', 'function': {'name': 'get_stock_price', 'description': "
                 "'Get the stock price', 'parameters': {'type': 'object', 'properties': "
                 "{'symbol': {'type': 'string'}}, 'required': ['symbol']}}}, "
                 "{'type': 'function', 'function': {'name': 'get_news', 'description': "
                 "'News', 'parameters': {'type': 'object', 'properties': {'topic': {'type': 'string'}}}}}]\n</tools>")


def hermes(gpt, tool=None, final=None, system=HERMES_SYSTEM):
    conv = [{"from": "system", "value": system}, {"from": "human", "value": "What is Apple trading at?"},
            {"from": "gpt", "value": gpt}]
    if tool is not None:
        conv += [{"from": "tool", "value": tool}, {"from": "gpt", "value": final}]
    return {"id": "x", "conversations": conv, "category": "Finance"}


def test_hermes_layout_with_python_literals_parallel_calls_and_malformed_records(tmp_path):
    good = hermes("<tool_call>\n{'arguments': {'symbol': 'AAPL'}, 'name': 'get_stock_price'}\n</tool_call>",
                  "<tool_response>\n{'name': 'get_stock_price', 'content': {'price': 189.5}}\n</tool_response>",
                  "Apple is at $189.5.")
    parallel = hermes('<tool_call>\n{"name": "get_stock_price", "arguments": {"symbol": "MSFT"}}\n</tool_call>\n'
                      '<tool_call>\n{"name": "get_news", "arguments": {"topic": "MSFT"}}\n</tool_call>',
                      "<tool_response>\n{\"price\": 410}\n</tool_response>\n<tool_response>\n[]\n</tool_response>",
                      "Microsoft is at $410; no news.")
    records = [good, parallel,
               hermes("<tool_call>\n{'name': 'get_stock_price', 'arguments': {'symbol': \n</tool_call>"),  # bad JSON
               hermes('<tool_call>\n{"name": "buy_stock", "arguments": {}}\n</tool_call>'),  # not offered
               hermes('<tool_call>\n{"name": "get_news", "arguments": {"topic": "x"}}'),  # never closed
               {"id": "y"}]  # no conversations
    proc, rows, held, summary = run_prep(tmp_path, "--source", "hermes", "--input", write_json(tmp_path / "h.json",
                                                                                               records),
                                         "--heldout_ratio", "0")
    assert proc.returncode == 0, proc.stderr
    assert summary["dropped"] == {"bad_record": 1, "bad_tool_call": 2, "unknown_tool": 1}
    assert summary["read"] == 6 and summary["kept"] == 2 and summary["parallel_call_rows"] == 1
    by_symbol = {("AAPL" in json.dumps(r)): r for r in rows}
    conv = by_symbol[True]["conversations"]
    assert conv[0] == {"role": "system", "content": prep.SYSTEM_EN, "functions": [
        {"type": "function", "function": {"name": "get_stock_price", "description": "Get the stock price",
                                          "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}},
                                                         "required": ["symbol"]}}},
        {"type": "function", "function": {"name": "get_news", "description": "News",
                                          "parameters": {"type": "object",
                                                         "properties": {"topic": {"type": "string"}}}}}]}
    assert conv[1:] == [
        {"role": "user", "content": "What is Apple trading at?"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "get_stock_price", "arguments": {"symbol": "AAPL"}}'
                                         '\n</tool_call>'},
        {"role": "tool", "content": '{"name": "get_stock_price", "content": {"price": 189.5}}'},
        {"role": "assistant", "content": "Apple is at $189.5."}]
    conv = by_symbol[False]["conversations"]
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert conv[2]["content"].count("<tool_call>") == 2 and conv[3]["content"] == '{"price": 410}'


# ------------------------------------------------------------------------------------------------ glaive

GLAIVE_SYSTEM = ('SYSTEM: You are a helpful assistant with access to the following functions. Use them if required -\n'
                 '{\n    "name": "calculate_bmi",\n    "description": "Body mass index",\n    "parameters": {\n'
                 '        "type": "object",\n        "properties": {"weight": {"type": "number"}, '
                 '"height": {"type": "number"}},\n        "required": ["weight", "height"]\n    }\n}\n\n'
                 '{\n    "name": "get_date",\n    "parameters": {"type": "object", "properties": {}}\n}\n')


def test_glaive_layout_quoted_arguments_multi_turn_and_no_function_dialogues(tmp_path):
    call = ("USER: My weight is 70 kg and height 1.75 m, BMI? ASSISTANT: <functioncall> "
            "{\"name\": \"calculate_bmi\", \"arguments\": '{\"weight\": 70, \"height\": 1.75}'} <|endoftext|>"
            "\n\n\nFUNCTION RESPONSE: {\"bmi\": 22.86}\n\n\nASSISTANT: Your BMI is 22.86. <|endoftext|>\n\n\n"
            "USER: Thanks! ASSISTANT: You're welcome. <|endoftext|>")
    records = [
        {"system": GLAIVE_SYSTEM, "chat": call},
        {"system": "SYSTEM: You are a helpful assistant, with no access to external functions.",
         "chat": "USER: Tell me a joke. ASSISTANT: Why did the chicken cross the road? <|endoftext|>"},
        {"system": GLAIVE_SYSTEM, "chat": "USER: BMI? ASSISTANT: <functioncall> {\"name\": \"calculate_bmi\", "
                                          "\"arguments\": '{\"weight\": 70,'} <|endoftext|>"},  # truncated arguments
        {"system": GLAIVE_SYSTEM + "{ not json", "chat": "USER: hi ASSISTANT: hello <|endoftext|>"},
        {"chat": "USER: hi"},
    ]
    proc, rows, _, summary = run_prep(tmp_path, "--source", "glaive", "--input",
                                      write_json(tmp_path / "g.json", records), "--heldout_ratio", "0")
    assert proc.returncode == 0, proc.stderr
    assert summary["dropped"] == {"bad_record": 1, "bad_tool_call": 1, "bad_tool_schema": 1}
    assert summary["no_call_rows"] == 1 and summary["kept"] == 2
    bmi = next(r for r in rows if "calculate_bmi" in json.dumps(r))["conversations"]
    assert [t["function"]["name"] for t in bmi[0]["functions"]] == ["calculate_bmi", "get_date"]
    assert bmi[0]["functions"][0]["function"]["parameters"]["required"] == ["weight", "height"]
    assert bmi[1:] == [
        {"role": "user", "content": "My weight is 70 kg and height 1.75 m, BMI?"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "calculate_bmi", "arguments": {"weight": 70, '
                                         '"height": 1.75}}\n</tool_call>'},
        {"role": "tool", "content": '{"bmi": 22.86}'},
        {"role": "assistant", "content": "Your BMI is 22.86."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You're welcome."}]
    joke = next(r for r in rows if "joke" in json.dumps(r))["conversations"]
    assert "functions" not in joke[0] and joke[2]["content"] == "Why did the chicken cross the road?"


# -------------------------------------------------------------------------------------------------- xlam

def test_xlam_layout_parameter_specs_become_json_schema_and_parallel_calls(tmp_path):
    tools = [{"name": "get_weather", "description": "Weather", "parameters": {
                 "city": {"description": "City name", "type": "str", "default": "Paris"},
                 "days": {"description": "Forecast days", "type": "int, optional", "default": 3},
                 "ids": {"description": "Station ids", "type": "List[int]", "default": ""}}},
             {"name": "convert", "description": "Units", "parameters": {"value": {"type": "float"},
                                                                        "opts": {"type": "Dict[str, Any], optional"}}}]
    answers = [{"name": "get_weather", "arguments": {"city": "Oslo"}},
               {"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}]
    records = [
        {"id": 1, "query": "Weather in Oslo, and Rome for 2 days?", "tools": json.dumps(tools),
         "answers": json.dumps(answers)},
        {"id": 2, "query": "x", "tools": json.dumps(tools), "answers": "[{\"name\": \"get_weather\", "},  # bad JSON
        {"id": 3, "query": "y", "tools": json.dumps([{"name": "f", "parameters": {"a": {"type": "Tensor"}}}]),
         "answers": "[]"},  # a type xLAM does not use
        {"id": 4, "query": "z", "tools": json.dumps(tools), "answers": json.dumps([{"name": "nope", "arguments": {}}])},
    ]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "{broken line\n", encoding="utf-8")
    proc, rows, _, summary = run_prep(tmp_path, "--source", "xlam", "--input", path, "--heldout_ratio", "0",
                                      "--max_length", "2048")  # keep the unused second schema
    assert proc.returncode == 0, proc.stderr
    assert summary["dropped"] == {"bad_json": 1, "bad_record": 1, "bad_tool_schema": 1, "unknown_tool": 1}
    (row,) = rows
    weather = row["conversations"][0]["functions"][0]["function"]
    assert weather["parameters"] == {"type": "object", "required": ["city", "ids"], "properties": {
        "city": {"type": "string", "description": "City name", "default": "Paris"},
        "days": {"type": "integer", "description": "Forecast days", "default": 3},
        "ids": {"type": "array", "items": {"type": "integer"}, "description": "Station ids"}}}
    assert row["conversations"][0]["functions"][1]["function"]["parameters"]["properties"] == {
        "value": {"type": "number"}, "opts": {"type": "object"}}
    assert split_reply(row["conversations"][2]["content"])["tool_calls"] == [
        ("get_weather", '{"city": "Oslo"}'), ("get_weather", '{"city": "Rome", "days": 2}')]
    assert len(row["conversations"]) == 3  # xLAM has no tool results or final answers


# -------------------------------------------------------------------------------------------------- local

@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    return run_prep(tmp, "--source", "corpus", "--max_samples", 400, "--heldout_ratio", 0.2), tmp


def test_corpus_source_offline_split_shares_no_call_instance(local):
    (proc, rows, held, summary), _ = local
    assert proc.returncode == 0, proc.stderr
    assert summary["source"] == "corpus" and summary["kept"] == 400 == len(rows) + len(held)
    assert len(held) > 20 and summary["no_call_rows"] > 20
    assert set(summary["calls_per_tool"]) == {"lookup_idiom", "lookup_char", "search_poem", "calculator"}
    train_calls = {c for r in rows for c in prep.record_calls(r)}
    held_calls = {c for r in held for c in prep.record_calls(r)}
    assert held_calls and not train_calls & held_calls
    assert "too_long" in summary["dropped"]  # --max_length 512 with the project tokenizer drops long poem rows
    # no-call rows offer tools and answer in plain text
    nocall = [r for r in rows if not prep.record_calls(r)]
    assert all(r["conversations"][0]["functions"] and "<tool_call>" not in r["conversations"][-1]["content"]
               for r in nocall)


def test_corpus_output_is_deterministic_and_max_samples_caps(local, tmp_path):
    (_, rows, held, _), first = local
    proc, rows2, held2, summary = run_prep(tmp_path, "--source", "corpus", "--max_samples", 400, "--heldout_ratio", 0.2)
    assert proc.returncode == 0
    assert (first / "sft_tool_call.jsonl").read_bytes() == (tmp_path / "sft_tool_call.jsonl").read_bytes()
    assert held == held2
    proc, rows3, held3, _ = run_prep(tmp_path, "--source", "corpus", "--max_samples", 50, "--seed", 7)
    assert len(rows3) + len(held3) == 50 and rows3 != rows2[:len(rows3)]


def test_rendered_calls_are_what_sft_dataset_trains_and_the_parser_reads(local, tokenizer):
    """For every assistant turn: the labels SFTDataset keeps decode to exactly the turn's text + <|im_end|>, the
    OpenAI tool_calls form of the same calls renders to the same bytes, and ReplyParser gets the calls back."""
    (_, _, _, _), folder = local
    ds = SFTDataset(folder / "sft_tool_call.jsonl", tokenizer, max_length=512)
    rows = [json.loads(x) for x in (folder / "sft_tool_call.jsonl").read_text(encoding="utf-8").splitlines()]
    checked = 0
    for i, row in enumerate(rows[:60]):
        ids, labels = ds[i]
        kept = [t for t, lab in zip(ids.tolist(), labels.tolist()) if lab != IGNORE_INDEX]
        turns = [m["content"] for m in row["conversations"] if m["role"] == "assistant"]
        assert tokenizer.decode(kept) == "".join(t + "<|im_end|>" for t in turns)
        chat = parse_chat_record(json.loads(json.dumps(row)))
        as_text = tokenizer.apply_chat_template(chat.messages, tools=chat.tools, tokenize=False)
        openai = []
        for m in chat.messages:
            parsed = split_reply(m["content"]) if m["role"] == "assistant" else {"tool_calls": []}
            if parsed["tool_calls"]:
                calls = [{"name": n, "arguments": json.loads(a)} for n, a in parsed["tool_calls"]]
                assert m["content"] == "\n".join(prep.render_call(c) for c in calls)  # parser reads back the text
                m = {"role": "assistant", "content": parsed["content"], "tool_calls": [
                    {"type": "function", "function": c} for c in calls]}
                checked += 1
            openai.append(m)
        assert tokenizer.apply_chat_template(openai, tools=chat.tools, tokenize=False) == as_text
    assert checked > 30


def test_bad_input_is_a_clear_error(tmp_path):
    proc = run_main(data_prepare_toolcall.main, ["--source", "xlam", "--input", tmp_path / "missing.json", "--output",
                                tmp_path / "o.jsonl"])
    assert proc.returncode == 2 and "missing.json: no such file" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"query\": ", encoding="utf-8")
    proc = run_main(data_prepare_toolcall.main, ["--source", "xlam", "--input", bad, "--output",
                                                 tmp_path / "o.jsonl"])
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    empty = write_json(tmp_path / "e.json", [{"query": "q"}])
    proc = run_main(data_prepare_toolcall.main, ["--source", "xlam", "--input", empty, "--output",
                                                 tmp_path / "o.jsonl"])
    assert proc.returncode == 2 and "no usable records" in proc.stderr and "bad_record" in proc.stderr
