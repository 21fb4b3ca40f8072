"""The training manager's web server: its routes, its rules at the shared gate, the log stream, the MCP server.

Safe by construction, because a training launcher is a remote-code-execution service if it is careless:
- binds 127.0.0.1 unless told otherwise; every /api and /mcp request needs the token, as `Authorization: Bearer`
  (or `X-Manager-Token`) or, for GET requests only (EventSource), a 15-minute HttpOnly SameSite=Strict cookie from
  `POST /api/session`; a token in the URL is refused, since URLs end up in access logs and browser history;
- requests from another Origin are refused unless it is on the --cors_origins allow-list (CORS is off by default);
- what a run may do is checked in scripts/serve/flags.py; runs are handled in scripts/serve/runs.py;
- the shared gate (scripts/serve/gate.py) caps bodies (--max_body_bytes), header/body read time and open
  connections; logs go from the child to a file under logs/ and are streamed from that file, so memory stays
  bounded whatever the log size or the number of viewers.

The log stream (`GET /api/train/logs`, server-sent events) gives each line an `id:` (its end offset in the log
file), so a reconnecting client sends `Last-Event-ID` and continues without gaps or duplicates; it sends a
heartbeat comment every --heartbeat_s and an `end` event when the run is over. Streams are async generators
(no thread per viewer). Progress comes from the trainer's metrics log `{save_dir}/{weight_stem}.metrics.jsonl`.
"""
import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware.cors import CORSMiddleware

from model.checkpoint import read_sidecar
from model.runtime import ROOT, UserError, display_path, user_errors
from scripts.evals import tool_call as eval_tool_call
from scripts.toolcall import tool_mocks
from scripts.serve.flags import STAGES, RequestError, stage_info
from scripts.serve.gate import Gate, Refusal, add_gate_args, bearer_token, limits_from_args, same_secret, \
    uvicorn_options
from scripts.serve.runs import RunManager, _run_quiet, detect_devices, read_metrics, thin

TOKEN_QUERY_KEYS = {"token", "access_token", "api_key", "apikey", "key", "auth"}
SESSION_COOKIE = "mm_session"
SESSION_SECONDS = 15 * 60  # an EventSource reconnects within seconds; 15 minutes bounds a leaked cookie's use
MAX_SESSIONS = 1000  # the oldest goes first beyond this: a token holder minting cookies cannot grow memory
LOG_CHUNK = 64 * 1024  # bytes read from a log file per step of a stream
MAX_LINE = 16 * 1024  # a longer line without newline is sent in pieces (bounded memory per viewer)


# ---------------------------------------------------------------------------------------------------- the gate

class Sessions:
    """Cookie sessions for GET requests from clients that cannot send headers (EventSource)."""

    def __init__(self):
        self.expiry: dict = {}

    def new(self) -> str:
        now = time.time()
        for sid, exp in list(self.expiry.items()):
            if exp < now:
                del self.expiry[sid]
        if len(self.expiry) >= MAX_SESSIONS:
            self.expiry.pop(next(iter(self.expiry)))
        sid = secrets.token_urlsafe(32)
        self.expiry[sid] = now + SESSION_SECONDS
        return sid

    def valid(self, sid: str) -> bool:
        return self.expiry.get(sid, 0) > time.time()


def manager_rules(token: str, cors_origins: set, sessions: Sessions):
    """The gate's (protected, check) for the manager: origin allow-list, no token in URLs, token or cookie."""
    def protected(path: str) -> bool:
        return path.startswith(("/api", "/mcp"))

    def authorized(scope: dict, headers: dict) -> bool:
        given = bearer_token(headers) or headers.get("x-manager-token", "")
        if given:
            return same_secret(given, token)
        if scope["method"] != "GET":  # a cookie alone never changes anything (CSRF)
            return False
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and sessions.valid(value):
                return True
        return False

    def check(scope: dict, headers: dict) -> Optional[Refusal]:
        origin = headers.get("origin")
        if origin and origin not in cors_origins and urlsplit(origin).netloc != headers.get("host", ""):
            return Refusal(403, f"requests from origin {origin} are refused; start the manager with "
                                f"--cors_origins {origin} to allow it")
        if origin in cors_origins and scope["method"] == "OPTIONS":
            return None  # a CORS preflight carries no credentials; CORSMiddleware answers it
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if TOKEN_QUERY_KEYS & {k.lower() for k in query}:
            return Refusal(400, "do not put the token in the URL (it ends up in logs and history); send it as the "
                                "header 'Authorization: Bearer <token>'")
        if not authorized(scope, headers):
            return Refusal(401, "missing or wrong token: send 'Authorization: Bearer <token>' (printed by the manager "
                                "at start, or its TRAIN_MANAGER_TOKEN)", headers=((b"www-authenticate", b"Bearer"),))
        return None
    return protected, check


