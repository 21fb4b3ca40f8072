"""scripts/eval_tool_call.py (scripts/evals/tool_call.py) and scripts/toolcall/tool_mocks.py: metrics on hand-made predictions against hand-computed values,
reply parsing, the safe calculator, the multi-round loop with replayed results, an OpenAI endpoint through the
official client, native weights through the Engine, the tool SFT stage of train_full_sft.py, and the learning test:
tool SFT on a small generated set lifts tool-name accuracy and JSON validity on held-out cases."""
import argparse
import ast
import inspect
import json
import random
import time
from pathlib import Path

import pytest
import torch

from conftest import run_main
from model.checkpoint import load_tokenizer, save_weights
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from scripts import eval_tool_call
from scripts.evals import tool_call as ev
from scripts.toolcall import tool_mocks
from scripts.data_prepare_toolcall import main as prepare_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


# ----------------------------------------------------------------------------------------------- metrics

def _c(name, **args):
    return {"name": name, "arguments": args}


def test_metrics_on_hand_made_predictions_equal_hand_computed_values():
    A = ev.score_case([_c("calc", expression="1+2")], {"calls": [_c("calc", expression="1+2")], "invalid_blocks": 0},
                      "结果是 3", [{"expression": "1+2", "result": 3}], "算 1+2")
    B = ev.score_case([_c("weather", city="北京", unit="celsius")],
                      {"calls": [_c("weather", city="北京")], "invalid_blocks": 1},
                      None, [{"city": "北京", "temperature": 20, "mock": True}], "北京天气")
    C = ev.score_case([_c("search", query="x")], {"calls": [], "invalid_blocks": 0}, "不知道", [], "搜 x")
    D = ev.score_case([], {"calls": [], "invalid_blocks": 0}, "你好", [], "你好")
    E = ev.score_case([], {"calls": [], "invalid_blocks": 1}, "<tool_call>", [], "谢谢")
    assert (A["detected"], A["json_valid"], A["name_correct"], A["exact"], A["uses_result"]) == (True,) * 5
    # "1+2" is in the question, so only the 3 counts as taken from the result
    assert (B["detected"], B["json_valid"], B["name_correct"], B["exact"], B["uses_result"]) == \
        (True, False, True, False, False)
    assert (B["key_tp"], B["key_pred"], B["key_expected"]) == (1, 1, 2)
    assert (C["detected"], C["json_valid"], C["name_correct"], C["exact"], C["uses_result"]) == \
        (False, False, False, False, None)
    assert D["no_call_correct"] is True and E["no_call_correct"] is False and D["detected"] is None
    s = ev.aggregate([A, B, C, D, E])
    assert s == {"cases": 5, "should_call": 3, "should_not_call": 2, "call_detection": 0.6667,
                 "no_call_accuracy": 0.5, "json_validity": 0.3333, "tool_name_accuracy": 0.6667,
                 "argument_exact_match": 0.3333, "argument_key_f1": 0.6667,  # P = 2/2, R = 2/4
                 "final_uses_result": 0.5, "result_cases": 2}
    # argument order and key order do not matter; a repeated call counts as two
    two = [_c("w", city="a", unit="c"), _c("w", city="b")]
    F = ev.score_case(two, {"calls": [_c("w", city="b"), {"name": "w", "arguments": {"unit": "c", "city": "a"}}],
                            "invalid_blocks": 0}, None, [], "")
    G = ev.score_case(two, {"calls": [_c("w", city="b")] * 2, "invalid_blocks": 0}, None, [], "")
    assert F["exact"] and F["key_tp"] == 3 and not G["exact"] and G["name_correct"] and G["key_tp"] == 1


def test_reply_parsing_counts_invalid_and_unclosed_blocks():
    text = ('先查一下。\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
            '<tool_call>\n{bad json}\n</tool_call>\n<tool_call>\n{"name": "g"')
    r = ev.parse_reply_text(text)
    assert r.calls == [_c("f", a=1)] and r.invalid_blocks == 2
    assert r.content.startswith("先查一下。") and "<tool_call>\n{bad json}\n</tool_call>" in r.content
    r = ev.reply_from_api_message({"content": None, "tool_calls": [
        {"function": {"name": "f", "arguments": '{"a": 2}'}}, {"function": {"name": "g", "arguments": "{oops"}}]})
    assert r.calls == [_c("f", a=2)] and r.invalid_blocks == 1 and r.content == ""


