"""The real tool library (scripts/toolcall/library) and the `local` source built on it (scripts/toolcall/synth.py):
schemas in JSON Schema shape, generated arguments valid and carried by the request, results recomputed by the real
function, known values, the held-out tool families absent from the training file, every kind present, rows
within --max_length, the BFCL v3 copy of the held-out set, determinism, clear errors for bad flags, and model
calls of library tools run live only within their bounds."""
import json
import random
import re
import time

import jsonschema
import pytest

from conftest import run_main
from dataset.lm_dataset import SFTDataset
from model.checkpoint import load_tokenizer
from scripts import data_prepare_toolcall
from scripts.evals import tool_call as ev
from scripts.toolcall import library, synth
from scripts.toolcall.data import count_tokens
from scripts.toolcall.library.base import placeholders, show
from scripts.toolcall.tool_mocks import run_tool


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def build(folder, *args):
    out = folder / "sft_tool_call.jsonl"
    proc = run_main(data_prepare_toolcall.main, ["--output", out, *args])
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    return proc, out, summary


def read_jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    proc, out, summary = build(folder, "--max_samples", 400, "--heldout_ratio", 0.25, "--seed", 3)
    assert proc.returncode == 0, proc.stderr
    return out, summary


# ------------------------------------------------------------------------------------------------ the library

def test_library_size_names_and_schema_shape():
    assert len(library.TOOLS) >= 150
    assert sum(len(f.tools) for f in library.FAMILIES) == len(library.TOOLS)  # no name given twice
    assert set(library.HELDOUT) | set(library.TRAIN) == set(library.TOOLS)
    assert not set(library.HELDOUT) & set(library.TRAIN)
    assert 0.2 <= len(library.HELDOUT) / len(library.TOOLS) <= 0.3  # about a quarter, whole families
    families = {t.family for t in library.TOOLS.values()}
    assert set(library.HELDOUT_FAMILIES) <= families
    for name, tool in library.TOOLS.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]{1,63}", name), name  # OpenAI's function-name rule, snake_case
        for lang in ("zh", "en"):
            for brief in (False, True):
                schema = tool.schema(lang, brief)
                fn = schema["function"]
                assert schema["type"] == "function" and fn["name"] == name
                params = fn["parameters"]
                jsonschema.Draft202012Validator.check_schema(params)
                assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
                assert all(("description" in p) != brief for p in params["properties"].values())
            text = fn["description"]
            assert re.search(r"[\u4e00-\u9fff]" if lang == "zh" else r"[A-Za-z]{3}", text), (name, text)
        required = [k for k, p in tool.params.items() if p.required]
        for template in (*tool.ask_zh, *tool.ask_en):
            assert set(required) <= placeholders(template) <= set(tool.params), (name, template)


def test_generated_arguments_fit_the_schema_and_results_are_recomputed():
    """Every tool, both languages: the arguments validate against its own schema, each one is written in the
    request, and running the function again on them gives the recorded result."""
    rng = random.Random(0)
    for name, tool in library.TOOLS.items():
        for lang in ("zh", "en"):
            for _ in range(3):
                request, args, result, answer = tool.sample(rng, lang)
                jsonschema.validate(args, tool.schema(lang)["function"]["parameters"])
                assert tool.run(json.loads(json.dumps(args))) == json.loads(json.dumps(result)), name
                assert answer and request
                for key, value in args.items():
                    assert show(value, lang) in request, (name, key, value, request)


