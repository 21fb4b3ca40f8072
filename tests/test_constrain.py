"""Grammar-constrained decoding in the engine (model/constrain.py + the mask hook in model/engine.py): a random,
untrained model under a constraint writes only schema-valid JSON and valid tool calls; rows with different
constraints (or none) decode in one batch, and a free row gets exactly the tokens it gets alone."""
import json

import jsonschema
import pytest
import torch

from model import constrain
from model.engine import Engine, SamplingParams, unpack_token_bitmask
from scripts.bench import constrain as bench_constrain
from scripts.evals.tool_call import EngineBackend
from tests.test_model import tiny_model
from tests.test_serve import BROKEN, WEATHER_TOOL, train_tiny_model
from trainer.trainer_utils import load_tokenizer

pytestmark = pytest.mark.skipif(not constrain.available(), reason="llguidance is not installed")

# enums, integers and numbers with bounds, nested objects, arrays, required and optional fields; strings carry a
# maxLength so an untrained model, which would happily write one string forever, ends within the token budget
SCHEMAS = {
    "enum_and_integer": {"type": "object", "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["unit", "days"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 6},
        "budget": {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0, "maximum": 999},
                                                    "cash": {"type": "boolean"}},
                   "required": ["amount", "cash"], "additionalProperties": False}},
        "required": ["city", "budget"], "additionalProperties": False},
    "array": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
        "note": {"type": "string", "maxLength": 4}},
        "required": ["tags"], "additionalProperties": False},
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["北京", "上海", "Paris"]},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": -99, "maximum": 99},
                                         "b": {"type": "integer", "minimum": -99, "maximum": 99}},
        "required": ["a", "b"]}}},
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return constrain.vocabulary(tokenizer)


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


PROMPT = [1, 320, 411, 2, 1, 1078]  # any ids: the model is untrained


def sample(model, constraint, seeds, max_new=160, temperature=1.0):
    """One sampled completion per seed (each row its own seeded generator)."""
    engine = Engine(model, eos_token_id=2)
    params = [SamplingParams(max_new_tokens=max_new, temperature=temperature, top_p=1.0, seed=s,
                             constraint=constraint) for s in seeds]
    return engine.generate([PROMPT] * len(seeds), params)


def test_bitmask_unpacks_in_the_library_layout():
    bits = torch.zeros(2, 2, dtype=torch.int32)
    bits[0, 0] = 1 << 5
    bits[1, 1] = -(1 << 31)  # bit 31 of word 1: token 63
    allowed = unpack_token_bitmask(bits, 64)
    assert allowed[0].nonzero().flatten().tolist() == [5]
    assert allowed[1].nonzero().flatten().tolist() == [63]


@pytest.mark.slow  # sampling many rows of an untrained model
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_model_writes_only_schema_valid_json(model, tokenizer, vocab, name):
    schema = SCHEMAS[name]
    out = sample(model, constrain.json_constraint(vocab, schema), seeds=range(10), max_new=120)
    stopped = 0
    for c in out:
        text = tokenizer.decode(c.token_ids)
        if c.finish_reason == "stop":  # eos came only where the grammar allowed it: after the whole value
            jsonschema.validate(json.loads(text), schema)
            stopped += 1
        else:  # an untrained model may write digits of a JSON number until the budget ends: still on the grammar
            assert c.finish_reason == "length" and _grammar_accepts_prefix(vocab, schema, c.token_ids), text
    assert stopped >= len(out) // 2, [tokenizer.decode(c.token_ids) for c in out if c.finish_reason != "stop"]
    free = sample(model, None, seeds=range(4), max_new=30)  # the same model without the constraint: not JSON
    assert not any(_is_json(tokenizer.decode(c.token_ids)) for c in free)


def _grammar_accepts_prefix(vocab, schema, ids):
    state = constrain.json_constraint(vocab, schema).start()
    for t in ids:
        state.consume(t)
    return not state.failed


