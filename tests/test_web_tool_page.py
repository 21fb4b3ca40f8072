"""scripts/web_tool_test.html in a real browser (Playwright + Debian's /usr/bin/chromium, skipped when either is
missing): opened from disk, pointed at a stub OpenAI-compatible server whose "model" always calls a tool and then
answers with the tool's result plus an XSS string. The trace shows the request, the tool call and the response;
the final answer appears; the XSS string stays text (no element, no script run). Also: the page loads nothing
external and never builds HTML from strings, and the real server's --cors_origins answers the browser's preflight.
"""
import asyncio
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from browser_util import needs_browser

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "scripts" / "web_tool_test.html"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


# ------------------------------------------------------------------------------------------- stub server

def stub_reply(body: dict) -> dict:
    """The stub model: a tool call while tools are offered and no result came back yet, else a text answer
    that quotes the tool result and carries the XSS string."""
    messages, tools = body.get("messages", []), body.get("tools") or []
    if messages and messages[-1].get("role") == "tool":
        return {"content": f"工具结果 result: {messages[-1]['content']} {XSS}"}
    if tools:
        fn = tools[0]["function"]
        required = fn.get("parameters", {}).get("required") or list(fn.get("parameters", {}).get("properties", {}))
        args = {"city": "北京"} if fn["name"] == "get_weather" else {k: "1+2" for k in required[:1]}
        return {"tool_calls": [{"id": "call_stub_1", "type": "function",
                                "function": {"name": fn["name"], "arguments": json.dumps(args, ensure_ascii=False)}}]}
    return {"content": "你好 <b>not bold</b>"}


def make_stub_app(log: list):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.middleware.cors import CORSMiddleware

    app = FastAPI()
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "stub", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        log.append(body)
        if body.get("model") == "slow":  # a server that never answers (until the page gives up or 30 s pass)
            for _ in range(300):
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.1)
            return JSONResponse({"error": {"message": "too late"}}, status_code=504)
        reply = stub_reply(body)
        finish = "tool_calls" if "tool_calls" in reply else "stop"
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply.get("content"), **({"tool_calls": reply["tool_calls"]}
                                                                              if "tool_calls" in reply else {})}
            return JSONResponse({"id": "x", "object": "chat.completion", "model": "stub",
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish}]})

        def chunk(delta, finish_reason=None):
            return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason}]}, ensure_ascii=False) + "\n\n"

        def events():
            yield chunk({"role": "assistant", "content": ""})
            if "tool_calls" in reply:
                tc = reply["tool_calls"][0]
                yield chunk({"tool_calls": [{"index": 0, "id": tc["id"], "type": "function",
                                             "function": {"name": tc["function"]["name"], "arguments": ""}}]})
                args = tc["function"]["arguments"]
                for piece in (args[:5], args[5:]):  # arguments arrive in pieces, as from a real server
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            else:
                text = reply["content"]
                for i in range(0, len(text), 7):
                    yield chunk({"content": text[i:i + 7]})
            yield chunk({}, finish)
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class StubServer:
    """The stub app on 127.0.0.1:<free port> in a uvicorn thread; `requests` holds every chat request body."""

    def __init__(self):
        import uvicorn
        self.requests: list = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(make_stub_app(self.requests), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


# ------------------------------------------------------------------------------------------- static checks

def test_page_is_self_contained_and_never_builds_html_from_strings():
    html = PAGE.read_text(encoding="utf-8")
    code = re.sub(r"<!--.*?-->", "", html, flags=re.S)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", code, re.I), "external resource tag"
    assert not re.search(r"@import|url\(", code), "CSS that loads something"
    urls = set(re.findall(r"https?://[^\s\"'<>]+", code))
    assert urls <= {"http://127.0.0.1:8998/v1"}, urls  # the default endpoint field is the only address
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "srcdoc"):
        assert sink not in code, sink
    assert "default-src 'none'" in html  # CSP: a regression that adds an external load is blocked in the browser
    for name in ("get_weather", "calculator", "search", "get_time"):
        assert f'name: "{name}"' in code


