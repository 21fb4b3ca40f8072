"""The OpenAI chat-completions protocol as this server speaks it: errors, the request schema, the caps checked
before any work, and the prompt (chat template + tokenizer) a request becomes.

Order of the checks, cheapest first, so a hostile request costs little: the gate's body cap (2 MB) -> pydantic
(types, ranges, at most MAX_MESSAGES messages and MAX_TOOLS tools) -> `check_prompt_size` (characters of messages
and tools against --max_prompt_chars, lone surrogates) -> only then `render_prompt`, in a worker thread. Measured
before the caps (issue 27): a 2 MB body with 5,000 tools was templated and tokenized to 957k tokens (6 s of CPU,
up to 780 MB) before it got its 400.
"""
import json
import logging
import threading
from typing import Any, Dict, List, Literal, Optional, Union

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from model import constrain
from model.chat_protocol import TOOL_CALL

log = logging.getLogger("minimind.serve")

# The sampling defaults of eval_llm.py: a small model at OpenAI's temperature 1 / top_p 1 rambles.
DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.85, 0.85
MAX_N = 16  # choices per request; each is a decoding row
# 128 tools is OpenAI's own limit. 512 messages: every message costs at least 5 template tokens, so more than ~400
# cannot fit even a 2,048-token context; the cap only stops lists that exist to make the server work.
MAX_TOOLS, MAX_MESSAGES = 128, 512
MAX_TOOL_CHARS = 8192  # one tool's JSON schema; the largest in scripts/toolcall/tool_mocks.py is under 600 characters


# ------------------------------------------------------------------------------------------------------ errors

class APIError(Exception):
    """An error returned to the client in OpenAI's format: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 type_: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")


def error_body(message: str, type_: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status)


def describe_validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's 422 list of pydantic errors as one OpenAI-style 400 message naming the field."""
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return APIError(400, f"We could not parse the JSON body of your request: {first.get('msg')} "
                             f"(send a JSON object with Content-Type: application/json)")
    param = ".".join(loc) or None
    got = first.get("input")
    if not loc and isinstance(got, (bytes, bytearray, str)):  # e.g. `curl -d` sends a form, not JSON
        return APIError(400, "the request body must be a JSON object sent with Content-Type: application/json")
    shown = json.dumps(got, ensure_ascii=False, default=repr)[:80] if got is not None else ""
    detail = f"{first.get('msg')}" + (f" (got {shown})" if got is not None and not isinstance(got, dict) else "")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return APIError(400, f"{param or 'body'}: {detail}{more}", param=param)


# --------------------------------------------------------------------------------------------- request schema

class FunctionCall(BaseModel):
    name: str
    arguments: str = "{}"  # a JSON string, as OpenAI sends it back


class ToolCall(BaseModel):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. `name`: accepted, not used by the template
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Optional[Union[str, List[Dict[str, Any]]]] = None
    tool_calls: Optional[List[ToolCall]] = None
    tool_call_id: Optional[str] = None
    reasoning_content: Optional[str] = None