def _is_json(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


@pytest.mark.slow  # sampling many rows of an untrained model
def test_json_object_greedy_and_any_object(model, tokenizer, vocab):
    out = sample(model, constrain.json_constraint(vocab, None), seeds=range(4), max_new=120)
    for c in out:
        if c.finish_reason == "stop":
            assert isinstance(json.loads(tokenizer.decode(c.token_ids)), dict)
    greedy = sample(model, constrain.json_constraint(vocab, SCHEMAS["enum_and_integer"]), seeds=[0],
                    temperature=0)[0]
    jsonschema.validate(json.loads(tokenizer.decode(greedy.token_ids)), SCHEMAS["enum_and_integer"])


def _calls(text):
    """The calls in a reply that continues after `<tool_call>`: split at the tags, every block must parse."""
    blocks = text.split("</tool_call>")
    calls = []
    for block in blocks:
        block = block.replace("<tool_call>", "").strip()
        if block:
            calls.append(json.loads(block))
    return calls


@pytest.mark.slow  # sampling many rows of an untrained model
@pytest.mark.parametrize("choice", ["required", "add"])
def test_forced_tool_calls_are_always_valid_calls(model, tokenizer, vocab, choice):
    """After the server's `<tool_call>\\n` prefill: one valid call and eos (parallel_tool_calls false), or valid
    calls each closed before the next opens (parallel; an untrained model may chain calls up to its budget)."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    names = set(schemas) if choice == "required" else {choice}
    for parallel in (False, True):
        constraint = constrain.tool_call_constraint(vocab, tokenizer, TOOLS, choice, parallel)
        out = sample(model, constraint, seeds=range(8), max_new=120)
        for c in out:
            text = tokenizer.decode(c.token_ids)
            if not parallel:
                assert c.finish_reason == "stop" and text.endswith("</tool_call>") and text.count("<tool_call>") == 0
            closed = text if c.finish_reason == "stop" else text[:text.rindex("</tool_call>") + len("</tool_call>")]
            calls = _calls(closed)
            assert calls and (len(calls) == 1 or parallel), text
            for call in calls:
                assert set(call) == {"name", "arguments"} and call["name"] in names, text
                jsonschema.validate(call["arguments"], dict(schemas[call["name"]], additionalProperties=False))


@pytest.mark.slow  # sampling many rows of an untrained model
def test_auto_tool_choice_is_free_until_the_model_opens_a_call(model, tokenizer, vocab):
    """A lazy grammar: no mask before `<tool_call>`; after it, one valid call, then free text again."""
    auto = constrain.tool_call_constraint(vocab, tokenizer, TOOLS, "auto")
    open_id = constrain.token_id(tokenizer, "<tool_call>")
    state = auto.start()
    assert not state.needs_mask()
    state.consume(tokenizer("好的")["input_ids"][0])
    assert not state.needs_mask()
    state.consume(open_id)
    assert state.needs_mask()
    # a row that has just opened a call: every sample closes a valid call and the row is free after it
    out = sample(model, constrain.Resumed(auto, [open_id]), seeds=range(6), max_new=100)
    for c in out:
        text = tokenizer.decode(c.token_ids)
        head = text.split("</tool_call>")[0]
        call = json.loads(head.strip())
        assert call["name"] in ("get_weather", "add"), text
        assert "</tool_call>" in text or c.finish_reason == "length"


@pytest.mark.slow  # sampling many rows of an untrained model
def test_tools_with_response_format_give_that_json_or_calls(model, tokenizer, vocab):
    """tool_choice auto with response_format json_schema: the whole reply is either the schema's JSON or calls."""
    schema = SCHEMAS["enum_and_integer"]
    constraint = constrain.tool_call_constraint(vocab, tokenizer, TOOLS, "auto", answer_schema=schema)
    kinds = set()
    for c in sample(model, constraint, seeds=range(8), max_new=120):
        text = tokenizer.decode(c.token_ids)
        if text.startswith("<tool_call>"):
            kinds.add("calls")
            closed = text if c.finish_reason == "stop" else text[:text.rindex("</tool_call>") + 12]
            assert all(call["name"] in ("get_weather", "add") for call in _calls(closed)), text
        else:
            kinds.add("json")
            assert c.finish_reason == "stop", text
            jsonschema.validate(json.loads(text), schema)
    assert kinds == {"calls", "json"}  # these seeds give both (the test would pass vacuously with one)


@pytest.mark.slow  # sampling many rows of an untrained model
def test_free_rows_decode_the_same_next_to_constrained_rows(model, tokenizer, vocab):
    """Mixed batch: greedy and seeded free rows get the tokens they get alone; constrained rows stay valid."""
    engine = Engine(model, eos_token_id=2)
    json_c = constrain.json_constraint(vocab, SCHEMAS["nested"])
    call_c = constrain.tool_call_constraint(vocab, tokenizer, TOOLS, "required")
    free_greedy = SamplingParams(max_new_tokens=40, temperature=0, stop_ids=[])
    free_sampled = SamplingParams(max_new_tokens=40, temperature=0.9, top_p=0.9, seed=7, stop_ids=[])
    prompts = [PROMPT, PROMPT[:4], PROMPT, PROMPT[2:]]
    params = [free_greedy, SamplingParams(max_new_tokens=120, temperature=1.0, seed=1, constraint=json_c),
              free_sampled, SamplingParams(max_new_tokens=120, temperature=0, constraint=call_c)]
    mixed = engine.generate(prompts, params)
    assert mixed[0].token_ids == engine.generate([prompts[0]], free_greedy)[0].token_ids
    assert mixed[2].token_ids == engine.generate([prompts[2]], free_sampled)[0].token_ids
    if mixed[1].finish_reason == "stop":
        jsonschema.validate(json.loads(tokenizer.decode(mixed[1].token_ids)), SCHEMAS["nested"])
    assert _calls(tokenizer.decode(mixed[3].token_ids))


def test_graph_shaped_decoding_applies_the_mask_outside_the_forward(model, tokenizer, vocab):
    """The bucketed decode path (what CUDA graphs replay; here on CPU) with its in-graph greedy head: constrained
    rows must not take the unmasked greedy pick, and free rows keep it."""
    engine = Engine(model, eos_token_id=2)
    constraint = constrain.json_constraint(vocab, SCHEMAS["enum_and_integer"])
    plain = engine.generate([PROMPT, PROMPT[1:]], [SamplingParams(max_new_tokens=60, temperature=0, constraint=c)
                                                   for c in (constraint, None)])
    decoder = engine.batch(4, 128)
    decoder.static_shapes = True
    rows = decoder.add([PROMPT], SamplingParams(max_new_tokens=60, temperature=0, constraint=constraint)) + \
        decoder.add([PROMPT[1:]], SamplingParams(max_new_tokens=60, temperature=0))
    got = {r: [] for r in rows}
    while not decoder.idle:
        for r, t in decoder.step():
            got[r].append(t)
    assert got[rows[0]] == plain[0].token_ids and got[rows[1]] == plain[1].token_ids
    jsonschema.validate(json.loads(tokenizer.decode(got[rows[0]])), SCHEMAS["enum_and_integer"])


def test_chunked_steps_feed_the_grammar_every_step(model, tokenizer, vocab):
    """sync_every > 1 (the CUDA default): tokens stay on the device for several steps, yet each constrained row's
    grammar sees every token before its next mask."""
    constraint = constrain.json_constraint(vocab, SCHEMAS["array"])
    params = SamplingParams(max_new_tokens=80, temperature=0, constraint=constraint)
    one = Engine(model, eos_token_id=2, sync_every=1).generate([PROMPT, PROMPT[1:]], params)
    eight = Engine(model, eos_token_id=2, sync_every=8).generate([PROMPT, PROMPT[1:]], params)
    assert [c.token_ids for c in one] == [c.token_ids for c in eight]
    for c in eight:
        jsonschema.validate(json.loads(tokenizer.decode(c.token_ids)), SCHEMAS["array"])


def test_schema_the_library_cannot_compile_is_a_grammar_error(vocab):
    with pytest.raises(constrain.GrammarError, match="cannot be compiled"):
        constrain.json_constraint(vocab, {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})


def test_response_format_shapes():
    assert constrain.response_schema(None) is None
    assert constrain.response_schema({"type": "text"}) is None
    assert constrain.response_schema({"type": "json_object"}) == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert constrain.response_schema({"type": "json_schema", "json_schema": {"name": "x", "schema": schema,
                                                                              "strict": True}}) == schema
    for bad, text in [({"type": "yaml"}, "not one of"), ({"type": "json_schema"}, "json_schema is required"),
                      ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "name must be"),
                      ({"type": "json_schema", "json_schema": {"name": "a", "schema": [1]}}, "schema must be")]:
        with pytest.raises(constrain.GrammarError, match=text):
            constrain.response_schema(bad)


