"""The training manager's runs: one at a time, started as an argv list in its own session, watched, stopped as
a whole process tree, and recorded on disk (so a restarted manager adopts a live run or marks it interrupted).
"""
import asyncio
import contextlib
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
from pathlib import Path
from typing import Optional

import psutil
import torch

from model.checkpoint import atomic_write_json
from model.runtime import ROOT, display_path
from scripts.serve.flags import RequestError, metrics_path_for, parse_like_trainer, validate_flags

RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
LIVE = ("starting", "running", "stopping")


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
