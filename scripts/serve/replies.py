"""From the worker's token ids to OpenAI's replies: per-choice text (whole characters, stop strings, <think> and
<tool_call> split out), the event stream of one request, and its two wire forms (one JSON body, or SSE chunks).
"""
import asyncio
import json
import logging
import time
from typing import Callable, List, Optional

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from model.chat_protocol import END_TOOL_CALL, TOOL_CALL, IncrementalDecoder, ReplyParser, StopMatcher, new_tool_call_id
from scripts.serve.protocol import APIError, error_body, error_response
from scripts.serve.worker import BatchWorker, Job

log = logging.getLogger("minimind.serve")

POLL_S = 0.5  # how often a waiting request checks whether its client is still there


class ChoiceText:
    """One choice's tokens -> whole characters -> cut at stop strings -> reasoning / content / tool-call events."""

    def __init__(self, tokenizer, stops: List[str], parse_tools: bool, prefill: str, parallel_tool_calls: bool = True):
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop = StopMatcher(stops)
        self.parser = ReplyParser(parse_tools)
        self.parallel_tool_calls = parallel_tool_calls
        self.tokens, self.finish_reason, self.tool_calls = 0, None, 0
        self.forced = prefill.startswith(TOOL_CALL)  # tool_choice "required" or a named function
        self.prefill_events = self._count_calls(self.parser.feed(prefill)) if prefill else []

    def _count_calls(self, events: list) -> list:
        """Counts tool calls; with parallel_tool_calls=false the calls after the first are returned as text."""
        out = []
        for ev in events:
            if self.forced and not self.tool_calls and ev[0] == "content":
                # the forced <tool_call> block did not parse (broken JSON, or cut by max_tokens): the parser hands
                # the block back as text, which would be a reply starting with the prefix the server wrote itself
                raise ForcedCallFailed(ev[1], cut=self.finish_reason == "length")
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
        self.finish_reason = "stop" if hit else reason
        return self._count_calls(self.parser.feed(text) + self.parser.finish())

    def final_reason(self) -> str:
        return "tool_calls" if self.tool_calls else self.finish_reason


class ClientGone(Exception):
    pass


class GenerationError(Exception):
    """Decoding failed; the request gets a 500 (or an error event mid-stream)."""
    code: Optional[str] = None


class ForcedCallFailed(GenerationError):
    """tool_choice required / named, and the model's call was not valid JSON.

    Status 500, type server_error: the request was valid, so a 4xx would tell the client to change something that
    is not wrong; the model failed. With grammar-constrained decoding (on whenever llguidance is installed) the
    call is always valid JSON, so this is left only for max_tokens cutting a call short. Without it, returning the
    broken text with finish_reason "stop" (what it did before, issue 27) breaks clients that rely on `required`
    always giving a call, as vLLM's does. The openai client retries a 500 (max_retries, default 2).
    """
    code = "tool_call_invalid"

    def __init__(self, text: str, cut: bool = False):
        shown = text if len(text) <= 120 else text[:117] + "..."
        if cut:
            super().__init__(f"tool_choice asked for a function call, but max_tokens ended the reply inside the call "
                             f"({shown!r}); send a larger max_tokens")
        else:
            super().__init__(f"tool_choice asked for a function call, but the model wrote a call that is not valid "
                             f"JSON ({shown!r}); retry with another seed or temperature, use tool_choice \"auto\", or "
                             f"install llguidance so the server constrains calls (--constrained)")


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
        return error_response(APIError(500, str(e), code=e.code))
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
        yield sse(error_body(str(e), "server_error", code=e.code))
    yield "data: [DONE]\n\n"
