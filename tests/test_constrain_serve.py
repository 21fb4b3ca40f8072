"""Constrained decoding through the API server: tool_choice "required" / a named function always gives a valid
call and response_format json_object / json_schema always gives parseable, schema-valid JSON, with a random
(untrained) model, through the official openai client, streaming and not; errors are 400s that name the field."""
import argparse
import json
import subprocess
import time

import jsonschema
import openai
import pytest
import torch
from fastapi.testclient import TestClient

from model import constrain
from model.model_minimind import MiniMindForCausalLM
from scripts.serve import api, protocol
from scripts.serve.worker import Job
from tests.test_serve import start_server, stream_reply, tiny_config
from trainer.trainer_utils import load_tokenizer, save_weights

needs_llguidance = pytest.mark.skipif(not constrain.available(), reason="llguidance is not installed")

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "天气", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["北京", "上海", "Paris"]},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 99}},
        "required": ["a", "b"]}}},
]
SCHEMAS = {t["function"]["name"]: dict(t["function"]["parameters"], additionalProperties=False) for t in TOOLS}
ANSWER = {"type": "object", "properties": {"mood": {"enum": ["good", "bad"]},
                                           "score": {"type": "integer", "minimum": 0, "maximum": 10},
                                           "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2}},
          "required": ["mood", "score", "tags"], "additionalProperties": False}
ASK = [{"role": "user", "content": "北京天气怎么样？"}]


def random_model() -> MiniMindForCausalLM:
    torch.manual_seed(5)
    return MiniMindForCausalLM(tiny_config()).eval()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("constrained") / "out"
    save_weights(random_model(), out / "full_sft_64.pth", argparse.Namespace(note="tests/test_constrain_serve.py"))
    srv = start_server(["--save_dir", out, "--constrained", "on"], out.parent / "server.log")
    yield srv
    srv.proc.terminate()
    try:
        srv.proc.wait(15)
    except subprocess.TimeoutExpired:
        srv.proc.kill()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0, timeout=120)


def check_calls(calls, allowed):
    assert calls
    for name, arguments in calls:
        assert name in allowed
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@needs_llguidance
@pytest.mark.slow  # a server subprocess
@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_forced_tool_choice_always_gives_a_valid_call(client, tool_choice):
    allowed = {"get_weather", "add"} if tool_choice == "required" else {"add"}
    for seed in range(6):
        kw = dict(model="m", messages=ASK, tools=TOOLS, tool_choice=tool_choice, temperature=1.0, top_p=1.0,
                  seed=seed, max_tokens=300)
        r = client.chat.completions.create(**kw).choices[0]
        assert r.finish_reason == "tool_calls", r
        check_calls([(c.function.name, c.function.arguments) for c in r.message.tool_calls], allowed)
        s = stream_reply(client, ASK, **{k: v for k, v in kw.items() if k not in ("model", "messages")})
        assert s["finish"] == "tool_calls" and not s["content"]
        check_calls([(c["name"], c["arguments"]) for c in s["tool_calls"].values()], allowed)
    one = client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, tool_choice="required", seed=1,
                                         temperature=1.0, parallel_tool_calls=False, max_tokens=300).choices[0]
    assert len(one.message.tool_calls) == 1


@needs_llguidance
@pytest.mark.slow  # a server subprocess
def test_response_format_json_object_and_json_schema(client):
    for seed in range(4):
        r = client.chat.completions.create(model="m", messages=ASK, seed=seed, temperature=1.0, max_tokens=400,
                                           response_format={"type": "json_object"}).choices[0]
        if r.finish_reason == "stop":
            assert isinstance(json.loads(r.message.content), dict)
        fmt = {"type": "json_schema", "json_schema": {"name": "mood_report", "schema": ANSWER, "strict": True}}
        r = client.chat.completions.create(model="m", messages=ASK, seed=seed, temperature=1.0, max_tokens=200,
                                           response_format=fmt).choices[0]
        assert r.finish_reason == "stop"
        jsonschema.validate(json.loads(r.message.content), ANSWER)
        s = stream_reply(client, ASK, seed=seed, temperature=1.0, max_tokens=200, response_format=fmt)
        assert s["finish"] == "stop" and s["content"] == r.message.content  # same seed, same reply
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=ASK, response_format={
            "type": "json_schema", "json_schema": {"name": "bad", "schema": {"$ref": "#/$defs/nowhere"}}})
    assert e.value.body["param"] == "response_format" and "cannot be compiled" in e.value.body["message"]