# ---------------------------------------------------------------------------------------------- the server

def test_server_cors_origins_answers_preflight_before_the_key_gate():
    """--cors_origins adds CORS headers, also on the 401/503 the gate returns, and answers OPTIONS itself; without
    it nothing is added. The model never finishes loading here: CORS must not depend on it."""
    from fastapi.testclient import TestClient

    from scripts.serve_openai_api import Settings, build_parser, create_app
    assert build_parser().parse_args([]).cors_origins is None
    assert build_parser().parse_args(["--cors_origins", "null", "http://127.0.0.1:5500"]).cors_origins == [
        "null", "http://127.0.0.1:5500"]
    release = threading.Event()

    def load():  # stays "loading" until the test ends
        release.wait(30)
        raise RuntimeError("test model never loads")

    try:
        for origins, expect in ((["null"], "null"), (None, None)):
            app = create_app(load, Settings(api_key="k"), cors_origins=origins)
            with TestClient(app) as client:
                pre = client.options("/v1/chat/completions", headers={
                    "Origin": "null", "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type"})
                assert pre.headers.get("access-control-allow-origin") == expect
                if expect:
                    assert pre.status_code == 200
                    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
                r = client.post("/v1/chat/completions", json={}, headers={"Origin": "null"})
                assert r.status_code == 401 and r.headers.get("access-control-allow-origin") == expect
                other = client.get("/health", headers={"Origin": "http://evil.example"})
                assert "access-control-allow-origin" not in other.headers
    finally:
        release.set()


# ------------------------------------------------------------------------------------------------ browser

@pytest.fixture(scope="module")
def browser_page(browser):
    """A page on the session's one Chromium (conftest.py): a second Playwright instance in the same process
    fails ("Sync API inside the asyncio loop") once another browser test has started the shared one."""
    with StubServer() as stub:
        page = browser.new_page()
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(PAGE.as_uri())
        page.fill("#endpoint", stub.base_url)
        yield page, stub, errors, requests
        page.close()


def wait_until(page, expression: str, timeout: float = 20):
    """Poll a JS expression from Python: the page's CSP (no 'unsafe-eval') blocks Playwright's in-page
    wait_for_function, while evaluate() goes through the DevTools protocol."""
    deadline = time.time() + timeout
    while not page.evaluate(expression):
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def ask(page, text):
    n = page.locator("#trace .trace-entry[data-kind=response]").count()
    page.fill("#user-input", text)
    page.click("#send")
    # two responses per question: the tool call, then the answer after the tool result
    wait_until(page, f"document.querySelectorAll('#trace .trace-entry[data-kind=response]').length >= {n + 2}"
                     " && !document.getElementById('send').disabled")


@needs_browser
@pytest.mark.parametrize("stream", [True, False])
def test_browser_runs_the_tool_loop_shows_the_trace_and_keeps_model_text_as_text(browser_page, stream):
    page, stub, errors, requests = browser_page
    page.set_checked("#stream", stream)
    page.click("#clear")
    sent = len(stub.requests)
    ask(page, "北京今天天气怎么样？")
    assert [r["stream"] for r in stub.requests[sent:]] == [stream, stream]
    second = stub.requests[sent + 1]["messages"]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"北京"}'}
    result = json.loads(second[-1]["content"])
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_stub_1"
    assert result["city"] == "北京" and result["mock"] is True and result["unit"] == "celsius"
    kinds = page.eval_on_selector_all("#trace .trace-entry", "es => es.map(e => e.dataset.kind)")
    assert kinds == ["request", "response", "tool", "request", "response"]
    tool_entry = page.inner_text("#trace .trace-entry[data-kind=tool]")
    assert 'get_weather({"city":"北京"})' in tool_entry and re.search(r"\(\d+ ms\)", tool_entry)
    final = page.locator("#chat .msg.assistant .body").last.text_content()
    assert final.startswith("工具结果 result: {") and final.endswith(XSS)  # shown verbatim, as text
    assert page.locator("#chat img, #chat script, #chat b").count() == 0
    assert page.evaluate("window.__xss") is None
    assert page.locator("#chat .msg.tool").count() == 1
    assert not errors, errors
    assert all(u.startswith(("file://", stub.base_url)) for u in requests), requests  # nothing external loads