class FunctionDef(BaseModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: Optional[str] = None
    parameters: Optional[Dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Optional[str] = None
    messages: List[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # the newer name of max_tokens
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = Field(None, ge=-(2 ** 63), le=2 ** 64 - 1)  # what torch.Generator.manual_seed takes
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    tools: Optional[List[Tool]] = Field(None, max_length=MAX_TOOLS)
    tool_choice: Optional[Union[Literal["none", "auto", "required"], NamedToolChoice]] = None
    parallel_tool_calls: Optional[bool] = None
    user: Optional[str] = None
    # OpenAI fields this server does not implement: accepted only at their neutral values
    frequency_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    presence_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    logprobs: Optional[bool] = None
    logit_bias: Optional[Dict[str, float]] = None
    response_format: Optional[Dict[str, Any]] = None
    # vLLM's extensions: keep generating past the eos token (benchmarks), and extra chat-template variables
    ignore_eos: bool = False
    chat_template_kwargs: Optional[Dict[str, Any]] = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops


def reject_unsupported(req: ChatCompletionRequest) -> None:
    """400 for OpenAI features asked for but not implemented, rather than quietly ignoring them."""
    if req.frequency_penalty or req.presence_penalty:
        raise APIError(400, "frequency_penalty / presence_penalty are not supported by this server; leave them "
                            "out or at 0", param="frequency_penalty" if req.frequency_penalty else "presence_penalty")
    if req.logprobs:
        raise APIError(400, "logprobs are not supported by this server", param="logprobs")
    if req.logit_bias:
        raise APIError(400, "logit_bias is not supported by this server", param="logit_bias")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options")
    if req.max_tokens and req.max_completion_tokens and req.max_tokens != req.max_completion_tokens:
        raise APIError(400, "max_tokens and max_completion_tokens disagree; send one of them", param="max_tokens")
    if req.model_extra:
        log.warning("ignored unknown request fields: %s", ", ".join(sorted(req.model_extra)))


# ------------------------------------------------------------------------------------------------ prompt building

def message_text(m: ChatMessage, index: int) -> str:
    """The text of a message; content parts must all be text (this is a text-only model)."""
    if m.content is None or isinstance(m.content, str):
        return m.content or ""
    texts = []
    for part in m.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"messages[{index}].content: only text parts are supported by this model "
                                f"(got type {part.get('type')!r})", param=f"messages.{index}.content")
        texts.append(part["text"])
    return "".join(texts)


def template_messages(messages: List[ChatMessage]) -> list:
    """OpenAI messages as the dicts the chat template reads (developer = system, as OpenAI defines it)."""
    out = []
    for i, m in enumerate(messages):
        text = message_text(m, i)
        if m.role != "assistant" and m.content is None:
            raise APIError(400, f"messages[{i}].content is required for a {m.role} message",
                           param=f"messages.{i}.content")
        if m.role in ("system", "developer"):
            out.append({"role": "system", "content": text})
        elif m.role == "user":
            out.append({"role": "user", "content": text})
        elif m.role == "tool":
            out.append({"role": "tool", "content": text, "tool_call_id": m.tool_call_id})
        else:
            msg = {"role": "assistant", "content": text}
            if m.tool_calls:
                msg["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                     for c in m.tool_calls]
            if m.reasoning_content:
                msg["reasoning_content"] = m.reasoning_content
            if not text and not m.tool_calls:
                raise APIError(400, f"messages[{i}]: an assistant message needs content or tool_calls",
                               param=f"messages.{i}")
            out.append(msg)
    return out


def tool_plan(req: ChatCompletionRequest, constrained: bool = False):
    """(tools for the template, whether to parse tool calls, text forced at the start of the reply).

    tool_choice "required" and a named function are honoured by writing the start of the reply into the prompt:
    `<tool_call>` (and, without constraints, a named function's name), so the model goes on with the call's JSON.
    With constrained decoding (`request_constraint`) the grammar then makes the call valid and, for a named
    function, names it. Without, a reply whose call does not parse becomes an error (replies.ForcedCallFailed),
    never text that starts with the forced `<tool_call>`.
    """
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    choice = req.tool_choice
    if not tools:
        if choice not in (None, "none"):
            raise APIError(400, "tool_choice is only allowed when tools are specified", param="tool_choice")
        return None, False, ""
    if choice == "none":
        return None, False, ""
    if choice in (None, "auto"):
        return tools, True, ""
    if choice == "required":
        return tools, True, TOOL_CALL + "\n"
    names = [t["function"]["name"] for t in tools]
    if choice.function.name not in names:
        raise APIError(400, f"tool_choice names function {choice.function.name!r}, which is not in tools "
                            f"({', '.join(names)})", param="tool_choice")
    if constrained:
        return tools, True, TOOL_CALL + "\n"
    return tools, True, TOOL_CALL + '\n{"name": ' + json.dumps(choice.function.name, ensure_ascii=False) + \
        ', "arguments":'


def request_constraint(req: ChatCompletionRequest, tokenizer, vocab, tools, why_off: str):
    """The request's grammar constraint (model/constrain.py), or None to decode freely.

    `vocab` is the server's llguidance vocabulary, None when constrained decoding is off (`why_off` says why).
    response_format json_object / json_schema: the reply is that JSON (OpenAI's structured outputs); tools with
    tool_choice "auto": every call the model opens is a valid call of an offered tool; "required" or a named
    function: the reply is one call (more when parallel_tool_calls is not false), always valid. A schema the
    library cannot compile is a 400 naming the field.
    """
    try:
        answer = constrain.response_schema(req.response_format)
    except constrain.GrammarError as e:
        raise APIError(400, str(e), param="response_format")
    if vocab is None:
        if answer is not None:
            raise APIError(400, f"response_format {req.response_format.get('type')} needs constrained decoding, "
                                f"which this server runs without ({why_off})", param="response_format")
        return None
    choice = req.tool_choice
    if not tools and answer is None:
        return None
    name = "auto" if choice in (None, "auto") else "required" if choice == "required" else choice.function.name
    parallel = req.parallel_tool_calls is not False
    # the same tools and schema come with every request of an agent's loop: compile once (7-12 ms each)
    key = json.dumps([tools, name, parallel, answer], sort_keys=True, ensure_ascii=False)
    with _COMPILED_LOCK:  # requests compile in worker threads (asyncio.to_thread)
        cached = _COMPILED.get(key)
    if cached is not None:
        return cached
    try:
        if not tools:
            made = constrain.json_constraint(vocab, answer)
        elif name == "auto":
            made = constrain.tool_call_constraint(vocab, tokenizer, tools, "auto", answer_schema=answer)
        else:
            made = constrain.tool_call_constraint(vocab, tokenizer, tools, name, parallel)
    except constrain.GrammarError as e:
        raise APIError(400, str(e), param="response_format" if answer is not None and not tools else "tools")
    with _COMPILED_LOCK:
        if len(_COMPILED) >= COMPILED_CACHE:
            _COMPILED.pop(next(iter(_COMPILED)))  # the oldest first
        _COMPILED[key] = made
    return made


COMPILED_CACHE = 64  # compiled constraints kept: the tool sets and schemas of the clients seen most recently
_COMPILED: Dict[str, Any] = {}
_COMPILED_LOCK = threading.Lock()


def completion_budget(req: ChatCompletionRequest, n_prompt: int, max_len: int) -> int:
    """max_tokens, or all the room the prompt leaves; 400 when prompt + completion do not fit (never truncated)."""
    max_tokens = req.max_completion_tokens or req.max_tokens
    if max_tokens is None:
        max_tokens = max_len - n_prompt
    if n_prompt + max_tokens > max_len or max_tokens < 1:
        wanted = max(max_tokens, 1)
        raise APIError(400, f"This model's maximum context length is {max_len} tokens. However, you requested "
                            f"{n_prompt + wanted} tokens ({n_prompt} in the messages, {wanted} in the completion). "
                            f"Please reduce the length of the messages or completion.", param="messages",
                       code="context_length_exceeded")
    return max_tokens


RESERVED_TEMPLATE_KEYS = {"messages", "tools", "add_generation_prompt", "tokenize", "conversation"}


def _surrogate_at(text: str) -> int:
    """Index of the first lone UTF-16 surrogate (JSON "\\ud800" decodes to one; no tokenizer can encode it), or -1."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return i
    return -1


def check_prompt_size(req: ChatCompletionRequest, limit: int) -> None:
    """400 before any templating: too many characters in messages + tools, an oversized tool, a lone surrogate.

    Characters, not tokens: counting needs no tokenizer, and with ~1.5 characters per token (Chinese) and ~4
    (English) 16 characters per context token is far more than can ever fit, so no valid request is refused here.
    """
    total = 0
    for i, m in enumerate(req.messages):
        texts = [m.content] if isinstance(m.content, str) else \
            [p.get("text") for p in m.content or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]
        texts += [m.reasoning_content or ""] + [c.function.arguments for c in m.tool_calls or []]
        for text in texts:
            total += len(text)
            if _surrogate_at(text) >= 0:
                raise APIError(400, f"messages[{i}] holds a lone UTF-16 surrogate (e.g. an unpaired \\ud83d escape) "
                                    f"at character {_surrogate_at(text)}; send valid Unicode (a whole emoji is two "
                                    f"escapes in a row)", param=f"messages.{i}.content")
    for i, t in enumerate(req.tools or []):
        size = len(json.dumps(t.model_dump(exclude_none=True), ensure_ascii=False))
        if size > MAX_TOOL_CHARS:
            raise APIError(400, f"tools[{i}] ({t.function.name}) is {size:,} characters of JSON; at most "
                                f"{MAX_TOOL_CHARS:,} per tool are accepted, shorten its description or schema",
                           param=f"tools.{i}")
        total += size
    if total > limit:
        raise APIError(400, f"the messages and tools hold {total:,} characters, more than this server accepts "
                            f"({limit:,}, --max_prompt_chars); the model's context is far shorter, send less",
                       param="messages", code="context_length_exceeded")


def render_prompt(tokenizer, req: ChatCompletionRequest, tools, prefill: str) -> list:
    extra = dict(req.chat_template_kwargs or {})
    clash = RESERVED_TEMPLATE_KEYS & set(extra)
    if clash:
        raise APIError(400, f"chat_template_kwargs may not set {', '.join(sorted(clash))}",
                       param="chat_template_kwargs")
    try:
        text = tokenizer.apply_chat_template(template_messages(req.messages), tools=tools, tokenize=False,
                                             add_generation_prompt=True, **extra)
        return tokenizer(text + prefill)["input_ids"]
    except APIError:
        raise
    except Exception as e:  # jinja's TemplateError, a surrogate in a tool schema...: a 400 naming it, never a 500
        raise APIError(400, f"the messages cannot be rendered with the chat template: {type(e).__name__}: {e}",
                       param="messages")