# -------------------------------------------------------------------------------------------- calculator

def test_calculator_parses_arithmetic_and_refuses_huge_work_quickly():
    assert tool_mocks.calculate("(3+4)*5") == 35
    assert tool_mocks.calculate("（12＋7）×3") == 57 and tool_mocks.calculate("7/2") == 3.5
    assert tool_mocks.calculate("2^10 - -3 % 2") == 1023 and tool_mocks.calculate("2**64") == 2 ** 64
    for expr in ["9**9**9**9", "10**400", "(10**60)**6", "999999**60", "9" * 301, "1e308*10", "1/0", "2**-1/0",
                 "__import__('os').system('true')", "a+1", "[1]*10", "1 if 1 else 2", "()", "", "(" * 40 + "1"]:
        start = time.perf_counter()
        with pytest.raises(tool_mocks.CalcError):
            tool_mocks.calculate(expr)
        assert time.perf_counter() - start < 0.05, expr
    assert "error" in tool_mocks.calculator("9**9**9**9") and tool_mocks.calculator("1+1")["result"] == 2
    source = inspect.getsource(tool_mocks)
    calls = {n.func.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"eval", "exec", "compile"}


def test_mocks_answer_bad_arguments_with_errors_not_exceptions():
    assert tool_mocks.run_tool("get_weather", {"town": "x"})["error"].startswith("bad arguments")
    assert tool_mocks.run_tool("get_weather", "北京")["error"] == "arguments must be a JSON object"
    assert tool_mocks.run_tool("nope", {}) == {"error": "unknown tool 'nope'"}
    assert tool_mocks.run_tool("search", {"query": "vLLM", "top_k": 1})["results"][0]["title"] == "vLLM"
    assert tool_mocks.run_tool("search", {"query": "x", "top_k": "2"})["error"].startswith("top_k")
    assert "error" in tool_mocks.run_tool("get_time", {"timezone": "Mars/Base"})
    w = tool_mocks.run_tool("get_weather", {"city": "Oslo", "unit": "fahrenheit"})
    assert w == tool_mocks.get_weather("Oslo", "fahrenheit") and w["mock"] is True


# ---------------------------------------------------------------------------------------- the round loop

class Scripted:
    """A backend replying from a list of texts, one per round, recording what it was sent."""
    name = "scripted"

    def __init__(self, *texts):
        self.texts, self.seen = list(texts), []

    def replies(self, convs):
        self.seen.append([json.loads(json.dumps(m)) for m in convs[0][0]])
        return [ev.parse_reply_text(self.texts.pop(0)) for _ in convs]


def heldout_row():
    tools = [{"type": "function", "function": json.loads(json.dumps(t))} for t in
             json.loads((ROOT / "scripts/tools_example.json").read_text(encoding="utf-8"))[:1]]
    record = {"word": "画蛇添足", "explanation": "比喻做了多余的事。"}
    return {"conversations": [
        {"role": "system", "content": "你是 MiniMind。", "functions": [t["function"] for t in tools]},
        {"role": "user", "content": "「画蛇添足」是什么意思？"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "lookup_idiom", "arguments": {"word": "画蛇添足"}}'
                                         '\n</tool_call>'},
        {"role": "tool", "content": json.dumps(record, ensure_ascii=False)},
        {"role": "assistant", "content": "比喻做了多余的事。"}]}


def test_loop_replays_recorded_results_feeds_them_back_and_scores_the_final_answer():
    (case,) = ev.cases_from_rows([heldout_row()])
    assert case.expected == [_c("lookup_idiom", word="画蛇添足")] and [m["role"] for m in case.messages] == \
        ["system", "user"]
    backend = Scripted('<tool_call>\n{"name": "lookup_idiom", "arguments": {"word": "画蛇添足"}}\n</tool_call>',
                       "意思是：比喻做了多余的事。")
    records, summary = ev.evaluate(backend, [case], max_rounds=3)
    second = backend.seen[1]
    assert second[-2]["calls"][0]["name"] == "lookup_idiom" and second[-1]["role"] == "tool"
    assert json.loads(second[-1]["content"]) == {"word": "画蛇添足", "explanation": "比喻做了多余的事。"}
    assert records[0]["final_answer"] == "意思是：比喻做了多余的事。" and len(records[0]["rounds"]) == 2
    assert summary["heldout"]["argument_exact_match"] == 1.0 and summary["heldout"]["final_uses_result"] == 1.0
    # a model that keeps calling stops at max_rounds with no final answer
    looping = Scripted(*['<tool_call>\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>'] * 2)
    records, summary = ev.evaluate(looping, [case], max_rounds=2)
    assert records[0]["final_answer"] is None and summary["all"]["tool_name_accuracy"] == 0.0
    assert records[0]["rounds"][0]["results"] == [{"expression": "1+1", "result": 2}]


