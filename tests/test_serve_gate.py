"""The shared gate (scripts/serve/gate.py) on both real servers: half-sent requests time out with a 408, 300 of them
with the open-file limit at 256 do not lock anyone out, and the API docs need the key (issue 27, items 2 and 4).

Raw sockets, because an HTTP client always sends whole requests. The API server serves an untrained hidden-64
model (nothing here reads its replies); each server runs as a subprocess with RLIMIT_NOFILE 256.
"""
import argparse
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from trainer.trainer_utils import save_weights

ROOT = Path(__file__).resolve().parents[1]
KEY = "gate-test-key-0123456789"
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", TRAIN_MANAGER_TOKEN=KEY)
AUTH = {"Authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def limit_files():  # runs in the child before exec: the open-file limit of a small container
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "out"
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=1))
    save_weights(model, out / "full_sft_64.pth", argparse.Namespace(note="tests/test_serve_gate.py"))
    return out


def start(kind: str, weights: Path, tmp: Path, *extra) -> dict:
    """serve_openai_api.py or serve_train_manager.py on a free port, ready; {"base", "probe", "proc"}."""
    port = free_port()
    if kind == "api":
        argv = ["scripts/serve_openai_api.py", "--save_dir", weights, "--device", "cpu", "--api_key", KEY]
        probe = "/v1/models"
    else:
        argv = ["scripts/serve_train_manager.py", "--state_dir", tmp / "state"]
        probe = "/api/status"
    log = open(tmp / f"{kind}.log", "w")
    proc = subprocess.Popen([sys.executable, *map(str, argv), "--port", str(port), *map(str, extra)], cwd=ROOT,
                            env=ENV, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_files)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(base + probe, headers=AUTH, timeout=5).status_code == 200:
                return {"base": base, "probe": probe, "proc": proc, "port": port, "log": tmp / f"{kind}.log"}
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{kind} server did not start:\n" + (tmp / f"{kind}.log").read_text())
        time.sleep(0.3)


def stop(srv: dict) -> None:
    srv["proc"].terminate()
    try:
        srv["proc"].wait(15)
    except subprocess.TimeoutExpired:
        srv["proc"].kill()


@pytest.fixture(scope="module", params=["api", "manager"])
def quick(request, weights, tmp_path_factory):
    """A server with 2-second header and body deadlines."""
    srv = start(request.param, weights, tmp_path_factory.mktemp(request.param), "--header_timeout_s", 2,
                "--body_timeout_s", 2)
    srv["kind"] = request.param
    yield srv
    stop(srv)


def half_request(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    return s


def answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    except socket.timeout:
        return got + b"<no close within 10 s>"
    finally:
        s.close()


def test_half_sent_headers_get_408_and_the_connection_closes(quick):
    t0 = time.monotonic()
    s = half_request(quick["port"], b"GET " + quick["probe"].encode() + b" HTTP/1.1\r\nHost: x\r\nAuthoriz")
    got = answer(s)
    assert got.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive within 2 s" in got, got
    assert 1.5 < time.monotonic() - t0 < 8


def test_half_sent_body_gets_408_and_the_connection_closes(quick):
    path = b"/v1/chat/completions" if quick["kind"] == "api" else b"/api/train/start"
    s = half_request(quick["port"], b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mod")
    t0 = time.monotonic()
    got = answer(s)
    assert got.startswith(b"HTTP/1.1 408 ") and b"body did not arrive within 2 s" in got, got
    assert time.monotonic() - t0 < 8
    assert httpx.get(quick["base"] + quick["probe"], headers=AUTH, timeout=10).status_code == 200


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
@pytest.mark.parametrize("kind", ["api", "manager"])
def test_300_half_sent_connections_with_256_files_do_not_lock_others_out(kind, weights, tmp_path):
    """Header deadline 120 s, so only the connection cap can keep the server reachable within the 20 s asked."""
    srv = start(kind, weights, tmp_path, "--header_timeout_s", 120)
    held = []
    try:
        for _ in range(300):
            try:
                held.append(half_request(srv["port"], b"GET / HTTP/1.1\r\nHost: x\r\n"))
            except OSError:  # the listen queue can be full for a moment; the point is the server, not this loop
                pass
        assert len(held) >= 250
        t0 = time.monotonic()
        r = httpx.get(srv["base"] + srv["probe"], headers=AUTH, timeout=20)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 20
        assert srv["proc"].poll() is None
    finally:
        for s in held:
            s.close()
        stop(srv)


def test_api_docs_need_the_key_when_one_is_set(quick):
    if quick["kind"] == "manager":  # it serves no API docs at all (docs_url=None): the paths fall to the web app
        for path in ("/docs", "/openapi.json", "/redoc"):
            r = httpx.get(quick["base"] + path, timeout=10)
            assert r.status_code == 404 or "openapi" not in r.text.lower(), (path, r.text[:200])
        return
    for path in ("/docs", "/openapi.json", "/redoc"):
        r = httpx.get(quick["base"] + path, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, r.text)
    assert httpx.get(quick["base"] + "/openapi.json", headers=AUTH, timeout=10).status_code == 200
    assert httpx.get(quick["base"] + "/health", timeout=10).status_code == 200  # stays open for probes


def test_deeply_nested_json_is_a_400_not_a_500(quick):
    path = "/v1/chat/completions" if quick["kind"] == "api" else "/api/train/start"
    body = b"[" * 20000 + b"]" * 20000
    r = httpx.post(quick["base"] + path, content=body, timeout=10,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert httpx.get(quick["base"] + quick["probe"], headers=AUTH, timeout=10).status_code == 200