def render_refusal(r: Refusal) -> bytes:
    return json.dumps({"detail": r.message}, ensure_ascii=False).encode()


# ------------------------------------------------------------------------------------------------------ routes

def get_manager(request: Request) -> RunManager:
    return request.app.state.manager


async def json_body(request: Request) -> dict:
    """The body as a JSON object ({} when empty); anything else is a 400 that says what was wrong."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except RecursionError:  # e.g. 10,000 nested [ ]: Python's parser gives up at ~1,000 levels
        raise RequestError(400, "the body is nested too deeply; send a flat JSON object") from None
    except ValueError:
        raise RequestError(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    return data


router = APIRouter()


@router.post("/api/session")
async def session(request: Request):
    """A short-lived cookie for clients that cannot send headers (EventSource); GET requests only."""
    resp = JSONResponse({"expires_in_s": SESSION_SECONDS})
    resp.set_cookie(SESSION_COOKIE, request.app.state.sessions.new(), max_age=SESSION_SECONDS, httponly=True,
                    samesite="strict", path="/")
    return resp


@router.get("/api/status")
async def status(manager: RunManager = Depends(get_manager)):
    return {"running": manager.active is not None, "run": manager.status(manager.active),
            "devices": manager.devices, "launcher": manager.launcher, "stages": list(STAGES)}


@router.get("/api/stages")
async def stages():
    return {"stages": [stage_info(s) for s in STAGES]}


@router.get("/api/devices")
async def devices(manager: RunManager = Depends(get_manager)):
    manager.devices = await asyncio.to_thread(detect_devices)
    return manager.devices


@router.get("/api/npu")
async def npu():
    """The fork's endpoint: raw `npu-smi info` when present."""
    if not shutil.which("npu-smi"):
        return {"available": False, "info": None}
    text = await asyncio.to_thread(_run_quiet, ["npu-smi", "info"])
    return {"available": True, "info": text}


@router.get("/api/weights")
async def weights():
    out = []
    for f in sorted((ROOT / "out").glob("*.pth")):
        meta = None
        with contextlib.suppress(OSError, ValueError):
            meta = read_sidecar(f)
        cfg = meta.get("model_config") if isinstance(meta, dict) else None
        cfg = cfg if isinstance(cfg, dict) else {}  # no sidecar (a MiniMind release .pth): sizes unknown
        out.append({"name": f.stem, "path": display_path(f), "size_bytes": f.stat().st_size,
                    "modified": f.stat().st_mtime, "hidden_size": cfg.get("hidden_size"),
                    "num_hidden_layers": cfg.get("num_hidden_layers"), "use_moe": cfg.get("use_moe")})
    lora = [{"name": d.name, "path": display_path(d)} for d in sorted((ROOT / "out" / "lora").glob("*"))
            if d.is_dir()]
    return {"weights": out, "lora": lora}


@router.get("/api/datasets")
async def datasets():
    files = sorted((ROOT / "dataset").glob("*.jsonl")) + sorted((ROOT / "dataset" / "demo").glob("*.jsonl"))
    return {"datasets": [{"name": f.name, "path": display_path(f), "size_bytes": f.stat().st_size,
                          "demo": f.parent.name == "demo"} for f in files]}


