"""scripts/eval_tool_call.py --bfcl_dir (scripts/evals/bfcl.py): the BFCL v3 reader on small files written here, the
AST checker's rules one by one (name, required, unknown, types, int-for-float, accepted values, "" = may be left
out, string normalising, parallel in any order, irrelevance), metrics from scripted replies against hand-computed
values, bad folders and lines named, the command on native weights through the Engine, and (where the bfcl-eval
package can be imported) the same verdicts as BFCL's own checker on BFCL's own data."""
import argparse
import collections
import copy
import importlib.util
import json
import random
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import run_main
from model.checkpoint import save_weights
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from model.runtime import UserError
from scripts import eval_tool_call
from scripts.evals import bfcl
from scripts.evals.tool_call import parse_reply_text

GCD = {"name": "math.gcd", "description": "Greatest common divisor.",
       "parameters": {"type": "dict", "properties": {"a": {"type": "integer", "description": "first"},
                                                     "b": {"type": "integer", "description": "second"}},
                      "required": ["a", "b"]}}
AREA = {"name": "circle_area", "description": "Area of a circle.",
        "parameters": {"type": "dict", "properties": {"radius": {"type": "float", "description": "radius"},
                                                      "unit": {"type": "string", "description": "length unit"}},
                       "required": ["radius"]}}
WEATHER = {"name": "weather.get", "description": "Weather of a city.",
           "parameters": {"type": "dict", "properties": {
               "city": {"type": "string", "description": "city"},
               "days": {"type": "array", "items": {"type": "integer"}, "description": "days ahead"},
               "options": {"type": "dict", "description": "flags", "properties": {
                   "metric": {"type": "boolean", "description": "metric units"}}}},
               "required": ["city"]}}

# (category, id, question, functions, ground truth or None)
CASES = [
    ("simple", "simple_0", "GCD of 12 and 18?", [GCD], [{"math.gcd": {"a": [12], "b": [18]}}]),
    ("simple", "simple_1", "Area of a circle of radius 2 m?", [AREA],
     [{"circle_area": {"radius": [2.0], "unit": ["m", "meters", ""]}}]),
    ("multiple", "multiple_0", "Weather in New York?", [GCD, WEATHER, AREA],
     [{"weather.get": {"city": ["New York", "NYC"], "days": [[1, 2], ""], "options": [{"metric": [True, ""]}, ""]}}]),
    ("parallel", "parallel_0", "GCD of 4 and 6, and of 10 and 15?", [GCD],
     [{"math.gcd": {"a": [4], "b": [6]}}, {"math.gcd": {"a": [10], "b": [15]}}]),
    ("parallel_multiple", "parallel_multiple_0", "GCD of 8 and 12, and the area of a circle of radius 1.5",
     [GCD, AREA], [{"math.gcd": {"a": [8], "b": [12]}}, {"circle_area": {"radius": [1.5], "unit": [""]}}]),
    ("irrelevance", "irrelevance_0", "Who wrote Hamlet?", [GCD], None),
    ("irrelevance", "irrelevance_1", "Tell me a joke.", [AREA], None),
]


def write_bfcl(folder, cases=CASES, extra=()):
    """The layout of docs/_brief: DIR/BFCL_v3_<cat>.json and DIR/possible_answer/BFCL_v3_<cat>.json, JSON Lines."""
    (folder / "possible_answer").mkdir(parents=True, exist_ok=True)
    by = {}
    for cat, cid, q, fns, gt in cases:
        by.setdefault(cat, []).append((cid, q, fns, gt))
    for cat, rows in by.items():
        (folder / f"BFCL_v3_{cat}.json").write_text("".join(json.dumps(
            {"id": cid, "question": [[{"role": "user", "content": q}]], "function": fns}) + "\n"
            for cid, q, fns, _ in rows), encoding="utf-8")
        if cat != "irrelevance":
            (folder / "possible_answer" / f"BFCL_v3_{cat}.json").write_text("".join(json.dumps(
                {"id": cid, "ground_truth": gt}) + "\n" for cid, _, _, gt in rows), encoding="utf-8")
    for name in extra:
        (folder / name).write_text("", encoding="utf-8")
    return folder


def _c(name, **args):
    return {"name": name, "arguments": args}


def case(cid):
    cat, cid, q, fns, gt = next(c for c in CASES if c[1] == cid)
    return bfcl.BfclCase(cid, cat, [{"role": "user", "content": q}], fns, gt)


def check(cid, *calls, invalid=0, loose=True):
    return bfcl.check_case(case(cid), list(calls), invalid, loose)


# ---------------------------------------------------------------------------------------------------- checker