KNOWN = [  # (tool, arguments, result) worked out by hand or from the standards
    ("gcd", {"a": 12, "b": 18}, 6), ("lcm", {"a": 4, "b": 6}, 12), ("factorial", {"n": 5}, 120),
    ("combinations", {"n": 5, "k": 2}, 10), ("prime_factors", {"n": 360}, [2, 2, 2, 3, 3, 5]),
    ("stats_median", {"numbers": [3, 1, 2, 10]}, 2.5), ("mode", {"data": [1, 2, 2, 3, 3]}, [2, 3]),
    ("simplify_fraction", {"fraction": "6/8"}, "3/4"), ("add_fractions", {"a": "1/2", "b": "1/3"}, "5/6"),
    ("decimal_round", {"value": "2.675", "places": 2}, "2.68"),
    ("decimal_round", {"value": "2.665", "places": 2, "mode": "half_even"}, "2.66"),
    ("to_binary", {"n": 10}, "0b1010"), ("parse_int_base", {"digits": "ff", "base": 16}, 255),
    ("convert_temperature", {"value": 100, "from_unit": "celsius", "to_unit": "fahrenheit"}, 212),
    ("convert_length", {"value": 1, "from_unit": "mile", "to_unit": "km"}, 1.6093),
    ("days_between", {"start": "2024-01-01", "end": "2024-03-01"}, 60),
    ("weekday_of", {"date": "2024-12-25"}, {"weekday": "Wednesday", "iso_weekday": 3}),
    ("add_months", {"date": "2024-01-31", "months": 1}, "2024-02-29"),
    ("convert_timezone", {"datetime": "2024-07-01 12:00", "from_tz": "Asia/Shanghai", "to_tz": "Europe/London"},
     "2024-07-01 05:00"),
    ("chinese_zodiac", {"year": 2024}, {"zh": "龙", "en": "Dragon"}), ("sexagenary_year", {"year": 2024}, "甲辰"),
    ("star_sign", {"month": 3, "day": 21}, {"en": "Aries", "zh": "白羊座"}),
    ("md5_hash", {"text": "abc"}, "900150983cd24fb0d6963f7d28e17f72"),
    ("base64_encode", {"text": "hello"}, "aGVsbG8="), ("punycode_domain", {"domain": "münchen.com"},
                                                       "xn--mnchen-3ya.com"),
    ("to_traditional", {"text": "汉字"}, "漢字"), ("to_simplified", {"text": "漢字"}, "汉字"),
    ("unicode_name", {"char": "€"}, "EURO SIGN"), ("numeric_value", {"char": "五"}, 5),
    ("network_info", {"network": "192.168.1.7/24"},
     {"network": "192.168.1.0", "netmask": "255.255.255.0", "broadcast": "192.168.1.255", "addresses": 256}),
    ("ip_to_integer", {"address": "10.0.0.1"}, 167772161),
    ("hex_to_rgb", {"hex_color": "#ff8800"}, {"red": 255, "green": 136, "blue": 0}),
    ("permission_string", {"mode": "755"}, "-rwxr-xr-x"),
    ("http_status", {"code": 404}, {"phrase": "Not Found", "description": "Nothing matches the given URI"}),
    ("parse_url", {"url": "https://example.com/a/b?x=1"},
     {"scheme": "https", "host": "example.com", "path": "/a/b", "query": "x=1"}),
    ("calculator", {"expression": "(3+4)*5"}, {"result": 35}),
    ("lookup_idiom", {"word": "西窗剪烛"}, {"word": "西窗剪烛", "pinyin": "xī chuāng jiǎn zhú",
                                           "explanation": "原指思念远方妻子，盼望相聚夜语◇泛指亲友聚谈。"}),
    ("poem_next_line", {"line": "乱山残雪夜"}, {"line": "乱山残雪夜", "next": "孤烛异乡春", "title": "巴山道中除夜书怀",
                                                "author": "崔涂"}),
    ("lookup_char", {"char": "不在字典里的字"}, {}),
]


@pytest.mark.parametrize("name,args,expected", KNOWN, ids=[k[0] + str(i) for i, k in enumerate(KNOWN)])
def test_tools_compute_known_values(name, args, expected):
    assert library.TOOLS[name].run(args) == expected


# ------------------------------------------------------------------------------------------ the local source

def test_heldout_tools_never_reach_the_training_file(built):
    out, summary = built
    text = out.read_text(encoding="utf-8")
    assert [name for name in library.HELDOUT if name in text] == []
    held = read_jsonl(out.with_name("sft_tool_call_heldout.jsonl"))
    offered = {f["function"]["name"] for r in held for f in r["conversations"][0].get("functions", [])}
    assert offered and offered <= set(library.HELDOUT)
    assert summary["tools_heldout"] == len(library.HELDOUT) and summary["tools_train"] == len(library.TRAIN)


