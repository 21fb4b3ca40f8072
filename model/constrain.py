"""Grammar-constrained decoding: the token masks that make a reply valid JSON, a valid tool call, or a schema's JSON.

The engine (model/engine.py) asks each constrained row for a bitmask of allowed tokens before sampling and feeds it
the token it picked; this module builds those rows' states with llguidance (https://github.com/guidance-ai/llguidance),
an optional dependency: chosen over xgrammar and outlines-core by measured mask time with this 6400-token byte-level
BPE (docs/LOG.md, session 7: grammar) and because its wheel is abi3 (one file for every Python >= 3.9, what a GPU
machine without a package registry needs).

Three kinds of constraint, each a factory whose `start()` gives one row its own state:
- `Whole(grammar)`: the whole reply follows the grammar, then eos (response_format json_object / json_schema, and
  tool_choice "required" / a named function after the server's `<tool_call>` prefill);
- `Triggered(trigger_id, grammar)`: free text until the model writes the trigger token (`<tool_call>`), then the
  grammar (the call's JSON and `</tool_call>`), then free text again (tool_choice "auto": a lazy grammar); a row in
  free text costs nothing but reading its token back;
- `Resumed(constraint, tokens)`: a constraint whose rows start after `tokens` (a preempted row that rejoins).

JSON is written as the chat template writes it (`tojson`: ", " between items, ": " after keys, no other whitespace),
so a trained model's habits and the grammar agree, and an untrained one cannot pad the reply with spaces forever.
"""
import copy
import json
import logging
from typing import Dict, Iterable, List, Optional

try:  # optional: only constrained requests need it, and the GPU machine may not have it
    import llguidance
    import llguidance.hf
    import llguidance.torch
except ImportError:  # pragma: no cover - exercised by the "missing library" test through a monkeypatch
    llguidance = None

from model.runtime import UserError

log = logging.getLogger("minimind.constrain")

INSTALL_HINT = "pip install llguidance  (requirements-lock.txt pins the version; one abi3 wheel, about 3 MB)"
# how every JSON value is written: the chat template's tojson spacing, and no free whitespace
JSON_STYLE = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
TOOL_CALL, END_TOOL_CALL = "<tool_call>", "</tool_call>"


class GrammarError(ValueError):
    """A schema or grammar the library cannot compile; the message says which part and why."""


def available() -> bool:
    return llguidance is not None


def require(what: str = "constrained decoding") -> None:
    if llguidance is None:
        raise UserError(f"{what} needs the llguidance package, which is not installed: {INSTALL_HINT}")


_VOCABS: Dict[int, object] = {}


def vocabulary(tokenizer):
    """The llguidance view of a Hugging Face tokenizer (token bytes, eos), built once per tokenizer object."""
    require()
    key = id(tokenizer)
    if key not in _VOCABS:
        _VOCABS[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))  # the tokenizer is kept alive with it
    return _VOCABS[key][1]