def test_a_matching_call_passes_and_a_wrong_name_fails():
    assert check("simple_0", _c("math.gcd", a=12, b=18)) is None
    assert "function name 'math_gcd'" in check("simple_0", _c("math_gcd", a=12, b=18))
    # multiple: the right function among several offered, judged by the expected one's document
    assert check("multiple_0", _c("weather.get", city="NYC")) is None
    assert "expected 'weather.get'" in check("multiple_0", _c("circle_area", radius=1.0))


def test_required_unknown_and_count_rules():
    assert check("simple_0", _c("math.gcd", a=12)) == "missing required parameter 'b'"
    assert check("simple_0", _c("math.gcd", a=12, b=18, c=1)) == "unexpected parameter 'c'"
    assert check("simple_0", _c("math.gcd", a=12, b=18), _c("math.gcd", a=12, b=18)) == "2 call(s), expected 1"
    assert check("simple_0") == "0 call(s), expected 1"
    # a parameter the function declares but the answer does not list is unknown too (BFCL's rule)
    only_radius = bfcl.BfclCase("r", "simple", [], [AREA], [{"circle_area": {"radius": [1.5]}}])
    assert bfcl.check_case(only_radius, [_c("circle_area", radius=1.5, unit="m")], 0) == "unexpected parameter 'unit'"


def test_values_must_be_among_the_accepted_ones():
    assert "'b': 19 is not among the accepted [18]" in check("simple_0", _c("math.gcd", a=12, b=19))
    assert check("multiple_0", _c("weather.get", city="Boston")).startswith("parameter 'city': 'Boston'")
    assert check("multiple_0", _c("weather.get", city="NYC", days=[2, 1])) is not None  # lists keep their order
    assert check("multiple_0", _c("weather.get", city="NYC", days=[1, 2])) is None
    # dict values key by key; a key the answer does not know fails
    assert check("multiple_0", _c("weather.get", city="NYC", options={"metric": True})) is None
    assert check("multiple_0", _c("weather.get", city="NYC", options={"metric": False})) is not None
    assert check("multiple_0", _c("weather.get", city="NYC", options={"colour": True})) is not None


def test_optional_parameters_may_be_left_out_only_when_the_answer_lists_empty_string():
    assert check("simple_1", _c("circle_area", radius=2.0)) is None  # unit accepts ""
    assert check("simple_1", _c("circle_area", radius=2.0, unit="meters")) is None
    gt = [{"circle_area": {"radius": [2.0], "unit": ["m"]}}]
    strict = bfcl.BfclCase("s", "simple", [], [AREA], gt)
    assert bfcl.check_case(strict, [_c("circle_area", radius=2.0)], 0) == \
        "parameter 'unit' left out, but the answer has no default for it"


def test_types_int_for_float_accepted_but_not_the_other_way_or_bool_for_int():
    assert check("simple_1", _c("circle_area", radius=2)) is None  # JSON's 2 for a float 2.0
    assert check("simple_0", _c("math.gcd", a=12.0, b=18)) == "parameter 'a': expected integer, got float 12.0"
    assert check("simple_0", _c("math.gcd", a=True, b=18)).startswith("parameter 'a': expected integer, got boolean")
    assert check("simple_0", _c("math.gcd", a="12", b=18)).startswith("parameter 'a': expected integer, got string")
    # array items: the declared item type (or the accepted list's own), and no int-for-float there, as in BFCL
    series = {"name": "mean", "parameters": {"type": "dict", "required": ["xs"], "properties": {
        "xs": {"type": "array", "items": {"type": "float"}, "description": "numbers"}}}}
    mean = bfcl.BfclCase("m", "simple", [], [series], [{"mean": {"xs": [[1.5, 2.0]]}}])
    assert bfcl.check_case(mean, [_c("mean", xs=[1.5, 2.0])], 0) is None
    assert bfcl.check_case(mean, [_c("mean", xs=[1.5, 2])], 0) == \
        "parameter 'xs': expected array of float, got [1.5, 2]"
    assert bfcl.check_case(mean, [_c("mean", xs=["1.5", "2.0"])], 0).startswith("parameter 'xs': expected array")
    # BFCL's "variable" rule: an answer written in another type than declared is compared in its own type
    gt = [{"math.gcd": {"a": ["x"], "b": [18]}}]
    assert bfcl.check_case(bfcl.BfclCase("v", "simple", [], [GCD], gt), [_c("math.gcd", a="x", b=18)], 0) is None


