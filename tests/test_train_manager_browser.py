"""The built web app (docs/tutorial/react-app/dist) served by a real training manager, driven in headless Chromium
(Debian's /usr/bin/chromium through Playwright): connect with the token, start a tiny CPU run, see log lines and
the loss curve grow, stop it; then the tool playground against a stub OpenAI-compatible server (tool call ->
browser mock -> final answer, which stays text). Skipped only when Chromium or Playwright is missing; the app is
built first when dist/ is missing or stale (tests/browser_util.py). Screenshots go to $MM_SCREENSHOT_DIR when it
is set."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from browser_util import ROOT, ensure_built, needs_browser, wait_until
from browser_util import free_port as _free_port

TOKEN = "browser-test-token-" + "y" * 12

pytestmark = [pytest.mark.slow, needs_browser]


def shot(page, name: str):
    folder = os.environ.get("MM_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    ensure_built()
    state = tmp_path_factory.mktemp("browser_manager")
    port = _free_port()
    log = open(state / "manager.log", "w")
    proc = subprocess.Popen([sys.executable, "scripts/serve_train_manager.py", "--port", str(port), "--state_dir",
                             str(state), "--launcher", "python", "--stop_grace_s", "5"], cwd=ROOT,
                            env={**os.environ, "TRAIN_MANAGER_TOKEN": TOKEN}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(base + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2).is_success:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError((state / "manager.log").read_text())
        time.sleep(0.5)
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_training_tab_starts_watches_and_stops_a_run(manager, browser):
    name = f"_tm_browser_{uuid.uuid4().hex[:8]}"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(manager + "/#training")
        page.fill("input[aria-label=token]", TOKEN)
        page.click("text=连接 / Connect")
        page.wait_for_selector("text=已连接 / connected", timeout=30000)
        assert "CPU" in page.inner_text("[data-testid=devices]")
        page.select_option("select[aria-label=stage]", "pretrain")
        page.eval_on_selector_all("details", "els => els.forEach(e => e.open = true)")
        # defaults come from the trainer's parser via the manager: pretrain's learning rate placeholder is 0.0005
        assert page.get_attribute("#flag-learning_rate", "placeholder") == "0.0005"
        for flag, value in {"hidden_size": "64", "num_hidden_layers": "2", "batch_size": "2", "max_seq_len": "64",
                            "accumulation_steps": "1", "max_steps": "2000", "log_interval": "1",
                            "save_interval": "100000", "save_dir": f"out/{name}",
                            "checkpoint_dir": f"checkpoints/{name}"}.items():
            page.fill(f"#flag-{flag}", value)
        preview = json.loads(page.inner_text("[data-testid=flags-preview]"))
        assert preview["hidden_size"] == 64 and preview["save_dir"] == f"out/{name}"
        # errors show at their field and go away when it is fixed: a number past the trainer's bound, a field of
        # spaces, a data file the manager does not list
        for flag, bad, says in (("batch_size", "70000", "at most 65536"), ("max_seq_len", "  ", "only spaces"),
                                ("data_path", "dataset/not_there.jsonl", "not in the manager's dataset list")):
            page.fill(f"#flag-{flag}", bad)
            assert says in page.inner_text(f"#flag-{flag}-error")
            assert page.is_disabled("text=开始 / Start")
            if flag == "batch_size":
                shot(page, "training_field_error.png")
            page.fill(f"#flag-{flag}", {"batch_size": "2", "max_seq_len": "64", "data_path": ""}[flag])
            assert page.locator(f"#flag-{flag}-error").count() == 0
        assert page.locator("[role=alert]").count() == 0
        page.click("text=开始 / Start")
        # the run view (log + curve) appears once the manager has answered the start with the run's id
        wait_until(page, "document.querySelector('[data-testid=log]')?.innerText.includes('step 3/')")
        wait_until(page, "Number(document.querySelector('[data-testid=loss-chart]')?.dataset.points) >= 3")
        wait_until(page, "document.querySelector('[data-testid=run-status]').innerText.includes('tokens/s')")
        n1 = int(page.get_attribute("[data-testid=loss-chart]", "data-points"))
        wait_until(page, f"Number(document.querySelector('[data-testid=loss-chart]').dataset.points) > {n1}")
        assert page.locator("[data-testid=loss-chart] path").count() == 1
        assert re.search(r"· loss \d+\.\d{4} · [\d,]+ tokens/s · ETA ", page.inner_text("[data-testid=run-status]"))
        # the curve stays inside its half of the run card (a <figure>'s default margins pushed it 40 px out)
        chart, cell = page.evaluate("() => { const c = document.querySelector('[data-testid=loss-chart]'); "
                                    "return [c.getBoundingClientRect().right, c.parentElement.getBoundingClientRect()"
                                    ".right]; }")
        assert chart <= cell + 0.5, (chart, cell)
        shot(page, "training_running.png")
        # typing a new manager address must not restart the shown run's log stream (it did on every keystroke)
        streams = sum("/api/train/logs" in u for u in requests)
        url_field = "input[placeholder*=\"this page's server\"]"
        for typed in ("h", "ht", "htt", ""):
            page.fill(url_field, typed)
        page.wait_for_timeout(500)
        assert sum("/api/train/logs" in u for u in requests) == streams
        assert not [u for u in requests if re.match(r"^https?://[^/]+/(h|ht|htt)/api/", u)]
        # the history row follows the run's steps while it runs
        run_id = page.inner_text("h3:has-text('运行 / Run') code")
        status_step = re.search(r"step (\d+)/", page.inner_text("[data-testid=run-status]")).group(1)
        wait_until(page, f"(() => {{ const row = [...document.querySelectorAll('tr')].find(r => r.textContent.includes("
                         f"'{run_id}')); return row && Number(row.children[3].textContent.split('/')[0]) >= "
                         f"{status_step}; }})()", 10)
        page.click("text=停止 / Stop")
        wait_until(page, "document.querySelector('[data-testid=run-status]').innerText.startsWith('stopped')", 30)
        wait_until(page, "document.querySelector('[data-testid=log]').innerText.includes('[manager] stop')", 30)
        assert "ETA" not in page.inner_text("[data-testid=run-status]")  # a stopped run has nothing left to wait for
        shot(page, "training_stopped.png")
        assert errors == []
        assert not [u for u in requests if "token" in u.lower()], "the token must never be in a URL"
    finally:
        page.close()
        shutil.rmtree(ROOT / "out" / name, ignore_errors=True)
        shutil.rmtree(ROOT / "checkpoints" / name, ignore_errors=True)


class StubModelServer:
    """An OpenAI-compatible stub: first reply calls get_weather, the next answers with the tool's result and a
    string of HTML that must be shown as text."""

    def __init__(self, origin: str):
        from fastapi import FastAPI, Request
        from fastapi.middleware.cors import CORSMiddleware
        import uvicorn
        app = FastAPI()
        app.add_middleware(CORSMiddleware, allow_origins=[origin], allow_methods=["*"], allow_headers=["*"])
        self.bodies = []

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.bodies.append(body)
            last = body["messages"][-1]
            if last["role"] == "tool":
                result = json.loads(last["content"])
                msg = {"role": "assistant", "content": f"北京 {result['temperature']} 度 <img src=x onerror=alert(1)>"}
            else:
                msg = {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                       "function": {"name": "get_weather", "arguments": json.dumps({"city": "北京"})}}]}
            return {"id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_tool_playground_runs_the_loop_against_a_server(manager, browser):
    from scripts.toolcall import tool_mocks
    expected = tool_mocks.run_tool("get_weather", {"city": "北京"})
    with StubModelServer(manager) as stub:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: errors.append("dialog: " + d.message))
        try:
            page.goto(manager + "/#tools")
            page.select_option("select[aria-label='endpoint preset']", "custom")
            page.fill("input[aria-label='custom endpoint']", f"http://127.0.0.1:{stub.port}/v1")
            page.click("text=读取 /models")
            wait_until(page, "document.querySelector('input[aria-label=model]').value === 'stub-model'", 20)
            page.fill("textarea[aria-label=prompt]", "北京今天天气怎么样？")
            page.click("text=发送 / Send")
            page.wait_for_selector("[data-testid=final]", timeout=20000)
            final = page.inner_text("[data-testid=final]")
            assert final == f"北京 {expected['temperature']} 度 <img src=x onerror=alert(1)>"
            assert page.locator("[data-testid=final] img").count() == 0  # model text stays text
            trace = page.inner_text("[data-testid=trace]")
            assert "get_weather" in trace and " ms" in trace
            # the browser mock gave the stub exactly what scripts/toolcall/tool_mocks.py computes
            assert json.loads(stub.bodies[1]["messages"][-1]["content"]) == expected
            assert [t["function"]["name"] for t in stub.bodies[0]["tools"]] == \
                [t["function"]["name"] for t in tool_mocks.MOCK_TOOLS]
            shot(page, "tool_playground.png")
            assert errors == []
        finally:
            page.close()


def test_tool_playground_with_the_managers_mcp_server(manager, browser):
    """Tools from the manager's MCP server (/mcp, with the token from the training tab) instead of the browser
    mocks: listed, then called by the loop, in Chromium's real fetch."""
    from scripts.toolcall import tool_mocks
    expected = tool_mocks.run_tool("get_weather", {"city": "北京"})
    with StubModelServer(manager) as stub:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, mcp_posts = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: mcp_posts.append(r.post_data) if r.url == manager + "/mcp" else None)
        try:
            page.goto(manager + "/#training")
            page.fill("input[aria-label=token]", TOKEN)
            page.click("text=连接 / Connect")
            page.wait_for_selector("text=已连接 / connected", timeout=30000)
            page.click("text=工具测试")
            page.select_option("select[aria-label='endpoint preset']", "custom")
            page.fill("input[aria-label='custom endpoint']", f"http://127.0.0.1:{stub.port}/v1")
            page.fill("input[aria-label=model]", "stub-model")
            page.select_option("select[aria-label='tool source']", "mcp")
            deadline = time.time() + 20
            while len(mcp_posts) < 2 and time.time() < deadline:  # initialize, tools/list
                page.wait_for_timeout(100)
            page.wait_for_timeout(300)
            # a failed listing shows an alert and falls back to the browser mocks
            assert page.locator("[role=alert]").count() == 0, page.inner_text("[role=alert]")
            assert page.input_value("select[aria-label='tool source']") == "mcp"
            page.fill("textarea[aria-label=prompt]", "北京今天天气怎么样？")
            page.click("text=发送 / Send")
            page.wait_for_selector("[data-testid=final]", timeout=20000)
            final = page.inner_text("[data-testid=final]")
            assert final == f"北京 {expected['temperature']} 度 <img src=x onerror=alert(1)>"
            assert json.loads(stub.bodies[1]["messages"][-1]["content"]) == expected
            assert [t["function"]["name"] for t in stub.bodies[0]["tools"]] == ["get_weather", "calculator", "search",
                                                                                  "get_time"]
            methods = [json.loads(b)["method"] for b in mcp_posts if b]
            assert methods == ["initialize", "tools/list", "tools/call"], methods
            shot(page, "tool_playground_mcp.png")
            assert errors == []
        finally:
            page.close()