def token_id(tokenizer, text: str) -> int:
    """The id of a tag that the tokenizer holds as one token (`<tool_call>`); a clear error when it does not."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise UserError(f"the tokenizer has no single token for {text!r} (it splits into {ids}); tool-call "
                        f"constraints need the tag tokens of model/tokenizer.json")
    return ids[0]


def has_tool_tags(tokenizer) -> bool:
    """Whether `<tool_call>` and `</tool_call>` are single tokens (ours are; another tokenizer may split them, and
    then tool calls cannot be constrained, only response_format)."""
    return all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in (TOOL_CALL, END_TOOL_CALL))


# ------------------------------------------------------------------------------------------------- grammars

class Grammar:
    """A compiled grammar (llguidance's Lark dialect) that every row of every request using it shares."""

    def __init__(self, vocab, lark: str, what: str = "grammar"):
        require()
        self.vocab, self.lark = vocab, lark
        self.serialized = llguidance.grammar_from("lark", lark)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(self.serialized, vocab)
        if is_error:
            raise GrammarError(f"{what} cannot be compiled for constrained decoding: {'; '.join(messages)}")
        # compiling the lexer happens on the first matcher; doing it here reports errors before any decoding
        probe = llguidance.LLMatcher(vocab, self.serialized, log_level=0)
        if probe.is_error():
            raise GrammarError(f"{what} cannot be compiled for constrained decoding: {probe.get_error()}")
        self._first = probe

    def matcher(self):
        return self._first.deep_copy()


def _json_rule(schema: dict) -> str:
    """A Lark `%json` rule body for `schema`, written in the template's style."""
    schema = dict(schema)
    schema["x-guidance"] = {**JSON_STYLE, **schema.get("x-guidance", {})}
    return "%json " + json.dumps(schema, ensure_ascii=False)


def closed_objects(schema):
    """A copy of `schema` where objects that list properties but say nothing of others allow no others.

    JSON Schema lets any extra key through by default; a small model under that grammar invents keys the tool
    never reads. OpenAI's strict function calling makes the same choice (additionalProperties false).
    """
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed_objects(v) if k in ("properties", "items", "anyOf", "oneOf", "allOf", "prefixItems", "$defs",
                                        "definitions", "additionalProperties", "not", "then", "else", "if")
           else v for k, v in schema.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: closed_objects(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            out[key] = {k: closed_objects(v) for k, v in schema[key].items()}
    return out


def call_schema(tools: List[dict], only: Optional[str] = None) -> dict:
    """{"name": one of the offered names, "arguments": that tool's parameters}, as one JSON schema (anyOf)."""
    options = []
    for t in tools:
        fn = t.get("function", t)
        if only is not None and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]},
                                                          "arguments": closed_objects(params)},
                        "required": ["name", "arguments"], "additionalProperties": False})
    if not options:
        raise GrammarError(f"no offered tool is named {only!r}")
    return options[0] if len(options) == 1 else {"anyOf": options}


def call_rules(tools: List[dict], open_id: int, close_id: int, only: Optional[str] = None) -> str:
    """Lark rules: `call` (what follows the opening tag: "\\n" JSON "\\n" close tag), `body` (the same after the
    newline: what follows the server's `<tool_call>\\n` prefill) and `more` (further calls: parallel)."""
    return (f"call: \"\\n\" body\n"
            f"calls: call more\n"
            f"body: call_json \"\\n\" <[{close_id}]>\n"
            f"more: (\"\\n\" <[{open_id}]> call)*\n"
            f"call_json: {_json_rule(call_schema(tools, only))}\n")


# ------------------------------------------------------------------------------------------------ row states

class _GrammarState:
    """One row following a grammar to its end, then the eos token.

    llguidance marks a matcher stopped as soon as the grammar cannot be extended (the closing brace of the JSON);
    its mask then allows only eos, which is what the row must write next, so a stopped matcher still masks."""

    def __init__(self, grammar: Grammar):
        self.matcher = grammar.matcher()
        self.eos = grammar.vocab.eos_token
        self.failed = self.done = False

    def needs_mask(self) -> bool:
        return not (self.failed or self.done)

    def fill(self, bitmask, index: int) -> None:
        llguidance.torch.fill_next_token_bitmask(self.matcher, bitmask, index)

    def consume(self, token: int) -> None:
        if self.done or self.failed:
            return
        if self.matcher.is_stopped():
            if token == self.eos:
                self.done = True  # the row goes on only when eos is not a stop id (ignore_eos): freely
                return
        elif self.matcher.consume_token(token) and not self.matcher.is_error():
            return
        # only a token outside the mask gets here (a bug, or a sampler that ignored the mask): say so, and let the
        # row go on unconstrained rather than hand the sampler a row with no allowed token
        self.failed = True
        log.warning("constrained decoding: token %d rejected (%s); the row continues unconstrained",
                    token, self.matcher.get_error() or "the grammar had ended")