def test_suite_covers_the_documented_kinds():
    cases = ev.suite_cases()
    kinds = {"call": 0, "no_call": 0, "multi": 0}
    for c in cases:
        kinds["no_call" if not c.expected else "multi" if len(c.expected) > 1 else "call"] += 1
        offered = {t["function"]["name"] for t in c.tools}
        assert {e["name"] for e in c.expected} <= offered, c.id
    assert kinds["no_call"] >= 4 and kinds["multi"] >= 2 and {c.lang for c in cases} == {"zh", "en"}
    assert any(isinstance(v, int) for c in cases for e in c.expected for v in e["arguments"].values())


# ------------------------------------------------------------------------------------------- endpoints

def test_endpoint_through_the_openai_client_writes_jsonl_and_table(tmp_path):
    from test_web_tool_page import StubServer
    out = tmp_path / "api.jsonl"
    with StubServer() as stub:
        proc = run_main(eval_tool_call.main, ["--base_url", stub.base_url, "--data_path", "none", "--out", out,
                                  "--concurrency", 4])
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    tail = lines[-1]
    assert len(lines) == len(ev.SUITE) + 1 and tail["backend"].startswith("openai ")
    s = tail["summary"]["suite"]
    # the stub calls the first offered tool every time and then quotes its result
    assert s["call_detection"] == 1.0 and s["no_call_accuracy"] == 0.0 and s["json_validity"] == 1.0
    assert s["final_uses_result"] == 1.0
    assert "call_detection" in proc.stdout and "suite" in proc.stdout


def test_native_weights_through_the_engine(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=1))
    save_weights(model, tmp_path / "tool_sft_64.pth", argparse.Namespace())
    heldout = tmp_path / "h.jsonl"
    heldout.write_text(json.dumps(heldout_row(), ensure_ascii=False) + "\n", encoding="utf-8")
    # no --out: the results go to --save_dir (issue 32: they went to out/ whatever --save_dir said)
    out = tmp_path / "tool_eval_tool_sft.jsonl"
    proc = run_main(eval_tool_call.main, ["--save_dir", tmp_path, "--device", "cpu", "--data_path", heldout, "--max_new_tokens",
                              8, "--max_rounds", 2])
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and str(out) in proc.stdout, proc.stdout
    tail = json.loads(out.read_text(encoding="utf-8").splitlines()[-1])
    assert tail["backend"] == "engine" and tail["summary"]["all"]["cases"] == len(ev.SUITE) + 1
    proc = run_main(eval_tool_call.main, ["--save_dir", tmp_path, "--device", "cpu", "--data_path", tmp_path / "nope.jsonl"])
    assert proc.returncode == 2 and "data_prepare_toolcall.py" in proc.stderr


# ------------------------------------------------------------------------------------ tool SFT + learning

CITIES = ["Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Cairo", "Lima", "Oslo", "Seoul", "Delhi", "Dubai",
          "Sydney", "Toronto", "Boston", "Miami", "Dallas", "Denver", "Austin", "Vienna", "Prague", "Dublin", "Lisbon",
          "Athens", "Warsaw", "Moscow", "Beijing", "Shanghai", "Bangkok", "Manila", "Hanoi", "Nairobi", "Lagos",
          "Quito", "Havana", "Panama", "Zurich", "Geneva", "Munich", "Milan"]