def test_strings_compare_after_bfcl_normalising_and_exact_match_does_not():
    call = _c("weather.get", city="new-york")
    assert check("multiple_0", call) is None
    assert check("multiple_0", call, loose=False) is not None
    assert bfcl.normalise("April 1, 2024") == bfcl.normalise("april 1 2024") == "april12024"


def test_parallel_calls_match_in_any_order_each_used_once():
    first, second = _c("math.gcd", a=4, b=6), _c("math.gcd", a=10, b=15)
    assert check("parallel_0", first, second) is None and check("parallel_0", second, first) is None
    assert check("parallel_0", first, first).startswith("no reply call matches expected call 1")
    assert check("parallel_0", first) == "1 call(s), expected 2"
    mixed = [_c("circle_area", radius=1.5), _c("math.gcd", a=8, b=12)]
    assert check("parallel_multiple_0", *mixed) is None


def test_irrelevance_passes_without_a_parsed_call_and_broken_blocks_fail_the_others():
    assert check("irrelevance_0") is None
    assert check("irrelevance_0", invalid=1) is None  # BFCL: an undecodable call is no call
    assert check("irrelevance_0", _c("math.gcd", a=1, b=2)) == "called math.gcd although no offered function fits"
    assert check("simple_0", _c("math.gcd", a=12, b=18), invalid=1).startswith("1 <tool_call> block(s)")
    relevance = bfcl.BfclCase("r", "live_relevance", [], [GCD], None)  # any call passes, none fails
    assert bfcl.check_case(relevance, [_c("math.gcd", a=1)], 0) is None
    assert bfcl.check_case(relevance, [], 1) == "no call, although an offered function fits"


def test_tools_shown_to_the_model_use_json_schema_types():
    tool = bfcl.to_tool(WEATHER)
    params = tool["function"]["parameters"]
    assert tool["type"] == "function" and params["type"] == "object"
    assert params["properties"]["options"]["type"] == "object" and params["properties"]["days"]["items"] == \
        {"type": "integer"}
    assert bfcl.to_tool(AREA)["function"]["parameters"]["properties"]["radius"]["type"] == "number"
    assert WEATHER["parameters"]["type"] == "dict"  # the checker keeps BFCL's own document


# ------------------------------------------------------------------------------------------------------ reader

def test_reader_joins_questions_with_answers_and_skips_other_categories(tmp_path):
    folder = write_bfcl(tmp_path / "bfcl", extra=["BFCL_v3_java.json", "BFCL_v3_multi_turn_base.json"])
    notes = []
    cases = bfcl.read_bfcl_dir(folder, log=notes.append)
    assert [c.id for c in cases] == [c[1] for c in CASES]
    assert [c.kind for c in cases] == ["simple", "simple", "multiple", "parallel", "parallel", "irrelevance",
                                       "irrelevance"]
    assert cases[0].messages == [{"role": "user", "content": "GCD of 12 and 18?"}]
    assert cases[3].ground_truth == CASES[3][4] and cases[5].ground_truth is None
    assert "BFCL_v3_java.json" in notes[0] and "BFCL_v3_multi_turn_base.json" in notes[0]
    assert len(bfcl.read_bfcl_dir(folder, max_per_category=1, log=notes.append)) == 5


def _error(folder) -> str:
    with pytest.raises(UserError) as e:
        bfcl.read_bfcl_dir(folder, log=lambda _: None)
    return str(e.value)


def test_bad_folders_and_lines_are_named(tmp_path):
    assert "no such folder" in _error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no BFCL_v3_<category>.json (or v4) files" in _error(tmp_path / "empty")
    folder = write_bfcl(tmp_path / "a")
    (folder / "possible_answer" / "BFCL_v3_parallel.json").unlink()
    msg = _error(folder)
    assert "possible_answer/BFCL_v3_parallel.json: missing" in msg
    folder = write_bfcl(tmp_path / "b")
    path = folder / "possible_answer" / "BFCL_v3_simple.json"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert "BFCL_v3_simple.json:2 (id simple_1): no entry with this id" in _error(folder)
    folder = write_bfcl(tmp_path / "c")
    with (folder / "BFCL_v3_simple.json").open("a") as f:
        f.write("{oops\n")
    assert "BFCL_v3_simple.json:3: not valid JSON" in _error(folder)


