"""Training manager: start, watch and stop one training run from a browser (or curl), safely.

    python scripts/serve_train_manager.py                      # 127.0.0.1:8999, prints a fresh token
    TRAIN_MANAGER_TOKEN=... python scripts/serve_train_manager.py --port 8999
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8999/api/stages

It also serves the built web app (docs/tutorial/react-app/dist) at `/`, and an MCP server (streamable HTTP, the
official `mcp` SDK) at `/mcp` with the safe mock tools of scripts/tool_mocks.py, the ones scripts/eval_tool_call.py
scores models with (`GET /api/tools` lists them with eval_tool_call's suite of cases, for the web app's auto-test).

Safe by construction, because a training launcher is a remote-code-execution service if it is careless:
- binds 127.0.0.1 unless told otherwise; every /api and /mcp request needs the token, as `Authorization: Bearer`
  (or `X-Manager-Token`) or, for GET requests only (EventSource), a 15-minute HttpOnly SameSite=Strict cookie from
  `POST /api/session`; a token in the URL is refused, since URLs end up in access logs and browser history;
- requests from another Origin are refused unless it is on the --cors_origins allow-list (CORS is off by default);
- a run is a stage from the allow-list (trainer/train_{stage}.py) plus a JSON object of flags, each checked
  against that trainer's own `get_parser()`: known flag, JSON type, choices, the trainer's own minimum values;
  path flags must resolve (symlinks followed) inside dataset/, out/, checkpoints/ (logs/ for --log_dir, and
  model/ too for --tokenizer_path); weight and adapter names are plain names; flags that load or run foreign
  code (--reward_model_path, --reward_fn, --trust_remote_code) are refused;
- the child is an argv list (no shell), in its own session, so stop (SIGTERM, then SIGKILL after --stop_grace_s)
  reaches the whole torchrun tree and never the manager; one run at a time;
- request bodies are capped (--max_body_bytes); logs go straight from the child to a file under logs/ and are
  streamed from that file, so memory stays bounded whatever the log size or the number of viewers.

The log stream (`GET /api/train/logs`, server-sent events) gives each line an `id:` (its end offset in the log
file), so a reconnecting client sends `Last-Event-ID` and continues without gaps or duplicates; it sends a
heartbeat comment every --heartbeat_s and an `end` event when the run is over. Streams are async generators
(no thread per viewer). Progress (step, loss, tokens/s, ETA) comes from the trainer's metrics log
`{save_dir}/{weight_stem}.metrics.jsonl`, not from parsing text.

Every run's record is a JSON file under logs/train_manager/runs/; the live run's pid (with its start time, against
pid reuse) is in logs/train_manager/active.json, so a restarted manager adopts a run that is still going or marks
it `interrupted`.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import asyncio
import contextlib
import hmac
import importlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import psutil

from model.checkpoint import atomic_write_json, read_sidecar, weight_stem
from model.runtime import ROOT, UserError, display_path, user_errors

STAGES = ("pretrain", "full_sft", "lora", "dpo", "reason", "distillation", "ppo", "grpo", "spo")
# flags that make a trainer load a model folder with its Python code, or import a user's function
REFUSED_FLAGS = {
    "reward_model_path": "loads a reward model (optionally with its own Python code); run it from a shell",
    "reward_fn": "imports and runs a Python function; run it from a shell",
    "trust_remote_code": "runs Python code shipped with a model folder; run it from a shell",
}
# where each path flag may point (after resolving symlinks); any other path-like value is refused
PATH_FLAGS = {
    "save_dir": ("out",),
    "checkpoint_dir": ("checkpoints",),
    "data_path": ("dataset",),
    "tokenizer_path": ("model", "out", "dataset"),
    "log_dir": ("logs",),
}
DEFAULT_PATH_ROOTS = ("dataset", "out", "checkpoints")
NAME_FLAGS = {"save_weight", "from_weight", "from_teacher_weight", "lora_name"}  # become parts of file names
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PLAIN_STRING_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")  # device names, tracker project, ...
TOKEN_QUERY_KEYS = {"token", "access_token", "api_key", "apikey", "key", "auth"}
SESSION_COOKIE = "mm_session"
SESSION_SECONDS = 15 * 60
RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
LOG_CHUNK = 64 * 1024  # bytes read from a log file per step of a stream
MAX_LINE = 16 * 1024  # a longer line without newline is sent in pieces (bounded memory per viewer)
LIVE = ("starting", "running", "stopping")


class RequestError(Exception):
    """A refused request: HTTP status + a message that says what was wrong and how to fix it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ------------------------------------------------------------------------------------------------- stages and flags