def generated_xlam(path, n=300, seed=0):
    """A small xLAM-layout set: two short tools offered in random order, a weather or an arithmetic question."""
    rng = random.Random(seed)
    weather = {"name": "weather", "parameters": {"city": {"type": "str"}}}
    calc = {"name": "calc", "parameters": {"expr": {"type": "str"}}}
    rows = []
    for i in range(n):
        tools = [weather, calc] if rng.random() < 0.5 else [calc, weather]
        if rng.random() < 0.5:
            city = rng.choice(CITIES)
            q, a = rng.choice(["Weather in {}?", "Is it raining in {}?"]).format(city), _c("weather", city=city)
        else:
            e = f"{rng.randint(2, 99)}{rng.choice('+-*')}{rng.randint(2, 99)}"
            q, a = rng.choice(["What is {}?", "Compute {}."]).format(e), _c("calc", expr=e)
        rows.append({"id": i, "query": q, "tools": json.dumps(tools), "answers": json.dumps([a])})
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_train_full_sft_runs_the_tool_stage_from_full_sft(tmp_path, tokenizer):
    """The documented stage: --from_weight full_sft --save_weight tool_sft on prepared data (2 steps)."""
    from trainer.train_full_sft import main as sft_main
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    save_weights(model, tmp_path / "full_sft_64.pth", argparse.Namespace())
    data = tmp_path / "sft_tool_call.jsonl"
    assert run_main(prepare_main, ["--source", "xlam", "--input", generated_xlam(tmp_path / "x.json", 40),
                                   "--output", data]).returncode == 0
    proc = run_main(sft_main, ["--data_path", data, "--from_weight", "full_sft", "--save_weight", "tool_sft",
                               "--hidden_size", 64, "--num_hidden_layers", 2, "--max_seq_len", 512, "--batch_size", 2,
                               "--max_steps", 2, "--device", "cpu", "--save_dir", tmp_path,
                               "--checkpoint_dir", tmp_path / "ck", "--log_interval", 1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    side = json.loads((tmp_path / "tool_sft_64.json").read_text())
    assert side["train_args"]["from_weight"] == "full_sft" and side["train_args"]["save_weight"] == "tool_sft"


def train_on_assistant_tokens(model, dataset, steps: int, batch: int, lr: float, seed: int = 0):
    """The SFT loss (cross-entropy on the labelled assistant tokens) with logits computed only where a label is:
    the 6400-wide lm_head over every prompt position is most of the cost on a CPU, and the loss is the same."""
    rows = [dataset[i] for i in range(len(dataset))]
    length = max(int((lab != -100).nonzero().max()) + 1 for _, lab in rows)
    ids = torch.stack([x[:length] for x, _ in rows])
    labels = torch.stack([y[:length] for _, y in rows])
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        pick = torch.randint(0, len(rows), (batch,), generator=g)
        x, y = ids[pick], labels[pick][:, 1:]
        keep = y != -100
        hidden = model.model(x)[0][:, :-1][keep]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden), y[keep])
        for group in opt.param_groups:  # linear warmup over 10 steps, then constant
            group["lr"] = lr * min(1.0, (step + 1) / 10)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return model.eval(), loss.item()


@pytest.mark.slow
def test_tool_sft_teaches_tool_calling_on_held_out_cases(tmp_path, tokenizer):
    """Before: a fresh tiny model. After: the same model trained on the generated set's training split. Scored on
    the held-out split, whose calls (city / expression) never occur in training."""
    from dataset.lm_dataset import SFTDataset
    data = tmp_path / "sft_tool_call.jsonl"
    proc = run_main(prepare_main, ["--source", "xlam", "--input", generated_xlam(tmp_path / "x.json"), "--output",
                                   data, "--heldout_ratio", 0.2, "--max_length", 400])
    assert proc.returncode == 0, proc.stderr
    held = [json.loads(x) for x in (tmp_path / "sft_tool_call_heldout.jsonl").read_text().splitlines()]
    cases = ev.cases_from_rows(held)[:24]
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = MiniMindForCausalLM(MiniMindConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                   num_key_value_heads=1))

        def score(m):
            backend = ev.EngineBackend(m, tokenizer, max_new_tokens=48, temperature=0.0, top_p=1.0, batch_size=24)
            return ev.evaluate(backend, cases, max_rounds=1)[1]["all"]

        start = score(model.eval())
        model, loss = train_on_assistant_tokens(model, SFTDataset(data, tokenizer, 400), steps=100, batch=16, lr=5e-3)
        end = score(model)
    finally:
        torch.set_num_threads(before)
    print(f"before {start}\nafter {end}\nfinal loss {loss:.3f}")
    assert end["json_validity"] - start["json_validity"] >= 0.4, (start, end)
    assert end["tool_name_accuracy"] - start["tool_name_accuracy"] >= 0.4, (start, end)
    assert end["call_detection"] >= start["call_detection"]