@pytest.mark.parametrize("change, problem", [
    (lambda row: row["function"][0]["parameters"]["properties"]["a"].update(type="int32"), "of type 'int32'"),
    (lambda row: row.update(question=[[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]),
     "2 turns"),
    (lambda row: row.update(function=[]), "'function' must be a non-empty list"),
    (lambda row: row["question"][0][0].pop("content"), "'role' and 'content' strings"),
])
def test_malformed_cases_are_rejected_with_file_line_and_id(tmp_path, change, problem):
    row = {"id": "simple_0", "question": [[{"role": "user", "content": "q"}]],
           "function": [json.loads(json.dumps(GCD))]}
    change(row)
    (tmp_path / "possible_answer").mkdir()
    (tmp_path / "BFCL_v3_simple.json").write_text(json.dumps(row) + "\n")
    (tmp_path / "possible_answer" / "BFCL_v3_simple.json").write_text(json.dumps(
        {"id": "simple_0", "ground_truth": [{"math.gcd": {"a": [1], "b": [2]}}]}) + "\n")
    msg = _error(tmp_path)
    assert "BFCL_v3_simple.json:1 (id simple_0)" in msg and problem in msg


def test_an_answer_naming_a_function_the_case_does_not_offer_is_rejected(tmp_path):
    bad = [("simple", "simple_0", "q", [GCD], [{"math.lcm": {"a": [1]}}])]
    assert "calls 'math.lcm', which is not among the case's functions" in _error(write_bfcl(tmp_path, bad))


# ----------------------------------------------------------------------------------------------------- metrics

class Scripted:
    """Replies from a dict id-by-question, recording the tools it was offered."""
    name = "scripted"

    def __init__(self, by_question):
        self.by_question, self.seen = by_question, []

    def replies(self, convs):
        self.seen += convs
        return [parse_reply_text(self.by_question[msgs[-1]["content"]]) for msgs, _ in convs]


def block(name, **args):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": args})}\n</tool_call>'


def test_metrics_from_scripted_replies_equal_hand_computed_values(tmp_path):
    cases = bfcl.read_bfcl_dir(write_bfcl(tmp_path), log=lambda _: None)
    replies = {
        "GCD of 12 and 18?": block("math.gcd", a=12, b=18),                        # pass, exact
        "Area of a circle of radius 2 m?": block("circle_area", radius=2, unit="M"),  # pass (normalised), not exact
        "Weather in New York?": block("weather.get", town="NYC"),                 # right name, fails
        "GCD of 4 and 6, and of 10 and 15?": block("math.gcd", a=10, b=15) + block("math.gcd", a=4, b=6),  # pass
        "GCD of 8 and 12, and the area of a circle of radius 1.5": block("math.gcd", a=8, b=12) + "<tool_call>{x",
        "Who wrote Hamlet?": "Shakespeare.",                                         # pass
        "Tell me a joke.": block("circle_area", radius=1.0),                        # fail
    }
    backend = Scripted(replies)
    records, summary = bfcl.evaluate(backend, cases)
    assert [r["score"]["ast_pass"] for r in records] == [True, True, False, True, False, True, False]
    assert records[2]["score"]["reason"] == "missing required parameter 'city'"
    assert backend.seen[0][1] == [bfcl.to_tool(GCD)]
    a = summary["all"]
    # should-call cases: 5; detected 5; json valid 4 (the unclosed block); names right 4 (parallel_multiple has one)
    assert a == {"cases": 7, "ast_accuracy": round(4 / 7, 4), "call_detection": 1.0, "json_validity": 0.8,
                 "tool_name_accuracy": 0.8, "argument_exact_match": 0.4, "irrelevance_accuracy": 0.5,
                 "parallel_accuracy": 0.5, "category_mean": round((1.0 + 0 + 1 + 0 + 0.5) / 5, 4)}
    assert summary["simple"]["ast_accuracy"] == 1.0 and summary["simple"]["argument_exact_match"] == 0.5
    assert summary["irrelevance"]["call_detection"] is None and summary["parallel"]["parallel_accuracy"] == 1.0
    text = bfcl.table(summary)
    assert text.splitlines()[0] == "| metric | simple | multiple | parallel | parallel_multiple | irrelevance | all |"
    assert "| ast_accuracy | 1.000 | 0.000 | 1.000 | 0.000 | 0.500 | 0.571 |" in text


def test_the_command_on_native_weights_writes_cases_summary_and_table(tmp_path):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=1))
    save_weights(model, tmp_path / "tool_sft_64.pth", argparse.Namespace())
    folder = write_bfcl(tmp_path / "bfcl")
    proc = run_main(eval_tool_call.main, ["--save_dir", tmp_path, "--device", "cpu", "--bfcl_dir", folder,
                                          "--max_new_tokens", 6])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "bfcl_eval_tool_sft.jsonl"
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in lines[:-1]] == [c[1] for c in CASES]
    tail = lines[-1]
    assert tail["backend"] == "engine" and tail["summary"]["all"]["cases"] == len(CASES)
    # 6 random tokens never close a <tool_call>: every should-call case fails, both irrelevance cases pass
    assert tail["summary"]["all"]["ast_accuracy"] == round(2 / 7, 4)
    assert "| ast_accuracy |" in proc.stdout and str(out) in proc.stdout
    proc = run_main(eval_tool_call.main, ["--save_dir", tmp_path, "--device", "cpu", "--bfcl_dir", tmp_path / "x"])
    assert proc.returncode == 2 and "--bfcl_dir" in proc.stderr and "no such folder" in proc.stderr