@lru_cache(maxsize=None)
def stage_parser(stage: str) -> argparse.ArgumentParser:
    """The trainer's own parser (imported, so the manager can never disagree with the trainer about a flag)."""
    return importlib.import_module(f"trainer.train_{stage}").get_parser()


def _flag_actions(stage: str) -> dict:
    """`--name` -> argparse action, for every option of the stage except --help."""
    out = {}
    for action in stage_parser(stage)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        for opt in action.option_strings:
            if opt.startswith("--"):
                out[opt[2:]] = action
    return out


def _type_name(action) -> str:
    t = action.type
    return "int" if t is int else "float" if t is float else "str"


def flag_kind(name: str, action) -> str:
    if name in REFUSED_FLAGS or action.dest in REFUSED_FLAGS:
        return "refused"
    if action.dest in PATH_FLAGS:
        return "path"
    if action.dest in NAME_FLAGS or name in NAME_FLAGS:
        return "name"
    return "value"


def _plain_default(value):
    """A trainer default as JSON: DeviceDefault (a default that depends on the device) -> its plain value."""
    return value.default if hasattr(value, "per_device") else value


def stage_info(stage: str) -> dict:
    """The stage's flags with type, default, choices, help and group, straight from its parser."""
    parser = stage_parser(stage)
    groups = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    flags = []
    for name, action in _flag_actions(stage).items():
        default = None if action.default is argparse.SUPPRESS else _plain_default(action.default)
        per_device = getattr(action.default, "per_device", None)
        kind = flag_kind(name, action)
        flags.append({
            "name": name, "dest": action.dest, "type": _type_name(action), "default": default,
            "choices": list(action.choices) if action.choices else None, "help": action.help or "",
            "group": groups.get(id(action), ""), "kind": kind, "per_device": dict(per_device) if per_device else None,
            "alias_of": action.dest if name != action.dest else None,
            "roots": list(PATH_FLAGS.get(action.dest, DEFAULT_PATH_ROOTS)) if kind == "path" else None,
            "refused_reason": REFUSED_FLAGS.get(action.dest) if kind == "refused" else None,
        })
    return {"name": stage, "script": f"trainer/train_{stage}.py", "description": parser.description or "",
            "flags": flags}


def confine_path(flag: str, value: str, roots) -> str:
    """The path relative to the repository root if it resolves inside one of `roots`, else RequestError."""
    if "\x00" in value or not value.strip():
        raise RequestError(400, f"--{flag}: empty path or NUL byte")
    p = Path(value).expanduser()
    resolved = (p if p.is_absolute() else ROOT / p).resolve()
    for root in roots:
        base = (ROOT / root).resolve()
        if resolved == base or base in resolved.parents:
            return display_path(resolved)
    raise RequestError(400, f"--{flag} {value!r} resolves to {resolved}, outside the allowed folders "
                            f"{', '.join(r + '/' for r in roots)} of the project; put the file there (or a path "
                            f"relative to the repository root, e.g. {roots[0]}/...)")