@router.post("/api/train/start")
async def train_start(data: dict = Depends(json_body), manager: RunManager = Depends(get_manager)):
    unknown = set(data) - {"stage", "flags", "nproc"}
    if unknown:
        raise RequestError(400, f"unknown fields {sorted(unknown)}; send {{stage, flags, nproc}}")
    rec = await manager.start(data.get("stage"), data.get("flags", {}), data.get("nproc"))
    manager.ensure_watcher()
    return {"run": rec}


@router.post("/api/train/stop")
async def train_stop(manager: RunManager = Depends(get_manager)):
    return {"run": await manager.stop()}


@router.get("/api/runs")
async def runs(manager: RunManager = Depends(get_manager)):
    return {"runs": [manager.status(r) if manager.active and r["id"] == manager.active["id"] else r
                     for r in manager.history()]}


@router.get("/api/runs/{run_id}")
async def run(run_id: str, manager: RunManager = Depends(get_manager)):
    rec = manager.load(run_id)
    return {"run": manager.status(manager.active if manager.active and manager.active["id"] == run_id else rec)}


@router.get("/api/runs/{run_id}/metrics")
async def metrics(run_id: str, after_step: int = -1, limit: int = 2000,
                  manager: RunManager = Depends(get_manager)):
    rec = manager.load(run_id)
    if not 1 <= limit <= 20000:
        raise RequestError(400, "limit: 1..20000")
    points = await asyncio.to_thread(read_metrics, ROOT / rec["metrics"], rec["started_at"] - 1, after_step)
    return {"run_id": run_id, "points": thin(points, limit)}


