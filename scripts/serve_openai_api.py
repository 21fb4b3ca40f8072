"""OpenAI-compatible HTTP API for a MiniMind model: /v1/chat/completions (streaming or not), /v1/models, /health.

    python scripts/serve_openai_api.py                                  # out/full_sft_*.pth on 127.0.0.1:8998
    python scripts/serve_openai_api.py --weight reason                  # <think> -> reasoning_content
    python scripts/serve_openai_api.py --weight tool_sft                # <tool_call> -> tool_calls
    python scripts/serve_openai_api.py --load_from ./MiniMind2 --host 0.0.0.0 --api_key sk-...

Any OpenAI client talks to it (`OpenAI(base_url="http://127.0.0.1:8998/v1", api_key=...)`), as to vLLM.

How it runs: one worker thread owns the model and the shared `model.engine.Engine`. Requests wait in a queue;
the worker keeps one decoding batch (`Engine.batch`, continuous batching): a waiting request joins it at the next
decoding step, with its own sampling settings, and each new token goes to its request's asyncio queue. The request side
turns tokens into whole characters, cuts at `stop` strings and splits `<think>` / `<tool_call>` out of the text
(model/chat_protocol.py). A request whose client disconnects is flagged and the worker stops decoding it at the
next step. Requests wait only while the batch is full (--max_batch_size rows).
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import asyncio
import collections
import hmac
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Union

ROOT = Path(__file__).resolve().parents[1]

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, field_validator  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from model.chat_protocol import (  # noqa: E402
    END_TOOL_CALL,
    TOOL_CALL,
    ReplyParser,
    StopMatcher,
    new_tool_call_id,
    trained_context_len,
)

log = logging.getLogger("minimind.serve")

# The sampling defaults of eval_llm.py: a small model at OpenAI's temperature 1 / top_p 1 rambles.
DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.85, 0.85
MAX_N = 16  # choices per request; each is a decoding row
POLL_S = 0.5  # how often a waiting request checks whether its client is still there


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
    messages: List[ChatMessage] = Field(min_length=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)  # the newer name of max_tokens
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = Field(None, ge=-(2 ** 63), le=2 ** 64 - 1)  # what torch.Generator.manual_seed takes
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    tools: Optional[List[Tool]] = None
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
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise APIError(400, "response_format: only {\"type\": \"text\"} is supported by this server",
                       param="response_format")
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


def tool_plan(req: ChatCompletionRequest):
    """(tools for the template, whether to parse tool calls, text forced at the start of the reply).

    tool_choice "required" and a named function are honoured by writing the start of the reply into the prompt:
    `<tool_call>` (and, for a named function, its name), so the model goes on with the call's JSON. Nothing
    constrains what it writes next: a reply that does not parse comes back as content.
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
    return tools, True, TOOL_CALL + '\n{"name": ' + json.dumps(choice.function.name, ensure_ascii=False) + \
        ', "arguments":'


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


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than {limit:,} bytes (this server's --max_body_mb); "
                         f"send a shorter conversation", code="request_too_large")


class BodyTooLarge(Exception):
    """Raised by GateMiddleware's receive when a body without Content-Length passes --max_body_mb."""