@needs_browser
def test_browser_auto_tests_report_metrics(browser_page):
    page, stub, errors, _ = browser_page
    page.set_checked("#stream", True)
    page.click("#run-tests")
    wait_until(page, "!!document.getElementById('metrics-table')", timeout=60)
    metrics = dict(page.eval_on_selector_all(
        "#metrics-table tr", "rs => rs.map(r => [r.dataset.metric, r.children[1].textContent])"))
    # the stub always calls the first offered tool: every should-call case is detected and valid JSON, the
    # two no-call cases are wrong, and only cases whose first tool is the expected one get the name right
    assert metrics["cases"] == "10"
    assert metrics["call_detection"] == "1.000" and metrics["json_validity"] == "1.000"
    assert metrics["no_call_accuracy"] == "0.000"
    assert metrics["tool_name_accuracy"] == "0.875"  # 7 of 8: the two-city case makes one call, not two
    assert page.locator("#test-cases tr[data-case]").count() == 10
    assert page.evaluate("window.__xss") is None and not errors


@needs_browser
def test_browser_calculator_refuses_huge_powers_without_eval(browser_page):
    page = browser_page[0]
    calc = "e => { try { return window.minimindToolPage.calculate(e); } catch (x) { return 'error: ' + x.message; } }"
    assert page.evaluate(calc, "(3+4)*5") == 35
    assert page.evaluate(calc, "2**10 - 24/4") == 1018
    for expr in ("9**9**9**9", "alert(1)", "1/0", "10**400", "x" * 300):
        assert str(page.evaluate(calc, expr)).startswith("error: "), expr


def last_error(page) -> str:
    return page.locator("#chat .msg.error .body").last.text_content()


@needs_browser
def test_browser_cancel_and_timeout_give_send_back_on_a_slow_server(browser_page):
    page, stub, errors, _ = browser_page
    page.click("#clear")
    page.fill("#model", "slow")
    try:
        n = len(stub.requests)
        page.fill("#user-input", "hello")
        page.click("#send")
        wait_until(page, "document.getElementById('send').disabled && !document.getElementById('cancel').disabled")
        deadline = time.time() + 10
        while len(stub.requests) == n and time.time() < deadline:
            time.sleep(0.05)
        page.click("#cancel")
        wait_until(page, "!document.getElementById('send').disabled", timeout=5)
        assert last_error(page) == "已取消 / cancelled"
        assert page.is_disabled("#cancel")
        page.fill("#timeout", "1")
        t0 = time.time()
        page.fill("#user-input", "hello again")
        page.click("#send")
        wait_until(page, "!document.getElementById('send').disabled", timeout=10)
        assert 0.9 <= time.time() - t0 < 8
        assert "within 1 s" in last_error(page)
    finally:
        page.fill("#model", "minimind")
        page.fill("#timeout", "120")
    assert not errors, errors


@needs_browser
def test_browser_refuses_a_non_url_before_sending(browser_page):
    page, stub, errors, requests = browser_page
    page.click("#clear")
    page.fill("#endpoint", "localhost 8998")
    try:
        sent = len(requests)
        page.fill("#user-input", "hi")
        page.click("#send")
        wait_until(page, "document.querySelectorAll('#chat .msg.error').length === 1")
        assert "is not a URL" in last_error(page) and len(requests) == sent
        page.click("#check-endpoint")
        assert "is not a URL" in page.inner_text("#status")
    finally:
        page.fill("#endpoint", stub.base_url)


@needs_browser
def test_browser_page_fits_a_phone(browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        page.goto(PAGE.as_uri())
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"page is {width} px wide on a 390 px phone"
    finally:
        page.close()