# ------------------------------------------------------------------------------- against BFCL's own checker

def _replies_from(gt, rng):
    """A reply built from a ground truth: one accepted value per parameter, optional ones left out at random."""
    calls = []
    for entry in gt:
        name, params = next(iter(entry.items()))
        args = {p: copy.deepcopy(rng.choice([o for o in opts if o != ""])) for p, opts in params.items()
                if [o for o in opts if o != ""] and not ("" in opts and rng.random() < 0.3)}
        calls.append({"name": name, "arguments": args})
    return calls


def _mutated(calls, kind, rng):
    """The reply with one kind of mistake (or harmless change) BFCL's checker has a rule for."""
    calls = copy.deepcopy(calls)
    c = rng.choice(calls)
    args, keys = c["arguments"], list(c["arguments"])
    k = rng.choice(keys) if keys else None
    if kind == "drop" and k:
        del args[k]
    elif kind == "extra":
        args["zz_extra"] = 1
    elif kind == "name":
        c["name"] += "_x"
    elif kind == "value" and k:
        v = args[k]
        args[k] = (not v if isinstance(v, bool) else v + 1 if isinstance(v, (int, float)) else v + "q"
                   if isinstance(v, str) else v + v[:1] if isinstance(v, list) and v else "q")
    elif kind == "type" and k:
        args[k] = 7 if isinstance(args[k], str) else str(args[k])
    elif kind in ("int_float", "array_int"):
        swap = lambda x: int(x) if isinstance(x, float) and x.is_integer() else float(x) if type(x) is int else x
        for key in keys:
            if kind == "int_float":
                args[key] = swap(args[key])
            elif isinstance(args[key], list):
                args[key] = [swap(x) for x in args[key]]
    elif kind == "case":
        for key in keys:
            if isinstance(args[key], str):
                args[key] = args[key].upper() + " "
    elif kind == "order":
        calls.reverse()
    elif kind == "count":
        calls.append(copy.deepcopy(calls[0]))
    return calls


@pytest.mark.slow  # ~10 s: 2,351 real cases x 11 replies through both checkers
def test_verdicts_equal_bfcl_eval_own_ast_checker_on_its_own_data(monkeypatch):
    """Only where the bfcl-eval package can be imported (it is not a dependency: its requirements pull in every API
    client). To run it: pip download bfcl-eval==2026.3.23 --no-deps -d /tmp/b && unzip -q /tmp/b/*.whl -d /tmp/b/x
    && PYTHONPATH=/tmp/b/x python3 -m pytest -q tests/test_eval_bfcl.py -k bfcl_eval"""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None:
        pytest.skip("bfcl-eval is not importable; see this test's docstring for the command")
    # the package's model_config imports every API client; the AST checker only needs one flag from it
    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = {"ours": types.SimpleNamespace(underscore_to_dot=False)}
    monkeypatch.setitem(sys.modules, "bfcl_eval.constants.model_config", stub)
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    cases = [c for c in bfcl.read_bfcl_dir(Path(spec.origin).parent / "data", log=lambda _: None) if c.ground_truth]
    rng = random.Random(0)
    verdicts = collections.Counter()
    for case in cases:
        base = _replies_from(case.ground_truth, rng)
        for kind in ("none", "drop", "extra", "name", "value", "type", "int_float", "array_int", "case", "order",
                     "count"):
            calls = base if kind == "none" else _mutated(base, kind, rng)
            theirs = ast_checker(case.functions, [{c["name"]: c["arguments"]} for c in calls], case.ground_truth,
                                 Language.PYTHON, case.category, "ours")["valid"]
            ours = bfcl.check_case(case, calls, 0) is None
            assert ours == theirs, (case.id, kind, calls, case.ground_truth)
            verdicts[(kind, theirs)] += 1
    print(dict(verdicts))
    assert len(cases) > 2000 and verdicts[("none", True)] > 0.95 * len(cases)
    assert verdicts[("extra", False)] == verdicts[("name", False)] == verdicts[("count", False)] == len(cases)
    assert verdicts[("drop", False)] > 1000 and verdicts[("case", True)] > 2000