def check_prompt_chars(req: ChatCompletionRequest, limit: int) -> None:
    """400 for conversations that cannot fit the context whatever the tokenizer does (before any tokenization)."""
    total = sum(len(m.content) if isinstance(m.content, str) else len(json.dumps(m.content, ensure_ascii=False))
                for m in req.messages if m.content is not None)
    if total > limit:
        raise APIError(400, f"the messages hold {total:,} characters, more than this server accepts ({limit:,}, "
                            f"--max_prompt_chars); the model's context is far shorter, send less",
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
    except APIError:
        raise
    except Exception as e:  # jinja's TemplateError and friends: the messages do not fit the template
        raise APIError(400, f"the messages cannot be rendered with the chat template: {e}", param="messages")
    return tokenizer(text + prefill)["input_ids"]


# ------------------------------------------------------------------------------------------------- the worker

class Job:
    """One request on its way through the worker: n decoding rows of one prompt.

    The worker thread reads `cancelled` and `rows_done` every step; the request side sets them (client gone,
    stop string reached). Events go back through `loop.call_soon_threadsafe` onto the request's asyncio queue:
    ("tokens", [(row, id), ...]), ("end", row, "stop" | "length"), ("error", message).
    """

    def __init__(self, request_id: str, prompt_ids: list, n: int, max_tokens: int, temperature: float,
                 top_p: float, seed: Optional[int], ignore_eos: bool, loop: asyncio.AbstractEventLoop):
        self.request_id, self.prompt_ids, self.n, self.max_tokens = request_id, prompt_ids, n, max_tokens
        self.temperature, self.top_p, self.seed, self.ignore_eos = temperature, top_p, seed, ignore_eos
        self.loop, self.events = loop, asyncio.Queue()
        self.cancelled = False
        self.rows_done = [False] * n
        self.tokens_out = 0  # tokens decoded for this request so far (all rows)
        self.checked_at = time.monotonic()  # when the request side last asked whether its client is there

    def sampling(self):
        """This request's decoding settings; a seeded request samples from its own generator, so its output
        depends on its seed, not on the requests that share the batch."""
        from model.engine import SamplingParams
        return SamplingParams(max_new_tokens=self.max_tokens, temperature=max(self.temperature, 0.0),
                              top_p=self.top_p, seed=self.seed if self.temperature > 0 else None,
                              stop_ids=[] if self.ignore_eos else None)

    def send(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is shutting down and nobody is listening
            self.cancelled = True

    def abandon(self) -> None:
        """The request side is done with this job: stop decoding whatever rows are still running."""
        if not all(self.rows_done):
            self.cancelled = True


class BatchWorker(threading.Thread):
    """The only thread that touches the model: one running decode batch that queued jobs join between steps.

    Continuous batching: a request that arrives while others decode is prefilled at the next step and decodes in
    the same batch (up to `max_batch_size` rows, oldest request first), instead of waiting for the batch to end.
    """

    def __init__(self, engine, max_batch_size: int, max_model_len: int):
        super().__init__(name="minimind-decoder", daemon=True)
        self.engine, self.max_batch_size, self.max_model_len = engine, max_batch_size, max_model_len
        self.inbox: "queue.Queue[Optional[Job]]" = queue.Queue()
        self.waiting: collections.deque = collections.deque()  # only this thread touches it
        self.rows: Dict[int, tuple] = {}  # decoder row id -> (job, choice index), for rows still streaming
        self.running_jobs = 0
        self.admitted = 0  # jobs that joined the batch so far
        self.decoder = None
        self._stopping = False

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def stop(self) -> None:
        self.inbox.put(None)

    def waiting_jobs(self) -> int:
        return len(self.waiting) + self.inbox.qsize()

    def _drain(self) -> None:
        while True:
            try:
                job = self.inbox.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping = True
            else:
                self.waiting.append(job)

    def prepare(self) -> None:
        """Make the decoder and, on CUDA, compile and capture its decode step before the first request."""
        self.decoder = self.engine.batch(self.max_batch_size, self.max_model_len)
        if self.decoder.use_graphs:
            log.info("warming up the decode step (torch.compile: %s, CUDA graphs)", self.engine.compiled)
            self.decoder.warm_up()

    def run(self) -> None:
        if self.decoder is None:
            self.prepare()
        while not self._stopping:
            if self.decoder.idle and not self.waiting:
                job = self.inbox.get()  # nothing to do: sleep until a request comes
                if job is None:
                    return
                self.waiting.append(job)
            self._drain()
            self._admit()
            if self.decoder.idle:
                continue
            try:
                step = self.decoder.step()
            except Exception as e:  # report to every request of the batch and keep serving
                log.exception("decoding failed")
                for job in {id(j): j for j, _ in self.rows.values()}.values():
                    job.send(("error", f"generation failed: {type(e).__name__}: {e}"))
                self.rows.clear()
                self.decoder.reset()
            else:
                self._dispatch(step)
            self.running_jobs = len({id(j) for j, _ in self.rows.values()})

    def _admit(self) -> None:
        """Oldest first, every waiting job whose rows fit in the batch now."""
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                log.info("request %s: client left before decoding started", job.request_id)
                continue
            if job.n > self.decoder.free_rows:
                if job.n > self.max_batch_size:  # can never fit: the request asked for more choices than rows
                    self.waiting.popleft()
                    job.send(("error", f"n={job.n} exceeds the server's --max_batch_size {self.max_batch_size}"))
                    continue
                return
            self.waiting.popleft()
            for i, row in enumerate(self.decoder.add([job.prompt_ids], job.sampling(), num_samples=job.n)):
                self.rows[row] = (job, i)
            self.admitted += 1

    def _dispatch(self, step) -> None:
        """Send the step's tokens and ends to their requests; cancel rows whose request is done with them."""
        per_job: Dict[Job, list] = {}
        for r, token_id in step.tokens:
            if r in self.rows:
                job, i = self.rows[r]
                per_job.setdefault(job, []).append((i, token_id))
                job.tokens_out += 1
        for job, tokens in per_job.items():
            job.send(("tokens", tokens))
        for r, reason in step.finished:  # the engine's own reasons: stop id or length
            if r in self.rows:
                job, i = self.rows.pop(r)
                job.rows_done[i] = True
                job.send(("end", i, reason))
        gone = set()
        for r, (job, i) in list(self.rows.items()):
            if job.cancelled or job.rows_done[i]:  # the client left, or the request side ended the row (stop string)
                if job.cancelled and id(job) not in gone:
                    gone.add(id(job))
                    log.info("request %s: client disconnected; stopped decoding after %d tokens",
                             job.request_id, job.tokens_out)
                del self.rows[r]
                self.decoder.cancel(r)


# ------------------------------------------------------------------------------------------ from tokens to text

class ChoiceText:
    """One choice's tokens -> whole characters -> cut at stop strings -> reasoning / content / tool-call events."""

    def __init__(self, tokenizer, stops: List[str], parse_tools: bool, prefill: str, parallel_tool_calls: bool = True):
        from model.chat_protocol import IncrementalDecoder
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop = StopMatcher(stops)
        self.parser = ReplyParser(parse_tools)
        self.parallel_tool_calls = parallel_tool_calls
        self.tokens, self.finish_reason, self.tool_calls = 0, None, 0
        self.prefill_events = self._count_calls(self.parser.feed(prefill)) if prefill else []

    def _count_calls(self, events: list) -> list:
        """Counts tool calls; with parallel_tool_calls=false the calls after the first are returned as text."""
        out = []
        for ev in events:
            if ev[0] == "tool_call":
                if self.tool_calls and not self.parallel_tool_calls:
                    call = json.dumps({"name": ev[1], "arguments": json.loads(ev[2])}, ensure_ascii=False)
                    ev = ("content", f"{TOOL_CALL}\n{call}\n{END_TOOL_CALL}")
                else:
                    self.tool_calls += 1
            out.append(ev)
        return out

    def push(self, token_id: int) -> tuple:
        """(events, True when a stop string ended the choice)."""
        self.tokens += 1
        text, hit = self.stop.push(self.decoder.push(token_id))
        events = self.parser.feed(text)
        if hit:
            events += self.parser.finish()
            self.finish_reason = "stop"
        return self._count_calls(events), hit

    def end(self, reason: str) -> list:
        text = self.decoder.flush().rstrip("\ufffd")  # a character cut in half by max_tokens is dropped
        text, hit = self.stop.push(text)
        if not hit:
            text += self.stop.flush()
        events = self.parser.feed(text) + self.parser.finish()
        self.finish_reason = "stop" if hit else reason
        return self._count_calls(events)

    def final_reason(self) -> str:
        return "tool_calls" if self.tool_calls else self.finish_reason


class ClientGone(Exception):
    pass


class GenerationError(Exception):
    pass


async def next_event(job: Job, request: Optional[Request]) -> tuple:
    """The job's next event; raises ClientGone when the HTTP client has disconnected meanwhile.

    The check runs every POLL_S seconds even while tokens keep arriving: a non-streaming request sends nothing
    until the end, so this is the only way it learns that its client left.
    """
    while True:
        now = time.monotonic()
        if request is not None and now - job.checked_at >= POLL_S:
            job.checked_at = now
            if await request.is_disconnected():
                raise ClientGone()
        try:
            return await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            continue


async def choice_events(job: Job, choices: List[ChoiceText], worker: BatchWorker, request: Optional[Request]):
    """Yield (choice index, event) until every choice has finished; event ("finish", reason) closes a choice.

    Leaving early (client gone, exception, generator closed) cancels the job so the worker stops decoding it.
    """
    try:
        for i, c in enumerate(choices):
            for ev in c.prefill_events:
                yield i, ev
        worker.submit(job)
        open_rows = set(range(job.n))
        while open_rows:
            item = await next_event(job, request)
            if item[0] == "error":
                raise GenerationError(item[1])
            if item[0] == "end":
                _, i, reason = item
                if i in open_rows:
                    open_rows.discard(i)
                    for ev in choices[i].end(reason):
                        yield i, ev
                    yield i, ("finish", choices[i].final_reason())
                continue
            for i, token_id in item[1]:
                if i not in open_rows:
                    continue
                events, stopped = choices[i].push(token_id)
                for ev in events:
                    yield i, ev
                if stopped:
                    job.rows_done[i] = True
                    open_rows.discard(i)
                    yield i, ("finish", choices[i].final_reason())
    finally:
        job.abandon()


# --------------------------------------------------------------------------------------------------- the server

@dataclass
class Settings:
    served_model_name: str = "minimind"
    api_key: Optional[str] = None
    strict_model_name: bool = False
    max_model_len: Optional[int] = None  # None: what the model was trained for (trained_context_len)
    max_batch_size: int = 16
    max_body_bytes: int = 2 * 1024 * 1024  # 413 above this; read before any JSON parsing
    max_prompt_chars: Optional[int] = None  # None: 16 characters per token of max_model_len


class ModelHost:
    """Loading state, model, tokenizer and worker. Loading runs in a thread so /health can answer 503 meanwhile."""

    def __init__(self, load: Callable[[], tuple], settings: Settings, on_load_error: Callable[[BaseException], None]):
        self.load, self.settings, self.on_load_error = load, settings, on_load_error
        self.state, self.error = "loading", None
        self.tokenizer, self.worker, self.max_model_len = None, None, None

    def start(self) -> None:
        threading.Thread(target=self._load, name="minimind-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            from model.engine import Engine
            from model.runtime import UserError
            model, tokenizer = self.load()
            limit = getattr(model.config, "max_position_embeddings", None) or trained_context_len(model.config)
            max_len = self.settings.max_model_len or trained_context_len(model.config)
            if max_len > limit:
                raise UserError(f"--max_model_len {max_len} exceeds the model's max_position_embeddings {limit}")
            engine = Engine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0)
            self.worker = BatchWorker(engine, self.settings.max_batch_size, max_len)
            self.worker.prepare()
            self.worker.start()
            self.tokenizer, self.max_model_len = tokenizer, max_len
            self.state = "ready"
            log.info("ready: model %r, max_model_len %d, max_batch_size %d", self.settings.served_model_name,
                     max_len, self.settings.max_batch_size)
        except Exception as e:  # handed to main(), which stops the server and exits with the message
            self.state, self.error = "failed", e
            self.on_load_error(e)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.join(timeout=5)


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class CancellingStream(StreamingResponse):
    """A StreamingResponse that runs `on_close` however it ends (finished, client gone while sending, error).

    Starlette may abandon the body generator mid-send when the client disconnects; without this the job would
    only be cancelled whenever the generator happens to be garbage-collected.
    """

    def __init__(self, content, on_close: Callable[[], None], **kw):
        super().__init__(content, **kw)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


class GateMiddleware:
    """/v1/* answers 401 without the --api_key and 503 until the model is loaded (plain ASGI: streams untouched)."""

    def __init__(self, app, host: "ModelHost", settings: Settings):
        self.app, self.host, self.settings = app, host, settings

    def check(self, headers: dict) -> Optional[APIError]:
        if self.settings.api_key:
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), self.settings.api_key.encode()):
                what = "Incorrect API key provided" if token else \
                    "You didn't provide an API key; send it as an 'Authorization: Bearer <key>' header"
                return APIError(401, what, code="invalid_api_key")
        if self.host.state != "ready":
            why = "the model is still loading, retry in a few seconds" if self.host.state == "loading" else \
                f"the model failed to load: {self.host.error}"
            return APIError(503, why, code="model_not_ready", type_="server_error")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = dict(scope.get("headers") or [])
            err = self.check(headers) or self.check_length(headers)
            if err is not None:
                await error_response(err)(scope, receive, send)
                return
            try:
                await self.app(scope, self.capped(receive, scope, send), send)
            except BodyTooLarge:  # raised while the body is read, before any response has started
                await error_response(self.too_large())(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def too_large(self) -> APIError:
        return body_too_large(self.settings.max_body_bytes)

    def check_length(self, headers: dict) -> Optional[APIError]:
        size = headers.get(b"content-length", b"").decode("latin-1")
        return self.too_large() if size.isdigit() and int(size) > self.settings.max_body_bytes else None

    def capped(self, receive, scope, send):
        """A receive that stops a body without Content-Length (chunked) at the cap instead of buffering it all."""
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.settings.max_body_bytes:
                scope["minimind.body_too_large"] = True  # FastAPI turns the raise into a 400; the handler reads this
                raise BodyTooLarge()
            return message
        return limited


def create_app(load: Callable[[], tuple], settings: Settings,
               on_load_error: Callable[[BaseException], None] = lambda e: None,
               cors_origins: Optional[List[str]] = None) -> FastAPI:
    """The FastAPI app; `load()` returns (model, tokenizer) and runs in a thread when the app starts.

    cors_origins: browser origins allowed to call the API (scripts/web_tool_test.html); None = no CORS headers.
    """
    host = ModelHost(load, settings, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        host.start()
        yield
        host.shutdown()

    app = FastAPI(title="MiniMind OpenAI-compatible API", lifespan=lifespan)
    app.state.host = host

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(describe_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if request.scope.get("minimind.body_too_large"):
            return error_response(body_too_large(settings.max_body_bytes))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(APIError(exc.status_code, msg, code=code))

    app.add_middleware(GateMiddleware, host=host, settings=settings)
    if cors_origins:  # added last = outermost: preflight OPTIONS is answered before the API-key gate sees it
        from starlette.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)

    @app.get("/health")
    async def health():
        if host.state != "ready":
            return JSONResponse({"status": host.state, "model": settings.served_model_name}, status_code=503)
        return {"status": "ok", "model": settings.served_model_name, "max_model_len": host.max_model_len,
                "running_requests": host.worker.running_jobs, "waiting_requests": host.worker.waiting_jobs()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": settings.served_model_name, "object": "model",
                                            "created": int(time.time()), "owned_by": "minimind",
                                            "max_model_len": host.max_model_len}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        reject_unsupported(req)
        if settings.strict_model_name and req.model is None:
            raise APIError(400, f"model is required (this server serves `{settings.served_model_name}`)",
                           param="model")
        if settings.strict_model_name and req.model != settings.served_model_name:
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                                f"`{settings.served_model_name}`", param="model", code="model_not_found")
        tools, parse_tools, prefill = tool_plan(req)
        tokenizer = host.tokenizer
        check_prompt_chars(req, settings.max_prompt_chars or 16 * host.max_model_len)
        # templating + tokenization take ~1 s per MB: in a thread, so /health and other requests keep answering
        prompt_ids = await asyncio.to_thread(render_prompt, tokenizer, req, tools, prefill)
        n_prompt = len(prompt_ids)
        max_tokens = completion_budget(req, n_prompt, host.max_model_len)
        temperature = DEFAULT_TEMPERATURE if req.temperature is None else req.temperature
        top_p = DEFAULT_TOP_P if req.top_p is None else req.top_p
        rid = "chatcmpl-" + uuid.uuid4().hex
        job = Job(rid, prompt_ids, req.n, max_tokens, temperature, top_p, req.seed, req.ignore_eos,
                  asyncio.get_running_loop())
        choices = [ChoiceText(tokenizer, req.stop or [], parse_tools, prefill, req.parallel_tool_calls is not False)
                   for _ in range(req.n)]
        created, model_name = int(time.time()), settings.served_model_name

        def usage() -> dict:  # every choice's tokens count, as in OpenAI's usage
            done = sum(c.tokens for c in choices)
            return {"prompt_tokens": n_prompt, "completion_tokens": done, "total_tokens": n_prompt + done}

        events = choice_events(job, choices, host.worker, request)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            body = stream_chunks(events, rid, created, model_name, req.n, include_usage, usage)
            return CancellingStream(body, on_close=job.abandon, media_type="text/event-stream",
                                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await collect_completion(events, rid, created, model_name, choices, usage)

    return app


async def collect_completion(events, rid, created, model_name, choices, usage) -> JSONResponse:
    parts = [{"content": [], "reasoning": [], "tool_calls": [], "finish": None} for _ in choices]
    try:
        async for i, ev in events:
            if ev[0] == "finish":
                parts[i]["finish"] = ev[1]
            elif ev[0] == "tool_call":
                parts[i]["tool_calls"].append({"id": new_tool_call_id(), "type": "function",
                                               "function": {"name": ev[1], "arguments": ev[2]}})
            else:
                parts[i][ev[0]].append(ev[1])
    except ClientGone:
        log.info("request %s: client disconnected before the reply was complete", rid)
        return JSONResponse({}, status_code=499)
    except GenerationError as e:
        return error_response(APIError(500, str(e)))
    out = []
    for i, p in enumerate(parts):
        content = "".join(p["content"])
        message = {"role": "assistant", "content": content if content or not p["tool_calls"] else None}
        if p["reasoning"]:
            message["reasoning_content"] = "".join(p["reasoning"])
        if p["tool_calls"]:
            message["tool_calls"] = p["tool_calls"]
        out.append({"index": i, "message": message, "logprobs": None, "finish_reason": p["finish"]})
    return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": model_name,
                         "choices": out, "usage": usage()})