@router.get("/api/train/logs")
async def train_logs(request: Request, run_id: Optional[str] = None, tail_bytes: int = 256 * 1024,
                     manager: RunManager = Depends(get_manager)):
    if run_id is None:
        rec = manager.active or next(iter(manager.history()), None)
        if rec is None:
            raise RequestError(404, "no runs yet")
    else:
        rec = manager.load(run_id)
    path = manager.log_path(rec)
    last = request.headers.get("last-event-id")
    if last is not None:
        if not last.isdigit():
            raise RequestError(400, "Last-Event-ID must be a byte offset sent by this stream")
        start = int(last)
        with contextlib.suppress(OSError):
            if start > path.stat().st_size:
                raise RequestError(400, "Last-Event-ID is past the end of this run's log")
    else:
        start = line_start_near_end(path, max(0, tail_bytes))

    def is_live():
        return manager.active is not None and manager.active["id"] == rec["id"]

    frames = stream_log(path, start, is_live, request.app.state.heartbeat_s)
    return StreamingResponse(frames, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-Id": rec["id"]})

# the fork's simple JSON tool endpoints (the MCP server at /mcp serves the same tools)
@router.get("/api/tools")
async def tools():
    cases = [{"id": cid, "lang": lang, "tools": list(names), "question": question, "expected": expected}
             for cid, lang, names, question, expected in eval_tool_call.SUITE if names != ("corpus",)]
    return {"tools": tool_mocks.MOCK_TOOLS, "cases": cases, "metrics": eval_tool_call.METRICS}


@router.post("/api/tools/{name}")
async def call_tool(name: str, data: dict = Depends(json_body)):
    return {"name": name, "result": tool_mocks.run_tool(name, data)}


# ------------------------------------------------------------------------------------------------------- the app

def build_app(manager: RunManager, token: str, cors_origins=(), max_body_bytes: int = 64 * 1024,
              heartbeat_s: float = 15.0, app_dir: Optional[Path] = None):
    """The ASGI app: FastAPI (routes, /mcp, the web app) inside CORS (if asked) inside the shared gate."""
    mcp_server = build_mcp_server()
    # Gate (token + origin check) already fronts /mcp; the SDK's Host allow-list would refuse the docker proxy
    mcp_app = mcp_server.streamable_http_app(
        streamable_http_path="/", stateless_http=True, json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        manager.ensure_watcher()
        async with mcp_server.session_manager.run():
            yield

    app = FastAPI(title="MiniMind training manager", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    sessions = Sessions()
    app.state.manager, app.state.sessions, app.state.heartbeat_s = manager, sessions, heartbeat_s

    async def request_error(_req, e: RequestError):
        return JSONResponse({"detail": e.message}, status_code=e.status)
    app.add_exception_handler(RequestError, request_error)
    app.include_router(router)
    app.mount("/mcp", mcp_app)
    app_dir = Path(app_dir) if app_dir else None
    if app_dir and (app_dir / "index.html").exists():
        app.mount("/", StaticFiles(directory=app_dir, html=True), name="app")
    else:
        app.add_api_route("/", no_app, methods=["GET"])

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        resp = await call_next(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp

    inner = app
    if cors_origins:
        inner = CORSMiddleware(app, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                               allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Manager-Token",
                                              "Accept", "Mcp-Protocol-Version"], allow_credentials=False)
    protected, check = manager_rules(token, set(cors_origins), sessions)
    gate = Gate(inner, protected, check, render_refusal, max_body_bytes)
    gate.sessions = sessions  # tests mint cookies the way POST /api/session does

    async def mcp_slash(scope, receive, send):  # the MCP endpoint is mounted at /mcp/; clients post to /mcp
        if scope["type"] == "http" and scope["path"] == "/mcp":
            scope = {**scope, "path": "/mcp/", "raw_path": b"/mcp/"}
        await gate(scope, receive, send)
    mcp_slash.gate = gate
    return mcp_slash


async def no_app():
    return HTMLResponse("<p>The web app is not built. Build it with<br><code>cd docs/tutorial/react-app && "
                        "npm ci && npm run build</code><br>then restart the manager. The API is at /api.</p>")


def build_mcp_server():
    """The mock tools of scripts/toolcall/tool_mocks.py as an MCP server (official SDK, streamable HTTP)."""
    server = MCPServer("minimind-mock-tools", instructions="Safe mock tools: weather, calculator, search, time.")
    doc = {t["function"]["name"]: t["function"]["description"] for t in tool_mocks.MOCK_TOOLS}

    @server.tool(description=doc["get_weather"])
    def get_weather(city: str, unit: str = "celsius") -> dict:
        return tool_mocks.run_tool("get_weather", {"city": city, "unit": unit})

    @server.tool(description=doc["calculator"])
    def calculator(expression: str) -> dict:
        return tool_mocks.run_tool("calculator", {"expression": expression})

    @server.tool(description=doc["search"])
    def search(query: str, top_k: int = 3) -> dict:
        return tool_mocks.run_tool("search", {"query": query, "top_k": top_k})

    @server.tool(description=doc["get_time"])
    def get_time(timezone: str = "UTC") -> dict:
        return tool_mocks.run_tool("get_time", {"timezone": timezone})

    return server


# ------------------------------------------------------------------------------------------------- log stream

async def stream_log(path: Path, start: int, is_live, heartbeat_s: float, poll_s: float = 0.2):
    """SSE frames for the lines of `path` from byte offset `start`: `id:` = the offset after the line."""
    yield "retry: 2000\n\n"
    base, pending, last_beat = start, b"", time.monotonic()  # base = file offset where `pending` begins
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(base + len(pending))
                chunk = f.read(LOG_CHUNK)
        except OSError:
            chunk = b""
        if chunk:
            pending += chunk
            frames = []
            while True:
                nl = pending.find(b"\n")
                if nl < 0:
                    break
                base += nl + 1
                frames.append(_frame(pending[:nl], base))
                pending = pending[nl + 1:]
            while len(pending) >= MAX_LINE:
                base += MAX_LINE
                frames.append(_frame(pending[:MAX_LINE], base))
                pending = pending[MAX_LINE:]
            if frames:
                yield "".join(frames)
                last_beat = time.monotonic()
            continue  # read on at once while there is more
        if not is_live():
            if pending:
                yield _frame(pending, base + len(pending))
            yield "event: end\ndata: {}\n\n"
            return
        if time.monotonic() - last_beat >= heartbeat_s:
            yield ": heartbeat\n\n"
            last_beat = time.monotonic()
        await asyncio.sleep(poll_s)


def _frame(raw: bytes, end_offset: int) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    text = text.rsplit("\r", 1)[-1]  # a progress bar redraws with \r: keep what the terminal would show
    return f"id: {end_offset}\ndata: {text}\n\n"


def line_start_near_end(path: Path, tail_bytes: int) -> int:
    """Offset of the first full line within the last `tail_bytes` of the file (0 when the file is small)."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    if size <= tail_bytes:
        return 0
    with open(path, "rb") as f:
        f.seek(size - tail_bytes)
        head = f.read(min(tail_bytes, MAX_LINE))
    nl = head.find(b"\n")
    return size - tail_bytes + (nl + 1 if nl >= 0 else 0)


# -------------------------------------------------------------------------------------------------------- CLI

def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiniMind training manager / 训练管理服务",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback exposes the manager to the network (token still "
                        "required), e.g. 0.0.0.0 inside a container behind nginx")
    p.add_argument("--port", type=int, default=8999)
    p.add_argument("--cors_origins", nargs="*", default=[],
                   help="origins allowed to call the API from a browser (e.g. http://127.0.0.1:5173); default none")
    p.add_argument("--state_dir", default="logs/train_manager", help="run records, logs and the pid file")
    p.add_argument("--app_dir", default="docs/tutorial/react-app/dist", help="the built web app served at /")
    p.add_argument("--launcher", default="auto", choices=["auto", "torchrun", "python"],
                   help="auto: torchrun --nproc_per_node N on N accelerators, one plain process on CPU")
    p.add_argument("--stop_grace_s", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL on stop")
    p.add_argument("--heartbeat_s", type=float, default=15.0, help="seconds between SSE heartbeat comments")
    # 64 KB: the largest real request is a start with every flag of a stage set, about 3 KB of JSON
    p.add_argument("--max_body_bytes", type=int, default=64 * 1024, help="largest request body accepted")
    add_gate_args(p)
    return p


def serve(args) -> None:
    """Check the flags, make the run manager and serve until stopped."""
    # a plain stderr handler before the MCP SDK installs its rich one (its basicConfig is then a no-op): under a
    # burst of connections at the open-file limit asyncio logs EMFILE, and rich's handler imports a module to
    # print it, fails with EMFILE again inside the loop's exception handler and took the whole manager down
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    with user_errors():
        token = os.environ.get("TRAIN_MANAGER_TOKEN") or secrets.token_urlsafe(24)
        if len(token) < 16:
            raise UserError("TRAIN_MANAGER_TOKEN is shorter than 16 characters; use e.g. "
                            "python -c 'import secrets; print(secrets.token_urlsafe(24))'")
        if args.stop_grace_s < 0 or args.heartbeat_s <= 0 or args.max_body_bytes < 1024:
            raise UserError("--stop_grace_s >= 0, --heartbeat_s > 0, --max_body_bytes >= 1024")
        for origin in args.cors_origins:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise UserError(f"--cors_origins {origin!r}: an origin is scheme://host[:port], no path")
        limits = limits_from_args(args)
        state = Path(args.state_dir)
        state = state if state.is_absolute() else ROOT / state
        manager = RunManager(state, args.launcher, args.stop_grace_s)
        app_dir = Path(args.app_dir)
        app_dir = app_dir if app_dir.is_absolute() else ROOT / app_dir
        app = build_app(manager, token, args.cors_origins, args.max_body_bytes, args.heartbeat_s, app_dir)
        print(f"training manager on http://{args.host}:{args.port}  (devices: {manager.devices['kind']} "
              f"x{manager.devices['count']}, runs in {display_path(state)})", flush=True)
        if not os.environ.get("TRAIN_MANAGER_TOKEN"):
            print(f"token: {token}\n  (set TRAIN_MANAGER_TOKEN to choose your own; the app asks for it once)",
                  flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {args.host}: reachable from the network (token required)", flush=True)
        if not app_dir.joinpath("index.html").exists():
            print("web app not built: cd docs/tutorial/react-app && npm ci && npm run build", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **uvicorn_options(limits))
