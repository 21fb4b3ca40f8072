"""The OpenAI-compatible API server: model loading, the routes, the gate's rules, and the command line.

The path of one request (docs/ARCHITECTURE.md, "Serving floor", draws it): uvicorn's gated h11 protocol (read
deadlines, connection cap) -> `Gate` (API key, 503 while loading, body read whole under --max_body_mb) -> FastAPI
parses and validates `ChatCompletionRequest` -> `chat_completions` checks sizes, renders and tokenizes the prompt in
a worker thread -> a `Job` goes to the `BatchWorker` thread, which shares decoding rows fairly and steps
`model.engine.BatchDecoder` -> tokens come back on the job's asyncio queue -> `replies` turns them into text events
-> one JSON body or SSE chunks.
"""
import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Callable, List, Optional

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from model import constrain
from model.chat_protocol import trained_context_len
from model.checkpoint import add_model_args, load_model
from model.engine import Engine
from model.runtime import UserError, user_errors
from scripts.serve.gate import Gate, Refusal, add_gate_args, bearer_token, limits_from_args, same_secret, \
    uvicorn_options
from scripts.serve.protocol import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, APIError, ChatCompletionRequest, \
    check_prompt_size, completion_budget, describe_validation_error, error_body, error_response, reject_unsupported, \
    render_prompt, request_constraint, tool_plan
from scripts.serve.replies import CancellingStream, ChoiceText, choice_events, collect_completion, stream_chunks
from scripts.serve.worker import BatchWorker, Job

log = logging.getLogger("minimind.serve")


@dataclass
class Settings:
    served_model_name: str = "minimind"
    api_key: Optional[str] = None
    strict_model_name: bool = False
    max_model_len: Optional[int] = None  # None: what the model was trained for (trained_context_len)
    max_batch_size: int = 16
    max_body_bytes: int = 2 * 1024 * 1024  # 413 above this; read before any JSON parsing
    max_prompt_chars: Optional[int] = None  # None: 16 characters per token of max_model_len
    constrained: str = "auto"  # grammar-constrained tool calls / response_format: auto (if llguidance), on, off


class ModelHost:
    """Loading state, model, tokenizer and worker. Loading runs in a thread so /health can answer 503 meanwhile."""

    def __init__(self, load: Callable[[], tuple], settings: Settings, on_load_error: Callable[[BaseException], None]):
        self.load, self.settings, self.on_load_error = load, settings, on_load_error
        self.state, self.error = "loading", None
        self.tokenizer, self.worker, self.max_model_len = None, None, None
        self.vocab, self.why_unconstrained = None, "--constrained off"  # llguidance's view of the tokenizer
        self.constrain_tools = False  # the tokenizer holds <tool_call> / </tool_call> as single tokens

    def start(self) -> None:
        threading.Thread(target=self._load, name="minimind-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            model, tokenizer = self.load()
            limit = getattr(model.config, "max_position_embeddings", None) or trained_context_len(model.config)
            max_len = self.settings.max_model_len or trained_context_len(model.config)
            if max_len > limit:
                raise UserError(f"--max_model_len {max_len} exceeds the model's max_position_embeddings {limit}")
            engine = Engine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0)
            self.vocab, self.why_unconstrained = constraint_vocabulary(self.settings.constrained, tokenizer)
            self.constrain_tools = self.vocab is not None and constrain.has_tool_tags(tokenizer)
            if self.vocab is not None and not self.constrain_tools:
                log.warning("the tokenizer splits <tool_call> into several tokens: tool calls are not constrained "
                            "(response_format still is)")
            self.worker = BatchWorker(engine, self.settings.max_batch_size, max_len)
            self.worker.prepare()
            self.worker.start()
            self.tokenizer, self.max_model_len = tokenizer, max_len
            self.state = "ready"
            log.info("ready: model %r, max_model_len %d, max_batch_size %d, constrained decoding %s",
                     self.settings.served_model_name, max_len, self.settings.max_batch_size,
                     "on" if self.vocab is not None else f"off ({self.why_unconstrained})")
        except Exception as e:  # handed to main(), which stops the server and exits with the message
            self.state, self.error = "failed", e
            self.on_load_error(e)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker.join(timeout=5)