def in_process(constrained: str):
    tokenizer = load_tokenizer()
    app = api.create_app(lambda: (random_model(), tokenizer), api.Settings(served_model_name="m",
                                                                           constrained=constrained))
    return TestClient(app)


def wait_ready(client):
    deadline = time.time() + 60
    while client.get("/health").status_code != 200:
        assert time.time() < deadline
        time.sleep(0.05)


def test_without_constraints_response_format_json_is_a_400_that_says_why():
    with in_process("off") as client:
        wait_ready(client)
        r = client.post("/v1/chat/completions", json={"messages": ASK, "response_format": {"type": "json_object"}})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "response_format" and "--constrained off" in err["message"]
        r = client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 3,
                                                       "response_format": {"type": "text"}})
        assert r.status_code == 200
        # unconstrained, a forced call the untrained model breaks is a 500 naming the problem, never text
        r = client.post("/v1/chat/completions", json={"messages": ASK, "tools": TOOLS, "tool_choice": "required",
                                                       "temperature": 0, "max_tokens": 20})
        assert r.status_code == 500 and r.json()["error"]["code"] == "tool_call_invalid", r.text


@needs_llguidance
def test_malformed_response_format_and_unknown_types_are_400s():
    with in_process("auto") as client:
        wait_ready(client)
        for fmt, text in [({"type": "json_schema", "json_schema": {"schema": ANSWER}}, "name must be"),
                          ({"type": "xml"}, "not one of")]:
            r = client.post("/v1/chat/completions", json={"messages": ASK, "response_format": fmt})
            assert r.status_code == 400 and text in r.json()["error"]["message"], r.text
        bad_tool = {"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/$defs/nowhere"}}}
        r = client.post("/v1/chat/completions", json={"messages": ASK, "tools": [bad_tool]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
        assert "cannot be compiled" in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 60, "temperature": 0,
                                                       "response_format": {"type": "json_schema", "json_schema": {
                                                           "name": "m", "schema": ANSWER}}})
        assert r.status_code == 200
        jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), ANSWER)


def test_constrained_on_without_the_library_stops_the_server(monkeypatch):
    monkeypatch.setattr(constrain, "llguidance", None)
    with pytest.raises(constrain.UserError, match="pip install llguidance"):
        api.constraint_vocabulary("on", None)
    vocab, why = api.constraint_vocabulary("auto", None)
    assert vocab is None and "not installed" in why


@needs_llguidance
def test_a_tokenizer_llguidance_cannot_read_turns_constraints_off_or_stops_the_server():
    vocab, why = api.constraint_vocabulary("auto", object())
    assert vocab is None and "cannot read this tokenizer" in why
    with pytest.raises(constrain.UserError, match="--constrained on: llguidance cannot read"):
        api.constraint_vocabulary("on", object())


@needs_llguidance
def test_the_same_tools_compile_once():
    tokenizer = load_tokenizer()
    vocab = constrain.vocabulary(tokenizer)
    req = protocol.ChatCompletionRequest(messages=ASK, tools=TOOLS, tool_choice="required")
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    first = protocol.request_constraint(req, tokenizer, vocab, tools, "")
    assert protocol.request_constraint(req, tokenizer, vocab, tools, "") is first
    other = protocol.ChatCompletionRequest(messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    assert protocol.request_constraint(other, tokenizer, vocab, tools, "") is not first


def test_a_resumed_choice_replays_its_tokens_into_its_grammar():
    """A preempted choice rejoins with prompt + its tokens: its grammar state must start after those tokens."""
    marker = object()
    job = Job("r", [1, 2], 1, 10, 0.0, 1.0, None, False, loop=None, constraint=marker)
    assert job.sampling().constraint is marker
    resumed = job.sampling(5, [7, 8]).constraint
    assert isinstance(resumed, constrain.Resumed) and resumed.constraint is marker and resumed.tokens == [7, 8]