def test_every_kind_is_present_and_rows_fit_max_length(built, tokenizer):
    out, summary = built
    assert set(summary["kinds_train"]) == set(synth.KIND_MIX) == set(summary["kinds_heldout"])
    assert summary["train"] + summary["heldout"] <= 400 and summary["train"] > 250
    rows = read_jsonl(out)
    assert all(count_tokens(r, tokenizer) <= 512 for r in rows[:120])
    assert summary["tokens_train"]["max"] <= 512
    held = read_jsonl(out.with_name("sft_tool_call_heldout.jsonl"))
    by_kind = {}
    for r in held:
        by_kind.setdefault(r["kind"], []).append(r)
    calls = lambda r: synth._calls_of(r)  # noqa: E731
    assert all(len(calls(r)) == 1 and len(r["conversations"][0]["functions"]) == 1 for r in by_kind["single"])
    assert all(len(calls(r)) == 1 and len(r["conversations"][0]["functions"]) >= 2 for r in by_kind["multiple"])
    assert all(len(calls(r)) >= 2 and r["conversations"][2]["content"].count("<tool_call>") >= 2
               for r in by_kind["parallel"])
    assert all(not calls(r) and r["conversations"][0]["functions"] for r in by_kind["irrelevance"])
    assert all(r["conversations"][-1]["role"] == "assistant" and "<tool_call>" not in r["conversations"][-1]["content"]
               and any(m["role"] == "tool" for m in r["conversations"]) for r in by_kind["multi_round"])


def test_tool_turns_hold_the_real_results(built):
    """Re-run every call of the training file through the library: the tool turn after it is exactly the result."""
    out, _ = built
    checked = 0
    for row in read_jsonl(out):
        conv = row["conversations"]
        for i, m in enumerate(conv):
            if m["role"] != "assistant" or "<tool_call>" not in m["content"]:
                continue
            calls = synth._calls_of({"conversations": [m]})
            results = [x["content"] for x in conv[i + 1:i + 1 + len(calls)] if x["role"] == "tool"]
            for call, text in zip(calls, results):
                assert library.TOOLS[call["name"]].run(call["arguments"]) == json.loads(text), call
                checked += 1
    assert checked > 100


def test_sft_dataset_trains_the_rows_and_the_eval_reads_the_heldout_file(built, tokenizer):
    out, _ = built
    ds = SFTDataset(out, tokenizer, max_length=512)
    ids, labels = ds[0]
    assert (labels != -100).any()
    held = read_jsonl(out.with_name("sft_tool_call_heldout.jsonl"))
    cases = ev.cases_from_rows(held)
    assert len(cases) == len(held)
    for case, row in zip(cases, held):
        assert case.expected == synth._calls_of({"conversations": [next(
            m for m in row["conversations"] if m["role"] == "assistant")]})
        if any(m["role"] == "tool" for m in row["conversations"]):  # replayed results are the real ones
            for call in case.expected:
                assert case.recorded.get(call["name"], call["arguments"]) == library.TOOLS[call["name"]].run(
                    call["arguments"])


def test_bfcl_copy_of_the_heldout_set(built):
    out, summary = built
    folder = out.with_name("sft_tool_call_bfcl")
    held = read_jsonl(out.with_name("sft_tool_call_heldout.jsonl"))
    expect = {"simple": "single", "multiple": "multiple", "irrelevance": "irrelevance"}
    total = 0
    for cat in ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance"):
        questions = read_jsonl(folder / f"BFCL_v3_{cat}.json")
        assert summary["bfcl"][cat] == len(questions)
        total += len(questions)
        if cat in expect:
            assert len(questions) == sum(r["kind"] == expect[cat] for r in held)
        for q in questions:
            assert q["id"].startswith(cat + "_") and len(q["question"]) == 1 and q["question"][0][0]["role"] == "user"
            for fn in q["function"]:
                assert fn["parameters"]['type'] == "dict" and '"type": "number"' not in json.dumps(fn)
                assert set(fn["parameters"]["required"]) <= set(fn["parameters"]["properties"])
        if cat == "irrelevance":
            assert not (folder / "possible_answer" / f"BFCL_v3_{cat}.json").exists()
            continue
        answers = {a["id"]: a["ground_truth"] for a in read_jsonl(folder / "possible_answer" / f"BFCL_v3_{cat}.json")}
        assert set(answers) == {q["id"] for q in questions}
        for q in questions:
            offered = {fn["name"]: fn for fn in q["function"]}
            for entry in answers[q["id"]]:
                (name, params), = entry.items()
                assert name in offered
                assert set(offered[name]["parameters"]["required"]) <= set(params)
                for key, accepted in params.items():
                    assert isinstance(accepted, list) and accepted
                    if key not in offered[name]["parameters"]["required"]:
                        assert "" in accepted or len(accepted) == 1
            if cat in ("parallel", "parallel_multiple"):
                assert len(answers[q["id"]]) >= 2
    assert summary["bfcl"]["simple"] > 0 and summary["bfcl"]["multiple"] > 0 and total == sum(summary["bfcl"].values())