def constraint_vocabulary(setting: str, tokenizer) -> tuple:
    """(llguidance vocabulary or None, why constraints are off) for --constrained auto / on / off."""
    if setting == "off":
        return None, "--constrained off"
    if not constrain.available():
        if setting == "on":
            constrain.require("--constrained on")  # UserError: the server exits with the install hint
        log.warning("llguidance is not installed: tool calls are not constrained and response_format json is "
                    "refused; %s", constrain.INSTALL_HINT)
        return None, f"llguidance is not installed: {constrain.INSTALL_HINT}"
    try:
        return constrain.vocabulary(tokenizer), ""
    except Exception as e:  # llguidance reads a Hugging Face fast tokenizer; another object cannot be constrained
        why = f"llguidance cannot read this tokenizer ({type(e).__name__}: {e})"
        if setting == "on":
            raise UserError(f"--constrained on: {why}") from None
        log.warning("constrained decoding is off: %s", why)
        return None, why


# ------------------------------------------------------------------------------------------------------ routes

def get_host(request: Request) -> ModelHost:
    return request.app.state.host


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


router = APIRouter()


@router.get("/health")
async def health(host: ModelHost = Depends(get_host), settings: Settings = Depends(get_settings)):
    if host.state != "ready":
        return JSONResponse({"status": host.state, "model": settings.served_model_name}, status_code=503)
    return {"status": "ok", "model": settings.served_model_name, "max_model_len": host.max_model_len,
            "running_requests": host.worker.running_jobs, "waiting_requests": host.worker.waiting_jobs(),
            # the torch.compile'd decode step is built in the background on CUDA and used from the next step on
            "decode_compiled": host.worker.engine.compiled, "decode_compiling": host.worker.engine.background is not None}


@router.get("/v1/models")
async def models(host: ModelHost = Depends(get_host), settings: Settings = Depends(get_settings)):
    return {"object": "list", "data": [{"id": settings.served_model_name, "object": "model",
                                        "created": int(time.time()), "owned_by": "minimind",
                                        "max_model_len": host.max_model_len}]}


def check_model_name(req: ChatCompletionRequest, settings: Settings) -> None:
    if settings.strict_model_name and req.model is None:
        raise APIError(400, f"model is required (this server serves `{settings.served_model_name}`)", param="model")
    if settings.strict_model_name and req.model != settings.served_model_name:
        raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                            f"`{settings.served_model_name}`", param="model", code="model_not_found")


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request, host: ModelHost = Depends(get_host),
                           settings: Settings = Depends(get_settings)):
    reject_unsupported(req)
    check_model_name(req, settings)
    tools, parse_tools, prefill = tool_plan(req, host.constrain_tools)
    check_prompt_size(req, settings.max_prompt_chars or 16 * host.max_model_len)
    tokenizer = host.tokenizer
    # templating + tokenization take ~1 s per MB of text, compiling a grammar milliseconds: in a thread, so
    # /health and other requests keep answering
    constraint = await asyncio.to_thread(request_constraint, req, tokenizer, host.vocab,
                                         tools if host.constrain_tools else None, host.why_unconstrained)
    prompt_ids = await asyncio.to_thread(render_prompt, tokenizer, req, tools, prefill)
    n_prompt = len(prompt_ids)
    max_tokens = completion_budget(req, n_prompt, host.max_model_len)
    temperature = DEFAULT_TEMPERATURE if req.temperature is None else req.temperature
    top_p = DEFAULT_TOP_P if req.top_p is None else req.top_p
    rid = "chatcmpl-" + uuid.uuid4().hex
    job = Job(rid, prompt_ids, req.n, max_tokens, temperature, top_p, req.seed, req.ignore_eos,
              asyncio.get_running_loop(), constraint)
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


# ---------------------------------------------------------------------------------------------------- the app

DOC_PATHS = ("/docs", "/redoc", "/openapi.json")


def api_rules(host: ModelHost, settings: Settings):
    """The gate's (protected, check) for this server: /v1/* and the API docs need the key; /v1/* needs the model.

    The docs pages are guarded too: they list every route and field, and with a key set nothing but /health
    should answer a caller without it.
    """
    def protected(path: str) -> bool:
        return path.startswith("/v1/") or path in DOC_PATHS or path.startswith("/docs/")

    def check(scope: dict, headers: dict) -> Optional[Refusal]:
        if settings.api_key:
            token = bearer_token(headers)
            if not same_secret(token, settings.api_key):
                what = "Incorrect API key provided" if token else \
                    "You didn't provide an API key; send it as an 'Authorization: Bearer <key>' header"
                return Refusal(401, what, "invalid_api_key")
        if scope["path"].startswith("/v1/") and host.state != "ready":
            why = "the model is still loading, retry in a few seconds" if host.state == "loading" else \
                f"the model failed to load: {host.error}"
            return Refusal(503, why, "model_not_ready")
        return None
    return protected, check