async def stream_chunks(events, rid, created, model_name, n, include_usage, usage):
    """Server-sent events in OpenAI's chat.completion.chunk format, ending with `data: [DONE]`."""
    def chunk(i, delta, finish=None):
        c = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name,
             "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            c["usage"] = None
        return sse(c)

    calls = [0] * n
    try:
        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for i, ev in events:
            if ev[0] == "content":
                yield chunk(i, {"content": ev[1]})
            elif ev[0] == "reasoning":
                yield chunk(i, {"reasoning_content": ev[1]})
            elif ev[0] == "tool_call":
                k, calls[i] = calls[i], calls[i] + 1
                yield chunk(i, {"tool_calls": [{"index": k, "id": new_tool_call_id(), "type": "function",
                                                "function": {"name": ev[1], "arguments": ""}}]})
                yield chunk(i, {"tool_calls": [{"index": k, "function": {"arguments": ev[2]}}]})
            elif ev[0] == "finish":
                yield chunk(i, {}, ev[1])
        if include_usage:
            yield sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                       "choices": [], "usage": usage()})
    except ClientGone:
        log.info("request %s: client disconnected mid-stream", rid)
        return
    except GenerationError as e:
        yield sse(error_body(str(e), "server_error"))
    yield "data: [DONE]\n\n"