def test_missing_library_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(constrain, "llguidance", None)
    with pytest.raises(constrain.UserError, match="pip install llguidance"):
        constrain.require("response_format")


@pytest.mark.slow  # trains the memorising tiny model of tests/test_serve.py (seconds)
def test_eval_tool_call_constrained_scores_the_repaired_call(tokenizer):
    """scripts/eval_tool_call.py --constrained 1: the model that memorised a broken call (tests/test_serve.py) is
    scored with an invalid block without constraints and with a valid get_weather call with them."""
    model = train_tiny_model(tokenizer)
    replies = {}
    for constrained in (False, True):
        backend = EngineBackend(model, tokenizer, 40, 0.0, 1.0, 4, constrained)
        (replies[constrained],) = backend.replies([(BROKEN, [WEATHER_TOOL])])
    assert replies[False].invalid_blocks == 1 and not replies[False].calls
    assert replies[True].invalid_blocks == 0 and [c["name"] for c in replies[True].calls] == ["get_weather"]


@pytest.mark.slow  # decodes four modes on a random tiny model
def test_bench_constrain_prints_one_json_line_per_result(capsys):
    bench_constrain.run(bench_constrain.build_parser().parse_args(
        ["--device", "cpu", "--preset", "tiny", "--repeats", "1", "--new_tokens", "8"]))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    check = lines[0]
    assert check["check"] == "constrained_outputs_valid" and check["valid"] == check["stopped"] > 0
    modes = {r["mode"]: r for r in lines[1:]}
    assert set(modes) == {"free", "json_schema", "tool_required", "tool_auto"}
    assert modes["json_schema"]["masked_fraction"] > 0 and modes["tool_auto"]["masked_fraction"] == 0
    assert all(r["per_token_ms"] > 0 and 0 <= r["constraint_share"] < 1 for r in modes.values())


def test_a_tokenizer_that_splits_the_tags_is_detected(tokenizer):
    assert constrain.has_tool_tags(tokenizer)
    split = lambda text, add_special_tokens=False: {"input_ids": [1] * len(text)}  # noqa: E731
    assert not constrain.has_tool_tags(split)
    with pytest.raises(constrain.UserError, match="no single token"):
        constrain.token_id(split, "<tool_call>")