def render_refusal(r: Refusal) -> bytes:
    return json.dumps(error_body(r.message, "invalid_request_error" if r.status < 500 else "server_error",
                                 None, r.code), ensure_ascii=False).encode()


def create_app(load: Callable[[], tuple], settings: Settings,
               on_load_error: Callable[[BaseException], None] = lambda e: None,
               cors_origins: Optional[List[str]] = None):
    """The ASGI app (FastAPI inside the gate); `load()` returns (model, tokenizer) and runs in a thread at start.

    cors_origins: browser origins allowed to call the API (scripts/web_tool_test.html); None = no CORS headers.
    """
    host = ModelHost(load, settings, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        host.start()
        yield
        host.shutdown()

    app = FastAPI(title="MiniMind OpenAI-compatible API", lifespan=lifespan)
    app.state.host, app.state.settings = host, settings
    async def api_error(request: Request, exc: APIError):
        return error_response(exc)

    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(describe_validation_error(exc))

    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       code=code))
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.include_router(router)
    protected, check = api_rules(host, settings)
    gated = Gate(app, protected, check, render_refusal, settings.max_body_bytes)
    gated.state = app.state  # tests reach the host through app.state, as before
    if cors_origins:  # outermost: a preflight OPTIONS carries no key and is answered before the gate sees it
        cors = CORSMiddleware(gated, allow_origins=cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
                              allow_headers=["Authorization", "Content-Type"], max_age=600)
        cors.state = app.state
        return cors
    return gated


# ----------------------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
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
        help="消息与工具定义总字符数上限，超过返回 400 / most characters in all messages and tools (400 above); "
             "default 16 x --max_model_len")
    add("--max_model_len", type=int, default=None,
        help="提示+回答的最大 token 数 / prompt + completion tokens; default 2048 (32768 with YaRN)")
    add("--max_batch_size", type=int, default=16,
        help="一起解码的最多行数（每个 choice 一行，多个请求公平分配）/ most rows (choices) decoded at once, shared "
             "fairly between requests")
    add("--constrained", default="auto", choices=["auto", "on", "off"],
        help="语法约束解码：工具调用一定是合法 JSON、response_format 生效；auto = 装了 llguidance 就开 / "
             "grammar-constrained decoding (valid tool calls, response_format json): auto = on when llguidance "
             "is installed; on = exit without it; off = free decoding")
    add("--log_level", default="info", choices=["debug", "info", "warning", "error"], help="日志级别 / log level")
    add("--cors_origins", nargs="+", default=None, metavar="ORIGIN",
        help="允许跨域调用的浏览器来源，默认不允许；网页从磁盘打开时来源是 null / browser origins allowed to call "
             "the API (CORS), e.g. http://127.0.0.1:5500; a page opened from disk sends 'null'; '*' = any; "
             "default: none")
    add_gate_args(p)
    return p


def bind_socket(host: str, port: int) -> socket.socket:
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


def check_args(args) -> None:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be 0..65535")
    if args.max_batch_size < 1:
        raise UserError(f"--max_batch_size {args.max_batch_size}: must be at least 1")
    if args.max_model_len is not None and args.max_model_len < 2:
        raise UserError(f"--max_model_len {args.max_model_len}: must be at least 2")
    if args.max_body_mb <= 0:
        raise UserError(f"--max_body_mb {args.max_body_mb}: must be positive")


def serve(args) -> None:
    """Bind, start loading the model in a thread, serve until stopped; a load failure exits with its message."""
    with user_errors():
        check_args(args)
        limits = limits_from_args(args)
        sock = bind_socket(args.host, args.port)
        settings = Settings(args.served_model_name, args.api_key, bool(args.strict_model_name), args.max_model_len,
                            args.max_batch_size, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                            max_prompt_chars=args.max_prompt_chars, constrained=args.constrained)
        server = None
        failure: List[BaseException] = []

        def on_load_error(e: BaseException) -> None:
            failure.append(e)
            if server is not None:
                server.should_exit = True

        app = create_app(lambda: load_model(args), settings, on_load_error, cors_origins=args.cors_origins)
        config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5, **uvicorn_options(limits))
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