class Whole:
    """Constraint: the whole reply follows `grammar`, then the eos token."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar

    def start(self):
        return _GrammarState(self.grammar)


class _TriggeredState:
    def __init__(self, owner: "Triggered"):
        self.owner, self.inner = owner, None

    def needs_mask(self) -> bool:
        return self.inner is not None and self.inner.needs_mask()

    def fill(self, bitmask, index: int) -> None:
        self.inner.fill(bitmask, index)

    def consume(self, token: int) -> None:
        if self.inner is None:
            if token == self.owner.trigger_id:
                self.inner = _GrammarState(self.owner.grammar)
            return
        self.inner.consume(token)
        if self.inner.matcher.is_stopped() or not self.inner.needs_mask():
            self.inner = None  # the call is closed (`</tool_call>` ends the grammar): free text again


class Triggered:
    """Constraint: free text; after `trigger_id` the grammar up to `end_id`; then free text again."""

    def __init__(self, trigger_id: int, end_id: int, grammar: Grammar):
        self.trigger_id, self.end_id, self.grammar = trigger_id, end_id, grammar

    def start(self):
        return _TriggeredState(self)


class Resumed:
    """Constraint whose rows start after `tokens` were already produced (a preempted row rejoining)."""

    def __init__(self, constraint, tokens: Iterable[int]):
        self.constraint, self.tokens = constraint, list(tokens)

    def start(self):
        state = self.constraint.start()
        for t in self.tokens:
            state.consume(t)
        return state


# ------------------------------------------------------------------------------------------------ builders

def json_constraint(vocab, schema: Optional[dict] = None, what: str = "response_format") -> Whole:
    """The whole reply is one JSON value of `schema` (default: any JSON object, OpenAI's json_object)."""
    schema = {"type": "object"} if schema is None else schema
    if not isinstance(schema, dict):
        raise GrammarError(f"{what}: the schema must be a JSON object, got {type(schema).__name__}")
    return Whole(Grammar(vocab, f"start: answer\nanswer: {_json_rule(schema)}\n", what))


def tool_call_constraint(vocab, tokenizer, tools: List[dict], choice="auto", parallel: bool = True,
                         answer_schema: Optional[dict] = None):
    """The constraint for a request offering `tools`.

    choice "auto": free text, each `<tool_call>` the model opens is a valid call of an offered tool (Triggered);
    with `answer_schema` (response_format) the reply is instead either that JSON or calls (Whole).
    choice "required" or a tool's name: the server has already written `<tool_call>` into the prompt; the reply
    continues that call (only the named tool when one is named) and may add more calls when `parallel`.
    """
    open_id, close_id = token_id(tokenizer, TOOL_CALL), token_id(tokenizer, END_TOOL_CALL)
    only = None if choice in ("auto", "required") else choice
    rules = call_rules(tools, open_id, close_id, only)
    if choice == "auto" and answer_schema is None:
        return Triggered(open_id, close_id, Grammar(vocab, "start: call\n" + rules, "tools"))
    if choice == "auto":
        start = f"start: answer | <[{open_id}]> calls\nanswer: {_json_rule(answer_schema)}\n"
        return Whole(Grammar(vocab, start + rules, "tools / response_format"))
    return Whole(Grammar(vocab, f"start: body{' more' if parallel else ''}\n" + rules, "tools"))


def response_schema(response_format: Optional[dict]) -> Optional[dict]:
    """The JSON schema a response_format asks for: None for text, {"type": "object"} for json_object.

    Shapes as OpenAI documents them: {"type": "text"}, {"type": "json_object"}, {"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}, "strict": bool, "description": ...}}. GrammarError names what is
    wrong in a malformed one.
    """
    if not response_format:
        return None
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise GrammarError(f"response_format.type {kind!r} is not one of text, json_object, json_schema")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise GrammarError("response_format.json_schema is required for type json_schema: "
                           "{\"name\": ..., \"schema\": {...}}")
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or \
            not all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        raise GrammarError("response_format.json_schema.name must be 1-64 characters of a-z, A-Z, 0-9, _ and -")
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise GrammarError("response_format.json_schema.schema must be a JSON schema object")
    return copy.deepcopy(schema)