# ----------------------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    from model.checkpoint import add_model_args  # torch and transformers load here, not at import
    p = argparse.ArgumentParser(description="MiniMind OpenAI 兼容 API 服务 / OpenAI-compatible API server",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument_group("network / 网络").add_argument
    add("--host", default="127.0.0.1", help="监听地址；0.0.0.0 对外开放 / bind address (0.0.0.0 = all interfaces)")
    add("--port", type=int, default=8998, help="端口，0 = 任选空闲端口 / port; 0 = any free port (printed)")
    add_model_args(p)
    add = p.add_argument_group("serving / 服务").add_argument
    add("--served_model_name", default="minimind", help="/v1/models 报告的模型名 / model id reported and echoed")
    add("--strict_model_name", type=int, default=0, choices=[0, 1],
        help="1 = 请求的 model 必须等于 --served_model_name，否则 404 / reject other model names with 404")
    add("--api_key", default=os.environ.get("MINIMIND_API_KEY") or None,
        help="设置后请求须带 Authorization: Bearer KEY，否则 401；也可用环境变量 MINIMIND_API_KEY（命令行上的 key 会"
             "出现在 ps 里）/ require this key (401 without it); default $MINIMIND_API_KEY, which, unlike a flag, "
             "does not show in `ps`")
    add("--max_body_mb", type=float, default=2.0,
        help="请求体上限（MB），超过返回 413 / largest request body in MB; larger ones get 413")
    add("--max_prompt_chars", type=int, default=None,
        help="消息总字符数上限，超过返回 400 / most characters in all messages (400 above); "
             "default 16 x --max_model_len")
    add("--max_model_len", type=int, default=None,
        help="提示+回答的最大 token 数 / prompt + completion tokens; default 2048 (32768 with YaRN)")
    add("--max_batch_size", type=int, default=16,
        help="一起解码的最多行数 / most rows (choices) decoded in one batch; a request's n choices stay together")
    add("--log_level", default="info", choices=["debug", "info", "warning", "error"], help="日志级别 / log level")
    add("--cors_origins", nargs="+", default=None, metavar="ORIGIN",
        help="允许跨域调用的浏览器来源，默认不允许；网页从磁盘打开时来源是 null / browser origins allowed to call "
             "the API (CORS), e.g. http://127.0.0.1:5500; a page opened from disk sends 'null'; '*' = any; "
             "default: none")
    return p


def bind_socket(host: str, port: int) -> socket.socket:
    from model.runtime import UserError
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port "
                        f"(or stop the process using it)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv=None) -> int:
    import uvicorn

    from model.checkpoint import load_model
    from model.runtime import UserError, user_errors

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    with user_errors():
        if not 0 <= args.port <= 65535:
            raise UserError(f"--port {args.port}: must be 0..65535")
        if args.max_batch_size < 1:
            raise UserError(f"--max_batch_size {args.max_batch_size}: must be at least 1")
        if args.max_model_len is not None and args.max_model_len < 2:
            raise UserError(f"--max_model_len {args.max_model_len}: must be at least 2")
        sock = bind_socket(args.host, args.port)
        if args.max_body_mb <= 0:
            raise UserError(f"--max_body_mb {args.max_body_mb}: must be positive")
        settings = Settings(args.served_model_name, args.api_key, bool(args.strict_model_name), args.max_model_len,
                            args.max_batch_size, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                            max_prompt_chars=args.max_prompt_chars)
        server = None
        failure: List[BaseException] = []

        def on_load_error(e: BaseException) -> None:
            failure.append(e)
            if server is not None:
                server.should_exit = True

        app = create_app(lambda: load_model(args), settings, on_load_error, cors_origins=args.cors_origins)
        config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{port}/v1 (model loading; GET /health says when it is ready)",
              file=sys.stderr, flush=True)
        server.run(sockets=[sock])
        if failure:
            err = failure[0]
            if isinstance(err, (UserError, FileNotFoundError)):
                raise err
            raise RuntimeError(f"model loading failed: {type(err).__name__}: {err}") from err
    return 0


if __name__ == "__main__":
    sys.exit(main())