def validate_flags(stage: str, flags) -> list:
    """JSON flags -> the trainer argv (after the script name). Every refusal is a RequestError(400)."""
    if stage not in STAGES:
        raise RequestError(400, f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if not isinstance(flags, dict):
        raise RequestError(400, "flags must be a JSON object {\"flag_name\": value, ...}")
    actions = _flag_actions(stage)
    argv = []
    for raw_name, value in flags.items():
        name = raw_name[2:] if isinstance(raw_name, str) and raw_name.startswith("--") else raw_name
        if not isinstance(name, str) or name not in actions:
            raise RequestError(400, f"unknown flag {raw_name!r} for stage {stage} (see GET /api/stages for its flags)")
        action = actions[name]
        kind = flag_kind(name, action)
        if kind == "refused":
            raise RequestError(400, f"--{name} is refused by the training manager: "
                                    f"{REFUSED_FLAGS[action.dest]}")
        if value is None:  # null = the trainer's default
            continue
        typ = _type_name(action)
        if isinstance(value, (bool, list, dict)):
            raise RequestError(400, f"--{name}: expected {typ}, got {json.dumps(value)}")
        if typ == "int":
            if not isinstance(value, int):
                raise RequestError(400, f"--{name}: expected an integer, got {json.dumps(value)}")
            text = str(value)
        elif typ == "float":
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestError(400, f"--{name}: expected a finite number, got {json.dumps(value)}")
            text = repr(float(value))
        else:
            if not isinstance(value, str):
                raise RequestError(400, f"--{name}: expected a string, got {json.dumps(value)}")
            if kind == "path":
                text = confine_path(name, value, PATH_FLAGS.get(action.dest, DEFAULT_PATH_ROOTS))
            elif kind == "name":
                if not NAME_RE.match(value) or ".." in value:
                    raise RequestError(400, f"--{name} {value!r}: a weight/adapter name is letters, digits, _ . - "
                                            f"(no paths), e.g. full_sft")
                text = value
            else:
                if not PLAIN_STRING_RE.match(value):
                    raise RequestError(400, f"--{name} {value!r}: only letters, digits and _ . : + - are accepted")
                text = value
        if action.choices and (int(text) if typ == "int" else float(text) if typ == "float" else text) \
                not in action.choices:
            raise RequestError(400, f"--{name} {text}: choose one of {', '.join(map(str, action.choices))}")
        argv += [f"--{name}", text]
    parse_like_trainer(stage, argv)
    return argv


def parse_like_trainer(stage: str, argv: list) -> argparse.Namespace:
    """Parse as the trainer will, plus the trainer's own minimum-value checks; errors become RequestError."""
    from trainer.trainer_utils import check_common_args
    parser = stage_parser(stage)

    def fail(message):
        raise RequestError(400, f"stage {stage}: {message}")

    old = parser.error, parser.exit
    parser.error, parser.exit = fail, lambda status=0, message=None: fail(message or f"exit {status}")
    try:
        args = parser.parse_args(argv)
    finally:
        parser.error, parser.exit = old
    plain = argparse.Namespace(**{k: _plain_default(v) for k, v in vars(args).items()})
    try:
        check_common_args(plain)
    except UserError as e:
        raise RequestError(400, str(e)) from None
    return args


def metrics_path_for(stage: str, args) -> Path:
    """Where the trainer writes its metrics log (see docs: {save_dir}/{weight_stem}.metrics.jsonl)."""
    name = args.lora_name if stage == "lora" else args.save_weight
    save_dir = Path(args.save_dir)
    stem = weight_stem(name, args.hidden_size, args.use_moe)
    return (save_dir if save_dir.is_absolute() else ROOT / save_dir) / f"{stem}.metrics.jsonl"


# ------------------------------------------------------------------------------------------------------- devices

def _run_quiet(argv: list, timeout: float = 10.0) -> Optional[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def detect_devices() -> dict:
    """Ascend through npu-smi, CUDA through nvidia-smi (or torch), else the CPU."""
    if shutil.which("npu-smi"):
        text = _run_quiet(["npu-smi", "info", "-l"]) or ""
        ids = re.findall(r"NPU ID\s*:\s*(\d+)", text)
        m = re.search(r"Total Count\s*:\s*(\d+)", text)
        count = int(m.group(1)) if m else len(ids)
        if count:
            return {"kind": "npu", "count": count, "source": "npu-smi",
                    "devices": [{"index": int(i), "name": "Ascend NPU"} for i in ids] or
                               [{"index": i, "name": "Ascend NPU"} for i in range(count)]}
    if shutil.which("nvidia-smi"):
        text = _run_quiet(["nvidia-smi", "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
                           "--format=csv,noheader,nounits"])
        if text and text.strip():
            devs = []
            for line in text.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 5:
                    def num(s):
                        try:
                            return float(s)
                        except ValueError:
                            return None
                    devs.append({"index": int(parts[0]), "name": parts[1], "memory_total_mib": num(parts[2]),
                                 "memory_used_mib": num(parts[3]), "utilization_percent": num(parts[4])})
            if devs:
                return {"kind": "cuda", "count": len(devs), "source": "nvidia-smi", "devices": devs}
    import torch
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return {"kind": "cuda", "count": n, "source": "torch",
                "devices": [{"index": i, "name": torch.cuda.get_device_name(i)} for i in range(n)]}
    mem = psutil.virtual_memory()
    return {"kind": "cpu", "count": 0, "source": "cpu",
            "devices": [{"index": 0, "name": f"CPU ({os.cpu_count()} cores)", "memory_total_mib": mem.total / 2**20,
                         "memory_used_mib": (mem.total - mem.available) / 2**20}]}


# ----------------------------------------------------------------------------------------------------- metrics

def read_metrics(path: Path, since: float = 0.0, after_step: int = -1) -> list:
    """Points of a metrics log, skipping unparsable (partial) lines and lines from before this run started."""
    points = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    p = json.loads(line)
                except ValueError:
                    continue
                if isinstance(p, dict) and isinstance(p.get("step"), int) and p["step"] > after_step \
                        and float(p.get("time", since) or 0) >= since:
                    points.append(p)
    except OSError:
        return []
    return points


def progress_of(points: list) -> Optional[dict]:
    if not points:
        return None
    last = points[-1]
    total = last.get("total_steps") or 0
    keys = ("step", "total_steps", "epoch", "loss", "loss_smooth", "lr", "tokens", "tokens_per_s", "mfu_percent",
            "elapsed_s", "eta_s")
    out = {k: last.get(k) for k in keys}
    out["percent"] = round(100.0 * last["step"] / total, 2) if total else None
    return out


def thin(points: list, limit: int) -> list:
    """At most `limit` points, evenly spaced, always keeping the last one (for a loss curve)."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    return kept if kept[-1] is points[-1] else kept + [points[-1]]


# --------------------------------------------------------------------------------------------------------- runs

def _proc_alive(pid: Optional[int], create_time: Optional[float]) -> bool:
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 1.0:
            return False  # the pid was reused by another process
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class RunManager:
    """One run at a time: start (validated argv, own session), watch, stop (process tree), records on disk."""

    def __init__(self, state_dir: Path, launcher: str = "auto", stop_grace_s: float = 10.0,
                 devices: Optional[dict] = None):
        self.state_dir = Path(state_dir)
        self.runs_dir = self.state_dir / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.active_file = self.state_dir / "active.json"
        self.launcher, self.stop_grace_s = launcher, stop_grace_s
        self.devices = devices or detect_devices()
        self.active: Optional[dict] = None  # the live run's record
        self.popen: Optional[subprocess.Popen] = None  # None for a run adopted after a manager restart
        self.stop_requested = False
        self.known: dict = {}  # pid -> psutil.Process of every process seen in the live run's tree
        self.lock = asyncio.Lock()
        self._watch_task: Optional[asyncio.Task] = None
        self._recover()

    # ---- records
    def _record_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def save(self, rec: dict) -> None:
        atomic_write_json(rec, self._record_path(rec["id"]))

    def load(self, run_id: str) -> dict:
        if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
            raise RequestError(400, f"bad run id {run_id!r}")
        try:
            return json.loads(self._record_path(run_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RequestError(404, f"no run {run_id}") from None

    def history(self) -> list:
        recs = []
        for f in sorted(self.runs_dir.glob("*.json"), reverse=True):
            try:
                recs.append(json.loads(f.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return recs

    def log_path(self, rec: dict) -> Path:
        return ROOT / rec["log"]

    def _recover(self) -> None:
        """After a manager restart: adopt the run in active.json if its process lives, else mark it interrupted."""
        active = None
        with contextlib.suppress(OSError, ValueError):
            active = json.loads(self.active_file.read_text(encoding="utf-8"))
        for rec in self.history():
            if rec.get("status") not in LIVE:
                continue
            if active and active.get("id") == rec["id"] and _proc_alive(active.get("pid"), active.get("create_time")):
                rec["note"] = "adopted by a restarted manager (exit code will be unknown)"
                self.active, self.popen = rec, None
                self.save(rec)
                continue
            rec.update(status="interrupted", ended_at=time.time(),
                       note="the manager restarted and the training process was no longer running")
            self.save(rec)
        if self.active is None:
            self.active_file.unlink(missing_ok=True)

    # ---- start
    def plan(self, stage: str, flags: dict, nproc: Optional[int]) -> tuple:
        """(argv, nproc, launcher) for a validated request."""
        trainer_argv = validate_flags(stage, flags)
        accel = self.devices["count"] if self.devices["kind"] in ("cuda", "npu") else 0
        launcher = self.launcher if self.launcher != "auto" else ("torchrun" if accel else "python")
        if accel:
            most = accel
        else:
            most = (os.cpu_count() or 1) if launcher == "torchrun" else 1
        n = most if nproc is None and accel else (1 if nproc is None else nproc)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
            raise RequestError(400, f"nproc {n!r}: between 1 and {most} "
                                    f"({'devices found' if accel else 'CPU: one process unless --launcher torchrun'})")
        script = f"trainer/train_{stage}.py"
        if launcher == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                    script, *trainer_argv]
        else:
            argv = [sys.executable, script, *trainer_argv]
        return argv, n, launcher, trainer_argv

    async def start(self, stage: str, flags: dict, nproc: Optional[int] = None) -> dict:
        argv, n, launcher, trainer_argv = self.plan(stage, flags, nproc)  # refuse bad requests first
        async with self.lock:
            if self.active is not None:
                raise RequestError(409, f"run {self.active['id']} ({self.active['stage']}) is still "
                                        f"{self.active['status']}; stop it first (POST /api/train/stop)")
            args = parse_like_trainer(stage, trainer_argv)
            metrics = metrics_path_for(stage, args)
            run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
            log = self.runs_dir / f"{run_id}.log"
            env = {k: v for k, v in os.environ.items() if k != "TRAIN_MANAGER_TOKEN"}
            env["PYTHONUNBUFFERED"] = "1"
            started = time.time()
            with open(log, "ab") as out:
                out.write(f"$ {' '.join(argv)}\n".encode())
                out.flush()
                popen = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                create_time = psutil.Process(popen.pid).create_time()
            except psutil.Error:
                create_time = None
            rec = {"id": run_id, "stage": stage, "flags": flags, "argv": argv, "nproc": n, "launcher": launcher,
                   "pid": popen.pid, "create_time": create_time, "status": "running", "exit_code": None,
                   "started_at": started, "ended_at": None, "log": display_path(log),
                   "metrics": display_path(metrics),
                   "weight": display_path(metrics.with_name(metrics.name.replace(".metrics.jsonl", ".pth")))}
            self.active, self.popen, self.stop_requested, self.known = rec, popen, False, {}
            atomic_write_json({"id": run_id, "pid": popen.pid, "create_time": create_time}, self.active_file)
            self.save(rec)
            return rec

    # ---- watch
    def ensure_watcher(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.2)
            ticks += 1
            rec = self.active
            if rec is None:
                continue
            if self.popen is not None:
                code = self.popen.poll()
                alive = code is None
            else:
                code, alive = None, _proc_alive(rec["pid"], rec.get("create_time"))
            if alive:
                if ticks % 5 == 0 or not self.known:
                    self._remember_tree(rec)
                continue
            if rec["status"] == "stopping":
                continue  # stop() is finishing the job
            # the leader is gone; its workers (own sessions under torchrun) must not outlive it
            await asyncio.to_thread(self._signal_tree, rec, signal.SIGKILL)
            self._finish(rec, code)

    def _finish(self, rec: dict, code: Optional[int]) -> None:
        points = read_metrics(ROOT / rec["metrics"], since=rec["started_at"] - 1)
        prog = progress_of(points)
        if self.stop_requested:
            status = "stopped"
        elif code is None:
            done = prog and prog.get("total_steps") and prog["step"] >= prog["total_steps"]
            status = "finished" if done else "ended"
        else:
            status = "finished" if code == 0 else "failed"
        rec.update(status=status, exit_code=code, ended_at=time.time(), progress=prog)
        self.save(rec)
        self.active, self.popen = None, None
        self.active_file.unlink(missing_ok=True)

    # ---- stop
    def _remember_tree(self, rec: dict) -> None:
        """Record the run's processes while the leader lives: torchrun starts each worker in a session of its
        own, and once torchrun is gone they are no longer its children, so they could not be found later."""
        try:
            leader = psutil.Process(rec["pid"])
            if rec.get("create_time") is not None and abs(leader.create_time() - rec["create_time"]) > 1.0:
                return
            for p in [leader] + leader.children(recursive=True):
                self.known.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def _signal_tree(self, rec: dict, sig: int) -> None:
        """Signal the run's process group (the leader's own session) and every process seen in its tree.
        psutil checks each process' start time, so a reused pid is never hit; the manager itself never is."""
        self._remember_tree(rec)
        if rec["pid"] != os.getpgrp():
            with contextlib.suppress(OSError):
                os.killpg(rec["pid"], sig)
        for p in list(self.known.values()):
            if p.pid != os.getpid():
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)

    def _terminate_tree(self, rec: dict, grace: float) -> None:
        """SIGTERM, wait up to `grace` seconds for every process to exit, then SIGKILL what is left."""
        self._signal_tree(rec, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.popen is not None:
                self.popen.poll()  # reap the leader so it does not count as alive
            if not any(_running(p) for p in self.known.values()):
                return
            time.sleep(0.05)
        self._signal_tree(rec, signal.SIGKILL)
        psutil.wait_procs(list(self.known.values()), timeout=5)

    async def stop(self) -> dict:
        rec = self.active
        if rec is None:
            raise RequestError(409, "no run is going")
        if rec["status"] == "stopping":
            return rec
        self.stop_requested = True
        rec["status"] = "stopping"
        self.save(rec)
        with open(self.log_path(rec), "ab") as out:
            out.write(f"[manager] stop: SIGTERM, SIGKILL after {self.stop_grace_s:g} s\n".encode())
        await asyncio.to_thread(self._terminate_tree, rec, self.stop_grace_s)
        code = await asyncio.to_thread(self.popen.wait) if self.popen is not None else None
        self._finish(rec, code)
        return rec

    def status(self, rec: Optional[dict]) -> Optional[dict]:
        if rec is None:
            return None
        points = read_metrics(ROOT / rec["metrics"], since=rec["started_at"] - 1)
        return {**rec, "progress": progress_of(points) or rec.get("progress")}


# ------------------------------------------------------------------------------------------------------ log stream

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


# ----------------------------------------------------------------------------------------------------- security

class Guard:
    """Pure ASGI middleware in front of /api and /mcp: token, cookie session, origin allow-list, body cap."""

    def __init__(self, app, token: str, cors_origins: list, max_body_bytes: int):
        self.app, self.token, self.cors_origins = app, token, set(cors_origins)
        self.max_body_bytes = max_body_bytes
        self.sessions: dict = {}

    def new_session(self) -> str:
        now = time.time()
        for sid, exp in list(self.sessions.items()):
            if exp < now:
                del self.sessions[sid]
        if len(self.sessions) > 1000:
            self.sessions.pop(next(iter(self.sessions)))
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = now + SESSION_SECONDS
        return sid

    async def _refuse(self, send, status: int, message: str, extra_headers=()):
        body = json.dumps({"detail": message}, ensure_ascii=False).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), *extra_headers]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/mcp":  # the MCP endpoint is mounted at /mcp/; clients post to /mcp
            scope = {**scope, "path": "/mcp/", "raw_path": b"/mcp/"}
        guarded = path.startswith(("/api", "/mcp"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin and guarded and origin not in self.cors_origins:
            host = headers.get("host", "")
            if urlsplit(origin).netloc != host:
                return await self._refuse(send, 403, f"requests from origin {origin} are refused; start the manager "
                                                     f"with --cors_origins {origin} to allow it")
        if guarded and origin in self.cors_origins and scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)  # CORS preflight carries no credentials
        if not guarded:
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if TOKEN_QUERY_KEYS & {k.lower() for k in query}:
            return await self._refuse(send, 400, "do not put the token in the URL (it ends up in logs and history); "
                                                 "send it as the header 'Authorization: Bearer <token>'")
        if not self._authorized(scope, headers):
            return await self._refuse(send, 401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                                 "(printed by the manager at start, or its TRAIN_MANAGER_TOKEN)",
                                      [(b"www-authenticate", b"Bearer")])
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await self._refuse(send, 413, f"request body over {self.max_body_bytes} bytes")
        # Read the whole (capped) body here, before the app: a chunked upload has no Content-Length, and an error
        # raised later, from inside the app's receive(), reaches the client as a 500 instead of this 413.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await self._refuse(send, 413, f"request body over {self.max_body_bytes} bytes")
            more = message.get("more_body", False)
        replayed = False

        async def replay_receive():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then disconnect notices, which SSE streams wait for

        await self.app(scope, replay_receive, send)

    def _authorized(self, scope, headers) -> bool:
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-manager-token")
        if given:
            return hmac.compare_digest(given.encode(), self.token.encode())
        if scope["method"] != "GET":  # a cookie alone never changes anything (CSRF)
            return False
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and self.sessions.get(value, 0) > time.time():
                return True
        return False


# --------------------------------------------------------------------------------------------------------- the app

def build_app(manager: RunManager, token: str, cors_origins=(), max_body_bytes: int = 64 * 1024,
              heartbeat_s: float = 15.0, app_dir: Optional[Path] = None):
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.middleware.cors import CORSMiddleware

    from scripts import tool_mocks
    mcp_server = build_mcp_server()
    mcp_app = mcp_server.streamable_http_app(streamable_http_path="/", stateless_http=True, json_response=True,
                                             transport_security=_mcp_security())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        manager.ensure_watcher()
        async with mcp_server.session_manager.run():
            yield

    app = FastAPI(title="MiniMind training manager", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(RequestError)
    async def _request_error(_req, e: RequestError):
        return JSONResponse({"detail": e.message}, status_code=e.status)

    async def body(request: Request) -> dict:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise RequestError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise RequestError(400, "the body must be a JSON object")
        return data

    @app.post("/api/session")
    async def session():
        """A short-lived cookie for clients that cannot send headers (EventSource); GET requests only."""
        resp = JSONResponse({"expires_in_s": SESSION_SECONDS})
        resp.set_cookie(SESSION_COOKIE, guard.new_session(), max_age=SESSION_SECONDS, httponly=True,
                        samesite="strict", path="/")
        return resp

    @app.get("/api/status")
    async def status():
        return {"running": manager.active is not None, "run": manager.status(manager.active),
                "devices": manager.devices, "launcher": manager.launcher, "stages": list(STAGES)}

    @app.get("/api/stages")
    async def stages():
        return {"stages": [stage_info(s) for s in STAGES]}

    @app.get("/api/devices")
    async def devices():
        manager.devices = await asyncio.to_thread(detect_devices)
        return manager.devices

    @app.get("/api/npu")
    async def npu():
        """The fork's endpoint: raw `npu-smi info` when present."""
        if not shutil.which("npu-smi"):
            return {"available": False, "info": None}
        text = await asyncio.to_thread(_run_quiet, ["npu-smi", "info"])
        return {"available": True, "info": text}

    @app.get("/api/weights")
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

    @app.get("/api/datasets")
    async def datasets():
        files = sorted((ROOT / "dataset").glob("*.jsonl")) + sorted((ROOT / "dataset" / "demo").glob("*.jsonl"))
        return {"datasets": [{"name": f.name, "path": display_path(f), "size_bytes": f.stat().st_size,
                              "demo": f.parent.name == "demo"} for f in files]}

    @app.post("/api/train/start")
    async def train_start(request: Request):
        data = await body(request)
        unknown = set(data) - {"stage", "flags", "nproc"}
        if unknown:
            raise RequestError(400, f"unknown fields {sorted(unknown)}; send {{stage, flags, nproc}}")
        rec = await manager.start(data.get("stage"), data.get("flags", {}), data.get("nproc"))
        manager.ensure_watcher()
        return {"run": rec}

    @app.post("/api/train/stop")
    async def train_stop():
        return {"run": await manager.stop()}

    @app.get("/api/runs")
    async def runs():
        return {"runs": [manager.status(r) if manager.active and r["id"] == manager.active["id"] else r
                         for r in manager.history()]}

    @app.get("/api/runs/{run_id}")
    async def run(run_id: str):
        rec = manager.load(run_id)
        return {"run": manager.status(manager.active if manager.active and manager.active["id"] == run_id else rec)}

    @app.get("/api/runs/{run_id}/metrics")
    async def metrics(run_id: str, after_step: int = -1, limit: int = 2000):
        rec = manager.load(run_id)
        if not 1 <= limit <= 20000:
            raise RequestError(400, "limit: 1..20000")
        points = await asyncio.to_thread(read_metrics, ROOT / rec["metrics"], rec["started_at"] - 1, after_step)
        return {"run_id": run_id, "points": thin(points, limit)}

    @app.get("/api/train/logs")
    async def train_logs(request: Request, run_id: Optional[str] = None, tail_bytes: int = 256 * 1024):
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

        return StreamingResponse(stream_log(path, start, is_live, heartbeat_s), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          "X-Run-Id": rec["id"]})

    # the fork's simple JSON tool endpoints (the MCP server at /mcp serves the same tools)
    @app.get("/api/tools")
    async def tools():
        from scripts import eval_tool_call
        cases = [{"id": cid, "lang": lang, "tools": list(names), "question": question, "expected": expected}
                 for cid, lang, names, question, expected in eval_tool_call.SUITE if names != ("corpus",)]
        return {"tools": tool_mocks.MOCK_TOOLS, "cases": cases, "metrics": eval_tool_call.METRICS}

    @app.post("/api/tools/{name}")
    async def call_tool(name: str, request: Request):
        return {"name": name, "result": tool_mocks.run_tool(name, await body(request))}

    app.mount("/mcp", mcp_app)

    app_dir = Path(app_dir) if app_dir else None
    if app_dir and (app_dir / "index.html").exists():
        from fastapi.staticfiles import StaticFiles
        app.mount("/", StaticFiles(directory=app_dir, html=True), name="app")
    else:
        @app.get("/")
        async def no_app():
            return HTMLResponse("<p>The web app is not built. Build it with<br><code>cd docs/tutorial/react-app && "
                                "npm ci && npm run build</code><br>then restart the manager. The API is at /api.</p>")

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
    guard = Guard(inner, token, list(cors_origins), max_body_bytes)
    return guard


def _mcp_security():
    from mcp.server.transport_security import TransportSecuritySettings
    # Guard (token + origin check) already fronts /mcp; the SDK's Host allow-list would refuse the docker proxy
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def build_mcp_server():
    """The mock tools of scripts/tool_mocks.py as an MCP server (official SDK, streamable HTTP)."""
    from mcp.server.mcpserver import MCPServer

    from scripts import tool_mocks
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
    p.add_argument("--max_body_bytes", type=int, default=64 * 1024, help="largest request body accepted")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
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
        state = Path(args.state_dir)
        state = state if state.is_absolute() else ROOT / state
        manager = RunManager(state, args.launcher, args.stop_grace_s)
        app_dir = Path(args.app_dir)
        app = build_app(manager, token, args.cors_origins, args.max_body_bytes, args.heartbeat_s,
                        app_dir if app_dir.is_absolute() else ROOT / app_dir)
        import uvicorn
        where = f"http://{args.host}:{args.port}"
        print(f"training manager on {where}  (devices: {manager.devices['kind']} x{manager.devices['count']}, "
              f"runs in {display_path(state)})", flush=True)
        if not os.environ.get("TRAIN_MANAGER_TOKEN"):
            print(f"token: {token}\n  (set TRAIN_MANAGER_TOKEN to choose your own; the app asks for it once)",
                  flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {args.host}: reachable from the network (token required)", flush=True)
        if not (app_dir if app_dir.is_absolute() else ROOT / app_dir).joinpath("index.html").exists():
            print("web app not built: cd docs/tutorial/react-app && npm ci && npm run build", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