def test_ground_truth_accepts_an_omitted_optional_parameter():
    assert synth.ground_truth({"name": "round_number", "arguments": {"x": 2.5}}) == \
        {"round_number": {"x": [2.5], "digits": [0, ""]}}
    assert synth.ground_truth({"name": "round_number", "arguments": {"x": 2.5, "digits": 2}}) == \
        {"round_number": {"x": [2.5], "digits": [2]}}
    assert synth.bfcl_schema(library.TOOLS["power"].schema("en"))["parameters"]["properties"]["base"]["type"] == "float"


def test_same_seed_same_files_other_seed_other_rows(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((a, 5), (b, 5), (c, 6)):
        folder.mkdir()
        proc, _, _ = build(folder, "--max_samples", 60, "--seed", seed)
        assert proc.returncode == 0, proc.stderr
    for name in ("sft_tool_call.jsonl", "sft_tool_call_heldout.jsonl", "sft_tool_call_bfcl/BFCL_v3_simple.json",
                 "sft_tool_call_bfcl/possible_answer/BFCL_v3_simple.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "sft_tool_call.jsonl").read_bytes() != (c / "sft_tool_call.jsonl").read_bytes()


@pytest.mark.parametrize("flags,message", [
    (["--input", "x.jsonl"], "reads no --input"),
    (["--heldout_ratio", "0"], "--heldout_ratio 0.0"),
    (["--max_samples", "3"], "--max_samples 3"),
    (["--max_length", "64"], "--max_length 64"),
])
def test_bad_flags_are_clear_errors(tmp_path, flags, message):
    proc, out, _ = build(tmp_path, "--source", "local", *flags)
    assert proc.returncode == 2 and message in proc.stderr and not out.exists()


def test_unknown_source_is_refused_by_the_parser(tmp_path):
    proc, _, _ = build(tmp_path, "--source", "nope")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ------------------------------------------------------------------------------------------- live model calls

def test_model_calls_run_live_within_the_bounds():
    """run_tool (the eval's multi-round loop) computes library tools on the model's arguments, and refuses quickly
    what would be slow, huge or not what the schema says."""
    assert run_tool("gcd", {"a": 12, "b": 18}) == 6
    assert run_tool("lookup_idiom", {"word": "西窗剪烛"})["pinyin"] == "xī chuāng jiǎn zhú"
    recorded = ev.RecordedTools()
    recorded.add("gcd", {"a": 4, "b": 6}, 99)  # a replayed result still wins over the live one
    assert run_tool("gcd", {"a": 4, "b": 6}, recorded) == 99 and run_tool("gcd", {"a": 4, "b": 8}, recorded) == 4
    refused = {
        ("gcd", '{"a": "12", "b": 18}'): "not of type 'integer'",
        ("gcd", '{"a": 1}'): "required property",
        ("gcd", '{"a": 1, "b": 2, "c": 3}'): "Additional properties",
        ("factorial", '{"n": 1000000}'): "beyond what this tool computes live",
        ("factorial", '{"n": 900}'): "longer than 2000 characters",
        ("list_permutations", '{"items": ["a", "b", "c", "d", "e", "f", "g", "h"]}'): "beyond",
        ("regex_test", '{"pattern": "(a+)+$", "text": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"}'): "exponential time",
        ("reverse_text", json.dumps({"text": "x" * 5000})): "too large",
        ("timestamp_to_datetime", '{"timestamp": 999999999999}'): "out of range",
        ("convert_timezone", '{"datetime": "2024-01-01 10:00", "from_tz": "Mars/Base", "to_tz": "UTC"}'): "Mars/Base",
    }
    for (name, args), words in refused.items():
        t0 = time.perf_counter()
        result = run_tool(name, json.loads(args))
        assert set(result) == {"error"} and words in result["error"], (name, result)
        assert time.perf_counter() - t0 < 1.0, name
