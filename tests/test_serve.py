"""The API server, its terminal client, the benchmark and the Streamlit demo, end to end on a tiny model.

A hidden-64, 2-layer MiniMind is trained in-process for ~100 full-batch steps (seconds) until it reproduces five
replies exactly under greedy decoding: a plain Chinese answer with an emoji (multi-byte characters), a
<think>/<answer> reply, a <tool_call>, the answer after a tool result, and a tool-call block with broken JSON. So
every test can assert exact text. The server runs as a real uvicorn subprocess, driven by the official `openai`
client; the demo runs under Streamlit's AppTest.
"""
import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

from model import chat_protocol, constrain  # noqa: E402
from scripts import serve_openai_api  # noqa: E402
from scripts.serve import api, replies  # noqa: E402
from scripts.serve import worker as serve_worker  # noqa: E402
from model.engine import Engine, SamplingParams  # noqa: E402
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM  # noqa: E402
from trainer.trainer_utils import load_tokenizer, save_weights  # noqa: E402

# One OpenMP thread: on a small shared CPU two spinning threads make every decode step much slower.
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
API_KEY = "test-key"
MODEL = "minimind-test"

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
CALL_ARGS = {"city": "北京"}
HELLO = [{"role": "user", "content": "你好"}]
HELLO_REPLY = "你好！我是MiniMind，很高兴见到你。😊"
REASON = [{"role": "user", "content": "1+1等于几？"}]
REASON_REPLY = "<think>\n一加一等于二。\n</think>\n<answer>\n1+1=2。\n</answer>"
WEATHER = [{"role": "user", "content": "北京天气？"}]
WEATHER_REPLY = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>'
AFTER_TOOL = WEATHER + [
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps(CALL_ARGS, ensure_ascii=False)}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "晴，25度"}]
AFTER_TOOL_REPLY = "北京今天晴，25度。"
BROKEN = [{"role": "user", "content": "坏掉的调用"}]
BROKEN_REPLY = '<tool_call>\n{"name": broken}\n</tool_call>'
SAMPLES = [(HELLO, HELLO_REPLY, None), (REASON, REASON_REPLY, None), (WEATHER, WEATHER_REPLY, [WEATHER_TOOL]),
           (AFTER_TOOL, AFTER_TOOL_REPLY, [WEATHER_TOOL]), (BROKEN, BROKEN_REPLY, [WEATHER_TOOL])]


def tiny_config() -> MiniMindConfig:
    # 4 query heads / 1 KV head: CPU attention with 8-wide heads was 2x slower for the same hidden size
    return MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1)


def prompt_ids(tokenizer, messages, tools=None) -> list:
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return tokenizer(text)["input_ids"]


def train_tiny_model(tokenizer) -> MiniMindForCausalLM:
    """Memorise SAMPLES: full-batch AdamW on the reply tokens only, until the loss is ~0 (about 100 steps)."""
    torch.manual_seed(0)
    model = MiniMindForCausalLM(tiny_config())
    rows = [(prompt_ids(tokenizer, m, t), tokenizer(r)["input_ids"] + [tokenizer.eos_token_id]) for m, r, t in SAMPLES]
    length = max(len(p) + len(r) for p, r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.full((len(rows), length), -100)
    for i, (p, r) in enumerate(rows):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
    # logits only where there is a label: the 6400-wide lm_head over every prompt position costs 10x more
    keep, targets = labels[:, 1:] != -100, labels[:, 1:][labels[:, 1:] != -100]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(400):
        hidden = model.model(ids)[0][:, :-1][keep]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden), targets)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if loss.item() < 0.02:
            break
    model = model.half().float().eval()  # what the fp16 .pth will hold
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id)
    for (p, r) in rows:
        out = engine.generate([p], SamplingParams(max_new_tokens=len(r) + 5, temperature=0))[0]
        assert out.token_ids == r[:-1], f"tiny model did not memorise {tokenizer.decode(r)!r}: loss {loss.item()}"
    return model


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process training and decoding on one thread, as ENV does for the subprocesses (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tokenizer):
    """(the memorising tiny model, the folder holding it as full_sft_64.pth + sidecar)."""
    out = tmp_path_factory.mktemp("serve") / "out"
    model = train_tiny_model(tokenizer)
    save_weights(model, out / "full_sft_64.pth", argparse.Namespace(note="tests/test_serve.py"))
    return model, out


# --------------------------------------------------------------------------------------------- reply parsing

PARSE_CASES = [
    (REASON_REPLY, {"reasoning": "一加一等于二。", "content": "1+1=2。", "tool_calls": []}),
    ("好的。\n" + WEATHER_REPLY, {"reasoning": "", "content": "好的。",
                                  "tool_calls": [("get_weather", '{"city": "北京"}')]}),
    (WEATHER_REPLY + "\n" + WEATHER_REPLY.replace("北京", "上海"),
     {"reasoning": "", "content": "", "tool_calls": [("get_weather", '{"city": "北京"}'),
                                                     ("get_weather", '{"city": "上海"}')]}),
    (BROKEN_REPLY, {"reasoning": "", "content": BROKEN_REPLY, "tool_calls": []}),
    ('<tool_call>\n{"name": "f", "arguments": {"a"', {"reasoning": "", "content": '<tool_call>\n{"name": "f", '
                                                                                 '"arguments": {"a"',
                                                      "tool_calls": []}),
    ("a < b, <thin> 不是标签 </tool", {"reasoning": "", "content": "a < b, <thin> 不是标签 </tool", "tool_calls": []}),
    ("<think>\n想一想 <tool_call>x</tool_call>\n</think>\n答", {"reasoning": "想一想 <tool_call>x</tool_call>",
                                                                "content": "答", "tool_calls": []}),
]


@pytest.mark.parametrize("reply,expected", PARSE_CASES)
def test_reply_parser_streamed_in_any_pieces_equals_whole(reply, expected):
    assert chat_protocol.split_reply(reply) == expected
    for size in (1, 2, 3, 7):
        parser, got = chat_protocol.ReplyParser(), {"reasoning": "", "content": "", "tool_calls": []}
        for k in range(0, len(reply), size):
            for ev in parser.feed(reply[k:k + size]):
                if ev[0] == "tool_call":
                    got["tool_calls"].append(ev[1:])
                else:
                    assert ev[1], "no empty deltas"
                    got[ev[0]] += ev[1]
        for ev in parser.finish():
            got[ev[0]] += ev[1]
        assert got == expected, size


def test_tool_blocks_stay_text_when_no_tools_were_offered():
    assert chat_protocol.split_reply(WEATHER_REPLY, parse_tools=False)["content"] == WEATHER_REPLY


def test_stop_matcher_cuts_across_pieces_and_releases_false_starts():
    stop = chat_protocol.StopMatcher(["END", "。"])
    assert stop.push("abcE") == ("abc", False)
    assert stop.push("Nx") == ("ENx", False)  # "EN" + "x" is not "END": released
    assert stop.push("yEN") == ("y", False)
    assert stop.push("D tail") == ("", True)


def test_choice_text_counts_tokens_cuts_at_stop_and_honours_parallel_tool_calls(tokenizer):
    two_calls = "好的。\n" + WEATHER_REPLY + "\n" + WEATHER_REPLY.replace("北京", "上海")

    def run(choice, text):
        events = []
        for t in tokenizer(text)["input_ids"]:
            evs, stopped = choice.push(t)
            events += evs
            if stopped:
                return events
        return events + choice.end("stop")

    one = replies.ChoiceText(tokenizer, [], True, "", parallel_tool_calls=False)
    events = run(one, two_calls)
    assert [e[1] for e in events if e[0] == "tool_call"] == ["get_weather"]
    assert "".join(e[1] for e in events if e[0] == "content") == "好的。" + WEATHER_REPLY.replace("北京", "上海")
    assert one.final_reason() == "tool_calls" and one.tokens == len(tokenizer(two_calls)["input_ids"])
    cut = replies.ChoiceText(tokenizer, ["MiniMind"], False, "")
    assert "".join(e[1] for e in run(cut, HELLO_REPLY)) == "你好！我是" and cut.final_reason() == "stop"
    assert cut.tokens < len(tokenizer(HELLO_REPLY)["input_ids"])  # counted up to the stop, not beyond


# ------------------------------------------------------------------------------------------------ the worker

def collect_job(job) -> list:
    """Token ids per row, awaited on the job's queue until every row has ended."""
    async def run():
        rows, ended = [[] for _ in range(job.n)], {}
        while len(ended) < job.n:
            ev = await asyncio.wait_for(job.events.get(), 60)
            assert ev[0] != "error", ev
            if ev[0] == "end":
                ended[ev[1]] = ev[2]
            else:
                for i, t in ev[1]:
                    rows[i].append(t)
        return rows, ended
    return run()


def run_worker(engine, jobs_at, max_batch_size=8):
    """Start a worker, submit jobs (a list of (delay_tokens, make_job)) and collect every job's rows and ends.

    A job with delay k is submitted once the first job has produced k tokens (so it arrives mid-decode)."""
    worker = serve_worker.BatchWorker(engine, max_batch_size=max_batch_size, max_model_len=2048)
    order = []

    async def go():
        loop = asyncio.get_running_loop()
        jobs = [make(loop) for _, make in jobs_at]
        first_delay = [d for d, _ in jobs_at]
        for job, d in zip(jobs, first_delay):
            if d == 0:
                worker.submit(job)
        worker.start()

        async def collect(job):
            rows, ended = [[] for _ in range(job.n)], {}
            while len(ended) < job.n:
                ev = await asyncio.wait_for(job.events.get(), 60)
                assert ev[0] != "error", ev
                if ev[0] == "end":
                    ended[ev[1]] = ev[2]
                    order.append(job.request_id)
                else:
                    for i, t in ev[1]:
                        rows[i].append(t)
                        if job is jobs[0]:
                            for other, d in zip(jobs, first_delay):
                                if d and d == len(rows[0]):
                                    worker.submit(other)
            return rows, ended
        return await asyncio.gather(*(collect(j) for j in jobs))

    try:
        return asyncio.run(go()), order, worker
    finally:
        worker.stop()
        worker.join(10)


def test_worker_decodes_different_settings_in_one_batch(trained, tokenizer):
    model, _ = trained
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id)
    greedy = [(0, lambda loop, m=m, t=t, k=k: serve_worker.Job(f"g{k}", prompt_ids(tokenizer, m, t), 1, 60, 0.0, 1.0,
                                                          None, False, loop))
              for k, (m, _, t) in enumerate(SAMPLES[:3])]
    seeded = (0, lambda loop: serve_worker.Job("s", prompt_ids(tokenizer, HELLO), 2, 5, 1.0, 1.0, 7, False, loop))
    results, _, worker = run_worker(engine, greedy + [seeded])
    # all four requests (5 rows) join one batch at the first step: one prefill of the 4 prompts, then 5-row steps
    assert worker.decoder.forward_rows[:2] == [4, 5] and worker.admitted == 4
    for (rows, ended), (_, reply, _) in zip(results[:3], SAMPLES[:3]):
        assert tokenizer.decode(rows[0]) == reply and ended == {0: "stop"}
    rows, ended = results[3]
    assert [len(r) for r in rows] == [5, 5] and ended == {0: "length", 1: "length"}
    again, _, _ = run_worker(engine, [seeded])  # a seeded request samples the same alone as in company
    assert again[0][0] == rows


def test_requests_join_a_running_batch_instead_of_waiting_for_it(trained, tokenizer):
    """Continuous batching: a short request sent while a long one decodes finishes long before it."""
    model, _ = trained
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id)
    long = (0, lambda loop: serve_worker.Job("long", prompt_ids(tokenizer, HELLO), 1, 120, 0.0, 1.0, None, True, loop))
    short = (10, lambda loop: serve_worker.Job("short", prompt_ids(tokenizer, SAMPLES[1][0], SAMPLES[1][2]), 1, 60, 0.0,
                                        1.0, None, False, loop))
    results, order, worker = run_worker(engine, [long, short])
    assert order == ["short", "long"]
    (long_rows, long_end), (short_rows, short_end) = results
    assert len(long_rows[0]) == 120 and long_end == {0: "length"}
    assert tokenizer.decode(short_rows[0]) == SAMPLES[1][1] and short_end == {0: "stop"}
    # the short one joined mid-decode: after the long one's prefill + 9 one-row steps, its prefill, then 2-row steps
    rows = worker.decoder.forward_rows
    assert rows.index(2) >= 11 and rows.count(2) >= 5


def test_a_full_batch_gives_a_row_back_to_a_short_request_within_a_step(trained, tokenizer):
    """Fairness (issue 27): one request with n = max_batch_size and a long budget holds every row; a short request
    sent meanwhile starts at once (a row is preempted), and the preempted choice resumes where it stopped, so the
    long request's replies are token for token what they are without company."""
    model, _ = trained
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id)
    hello, reason = prompt_ids(tokenizer, HELLO), prompt_ids(tokenizer, REASON)
    alone = engine.generate([hello], SamplingParams(max_new_tokens=80, temperature=0, stop_ids=[]))[0].token_ids
    w = serve_worker.BatchWorker(engine, max_batch_size=4, max_model_len=2048)
    seen = {}

    async def go():
        loop = asyncio.get_running_loop()
        hog = serve_worker.Job("hog", hello, 4, 80, 0.0, 1.0, None, True, loop)
        short = serve_worker.Job("short", reason, 1, 60, 0.0, 1.0, None, False, loop)
        w.submit(hog)
        w.start()
        rows, short_rows, ended = [[] for _ in range(4)], [], set()
        while len(ended) < 4:
            ev = await asyncio.wait_for(hog.events.get(), 60)
            if ev[0] == "end":
                ended.add(ev[1])
                continue
            for i, t in ev[1]:
                rows[i].append(t)
            if len(rows[0]) == 10 and "sent" not in seen:
                seen["sent"] = sum(map(len, rows))
                w.submit(short)
            while not short.events.empty():
                sev = short.events.get_nowait()
                if sev[0] == "tokens":
                    seen.setdefault("first_short", sum(map(len, rows)))
                    short_rows += [t for _, t in sev[1]]
                elif sev[0] == "end":
                    seen["short_end"] = sum(map(len, rows))
        return rows, short_rows, hog

    try:
        rows, short_rows, hog = asyncio.run(go())
    finally:
        w.stop()
        w.join(10)
    # the short request's first token came within 2 decode steps of the 4-row batch (8 hog tokens), not after 80
    assert seen["first_short"] - seen["sent"] <= 8, seen
    assert "short_end" in seen and tokenizer.decode(short_rows) == SAMPLES[1][1]
    assert hog.preempted >= 1
    assert rows == [alone] * 4  # resumed by recompute: nothing lost, repeated or changed


def test_503_while_loading_then_serves(trained, tokenizer):
    from fastapi.testclient import TestClient
    model, _ = trained
    gate = threading.Event()

    def slow_load():
        assert gate.wait(60)
        return model, tokenizer

    app = api.create_app(slow_load, api.Settings(served_model_name="m"))
    body = {"model": "m", "messages": HELLO, "temperature": 0}
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        assert client.get("/v1/models").status_code == 503
        gate.set()
        deadline = time.time() + 30
        while client.get("/health").status_code != 200:
            assert time.time() < deadline, "model never became ready"
            time.sleep(0.05)
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == HELLO_REPLY


# ------------------------------------------------------------------------------------------------ the server

class Server:
    def __init__(self, proc, log_path: Path, base: str):
        self.proc, self.log_path, self.base = proc, log_path, base

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def health(self) -> dict:
        return httpx.get(self.base + "/health", timeout=10).json()


def start_server(args, log_path: Path, timeout: float = 90) -> Server:
    """serve_openai_api.py on a free port (--port 0; the port is read from its first line), ready to serve."""
    log_file = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "serve_openai_api.py"), "--port", "0",
                             "--device", "cpu", *map(str, args)], stdout=log_file, stderr=subprocess.STDOUT, env=ENV)
    deadline = time.time() + timeout
    base = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        if base is None:
            m = re.search(r"listening on (http://\S+)/v1", log_path.read_text())
            base = m.group(1) if m else None
        if base is not None:
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    return Server(proc, log_path, base)
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server not ready after {timeout}s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    _, out = trained
    srv = start_server(["--save_dir", out, "--api_key", API_KEY, "--served_model_name", MODEL,
                        "--strict_model_name", "1"], tmp_path_factory.mktemp("serverlog") / "server.log")
    yield srv
    srv.proc.terminate()
    try:
        srv.proc.wait(15)
    except subprocess.TimeoutExpired:
        srv.proc.kill()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def chat(client, messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


def stream_reply(client, messages, **kw) -> dict:
    """A streamed completion reassembled the way OpenAI documents it, plus the raw chunks."""
    chunks = list(chat(client, messages, stream=True, **kw))
    out = {"content": "", "reasoning": "", "tool_calls": {}, "finish": None, "usage": None, "chunks": chunks}
    for ch in chunks:
        if ch.usage is not None:
            out["usage"] = ch.usage
        for c in ch.choices:
            out["content"] += c.delta.content or ""
            out["reasoning"] += getattr(c.delta, "reasoning_content", None) or ""
            for tc in c.delta.tool_calls or []:
                call = out["tool_calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = tc.id or call["id"]
                call["name"] += tc.function.name or ""
                call["arguments"] += tc.function.arguments or ""
            out["finish"] = c.finish_reason or out["finish"]
    return out


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == [MODEL]
    h = server.health()
    assert h["status"] == "ok" and h["model"] == MODEL and h["max_model_len"] == 2048


def test_non_streaming_reply_and_usage(client, tokenizer):
    r = chat(client, HELLO, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content == HELLO_REPLY
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert r.usage.prompt_tokens == len(prompt_ids(tokenizer, HELLO))
    assert r.usage.completion_tokens == len(tokenizer(HELLO_REPLY)["input_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "top_p": 0.9, "seed": 1234}])
def test_stream_reassembles_to_the_non_streamed_reply(client, sampling):
    whole = chat(client, HELLO, max_tokens=12, **sampling)
    streamed = stream_reply(client, HELLO, max_tokens=12, stream_options={"include_usage": True}, **sampling)
    assert streamed["content"] == whole.choices[0].message.content
    assert streamed["finish"] == whole.choices[0].finish_reason
    assert streamed["usage"].completion_tokens == whole.usage.completion_tokens
    assert streamed["usage"].prompt_tokens == whole.usage.prompt_tokens


def test_stream_chunk_format_on_the_wire(server):
    """Raw SSE: one id for every chunk, role first, whole characters only, finish, usage, then [DONE]."""
    body = {"model": MODEL, "messages": HELLO, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert all(d and "\ufffd" not in d for d in deltas) and "".join(deltas) == HELLO_REPLY
    assert len(deltas) > 5  # streamed piece by piece, not in one lump
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_reasoning_content_in_both_modes(client):
    r = chat(client, REASON, temperature=0).choices[0].message
    assert r.reasoning_content == "一加一等于二。" and r.content == "1+1=2。"
    s = stream_reply(client, REASON, temperature=0)
    assert s["reasoning"] == "一加一等于二。" and s["content"] == "1+1=2。" and s["finish"] == "stop"


@pytest.mark.parametrize("tool_choice", [None, "auto", "required", {"type": "function",
                                                                     "function": {"name": "get_weather"}}])
def test_tool_calls_in_both_modes(client, tool_choice):
    kw = {"tools": [WEATHER_TOOL], "temperature": 0}
    if tool_choice is not None:
        kw["tool_choice"] = tool_choice
    r = chat(client, WEATHER, **kw)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == CALL_ARGS
    s = stream_reply(client, WEATHER, **kw)
    assert s["finish"] == "tool_calls" and s["content"] == ""
    assert list(s["tool_calls"]) == [0]
    streamed = s["tool_calls"][0]
    assert streamed["name"] == "get_weather" and json.loads(streamed["arguments"]) == CALL_ARGS
    assert streamed["id"].startswith("call_")


def test_tool_choice_none_parses_no_calls(client):
    r = chat(client, WEATHER, tools=[WEATHER_TOOL], tool_choice="none", temperature=0, max_tokens=20)
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason in ("stop", "length")


def test_tool_result_goes_back_to_the_model(client):
    r = chat(client, AFTER_TOOL, tools=[WEATHER_TOOL], temperature=0)
    assert r.choices[0].message.content == AFTER_TOOL_REPLY and r.choices[0].finish_reason == "stop"


def test_invalid_tool_call_json_is_returned_as_content(client):
    """The memorised broken call: unconstrained it comes back as text (the parser cannot read it); with
    constrained decoding (llguidance installed, the server's default) the grammar makes the call valid."""
    r = chat(client, BROKEN, tools=[WEATHER_TOOL], temperature=0).choices[0]
    s = stream_reply(client, BROKEN, tools=[WEATHER_TOOL], temperature=0)
    if constrain.available():
        assert r.message.tool_calls[0].function.name == "get_weather" and r.finish_reason == "tool_calls"
        assert [c["name"] for c in s["tool_calls"].values()] == ["get_weather"] and s["finish"] == "tool_calls"
        return
    assert r.message.content == BROKEN_REPLY and not r.message.tool_calls and r.finish_reason == "stop"
    assert s["content"] == BROKEN_REPLY and not s["tool_calls"] and s["finish"] == "stop"


def test_max_tokens_stop_and_n(client, tokenizer):
    r = chat(client, HELLO, temperature=0, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    assert HELLO_REPLY.startswith(r.choices[0].message.content)
    r = chat(client, HELLO, temperature=0, stop=["MiniMind"])
    assert r.choices[0].message.content == "你好！我是" and r.choices[0].finish_reason == "stop"
    s = stream_reply(client, HELLO, temperature=0, stop="MiniMind")
    assert s["content"] == "你好！我是" and s["finish"] == "stop"
    r = chat(client, HELLO, temperature=1.0, seed=5, n=3, max_tokens=4)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens == 12
    s = stream_reply(client, HELLO, temperature=0, n=2, max_completion_tokens=50)
    assert {c.index for ch in s["chunks"] for c in ch.choices} == {0, 1}


def post(server, body, key=API_KEY, raw=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(server.base + "/v1/chat/completions", content=raw, headers=headers, timeout=30)
    return httpx.post(server.base + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def ok_body(**kw):
    return dict({"model": MODEL, "messages": HELLO}, **kw)


ERROR_CASES = [
    ("bad json", dict(raw=b'{"model": '), 400, None, "JSON"),
    ("unknown role", dict(body=ok_body(messages=[{"role": "robot", "content": "hi"}])), 400, "messages.0.role",
     "robot"),
    ("temperature", dict(body=ok_body(temperature=3)), 400, "temperature", "less than or equal to 2"),
    ("top_p", dict(body=ok_body(top_p=0)), 400, "top_p", "greater than 0"),
    ("n", dict(body=ok_body(n=0)), 400, "n", "greater than or equal to 1"),
    ("max_tokens", dict(body=ok_body(max_tokens=0)), 400, "max_tokens", "greater than or equal to 1"),
    ("no messages", dict(body=ok_body(messages=[])), 400, "messages", "at least 1"),
    ("too many stops", dict(body=ok_body(stop=["a", "b", "c", "d", "e"])), 400, "stop", "at most 4"),
    ("image part", dict(body=ok_body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])), 400, "messages.0.content", "text"),
    ("unknown tool", dict(body=ok_body(tools=[WEATHER_TOOL], tool_choice={
        "type": "function", "function": {"name": "nope"}})), 400, "tool_choice", "nope"),
    ("tool_choice without tools", dict(body=ok_body(tool_choice="required")), 400, "tool_choice", "tools"),
    ("stream_options without stream", dict(body=ok_body(stream_options={"include_usage": True})), 400,
     "stream_options", "stream"),
    ("penalty", dict(body=ok_body(presence_penalty=1.0)), 400, "presence_penalty", "not supported"),
    ("completion too long", dict(body=ok_body(max_tokens=2040)), 400, "messages", "maximum context length is 2048"),
    ("prompt too long", dict(body=ok_body(messages=[{"role": "user", "content": " ".join(["word"] * 2100)}])), 400,
     "messages", "maximum context length is 2048"),
    ("seed out of range", dict(body=ok_body(seed=2 ** 70)), 400, "seed", "less than or equal to"),
    ("too many characters", dict(body=ok_body(messages=[{"role": "user", "content": "字" * 40000}])), 400,
     "messages", "40,000 characters"),
    ("wrong model", dict(body=ok_body(model="gpt-4o")), 404, "model", "gpt-4o"),
    ("5,000 tools", dict(body=ok_body(tools=[WEATHER_TOOL] * 5000)), 400, "tools", "at most 128"),
    ("600 messages", dict(body=ok_body(messages=HELLO * 600)), 400, "messages", "at most 512"),
    ("one huge tool", dict(body=ok_body(tools=[{"type": "function", "function": {
        "name": "f", "description": "d" * 9000}}])), 400, "tools.0", "at most 8,192 per tool"),
    ("tools count toward the characters", dict(body=ok_body(tools=[{"type": "function", "function": {
        "name": f"f{k}", "description": "d" * 8000}} for k in range(5)])), 400, "messages", "messages and tools"),
    ("lone surrogate", dict(raw=b'{"model": "minimind-test", "messages": [{"role": "user", "content": "a\\ud83d b"}]}'),
     400, "messages.0.content", "surrogate"),
    ("no key", dict(body=ok_body(), key=None), 401, None, "API key"),
    ("wrong key", dict(body=ok_body(), key="nope"), 401, None, "Incorrect API key"),
]


@pytest.mark.parametrize("name,req,status,param,text", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_in_openai_format(server, name, req, status, param, text):
    r = post(server, req.get("body"), key=req.get("key", API_KEY), raw=req.get("raw"))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert text in err["message"] and err["param"] == param
    if name == "completion too long":
        assert err["code"] == "context_length_exceeded"


def test_oversized_tool_lists_are_refused_before_rendering_which_runs_off_the_event_loop(trained, tokenizer):
    """A 2 MB request with 5,000 tools was templated and tokenized before its 400 (issue 27): the caps come first,
    and a request that passes them is rendered in a worker thread, never on the event loop."""
    from fastapi.testclient import TestClient
    model, _ = trained
    calls = []

    class Watched:  # the real tokenizer, noting where each template/tokenize call runs
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def _note(self):
            try:
                asyncio.get_running_loop()
                calls.append("event loop")
            except RuntimeError:
                calls.append("thread")

        def apply_chat_template(self, *a, **kw):
            self._note()
            return tokenizer.apply_chat_template(*a, **kw)

        def __call__(self, *a, **kw):
            self._note()
            return tokenizer(*a, **kw)

    app = api.create_app(lambda: (model, Watched()), api.Settings(served_model_name="m"))
    with TestClient(app) as client:
        deadline = time.time() + 30
        while client.get("/health").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)
        calls.clear()  # loading reads the tokenizer too (the constrained-decoding vocabulary, in the loader thread)
        big = {"model": "m", "messages": HELLO, "tools": [WEATHER_TOOL] * 5000}
        r = client.post("/v1/chat/completions", json=big)
        assert r.status_code == 400 and "at most 128" in r.json()["error"]["message"] and calls == []
        r = client.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == HELLO_REPLY
    assert calls and set(calls) == {"thread"}, calls


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_choice_never_returns_the_forced_prefix_as_text(client, tool_choice):
    """The tiny model answers BROKEN with a <tool_call> block that is not JSON. With tool_choice required / named
    the server wrote `<tool_call>` itself, so that text must never come back as content with finish "stop"
    (issue 27). With constrained decoding (on when llguidance is installed, as here) the grammar turns the
    memorised broken call into a valid one; without it the reply is an OpenAI-style 500 naming the problem
    (tests/test_constrain_serve.py checks that path)."""
    kw = {"tools": [WEATHER_TOOL], "tool_choice": tool_choice, "temperature": 0, "max_tokens": 30}
    # llguidance is in requirements.txt, so the server here constrains; a missing library is a broken install
    assert constrain.available(), "llguidance is missing: pip install -r requirements.txt -c requirements-lock.txt"
    r = chat(client, BROKEN, **kw).choices[0]
    assert r.finish_reason == "tool_calls" and r.message.tool_calls[0].function.name == "get_weather"
    assert not (r.message.content or "").startswith("<tool_call>")
    json.loads(r.message.tool_calls[0].function.arguments)
    s = stream_reply(client, BROKEN, **kw)
    assert s["tool_calls"] and not s["content"].startswith("<tool_call>") and s["finish"] == "tool_calls"


def test_a_form_post_is_a_400_not_a_500(server):
    """`curl -d '...'` sends application/x-www-form-urlencoded: the body is bytes, not JSON."""
    r = httpx.post(server.base + "/v1/chat/completions", content=b'{"messages": []}', timeout=30,
                   headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    assert "Content-Type: application/json" in r.json()["error"]["message"]


def test_oversized_bodies_get_413_before_they_are_read(server):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    big = json.dumps(ok_body(messages=[{"role": "user", "content": "x" * (3 * 1024 * 1024)}])).encode()
    r = httpx.post(server.base + "/v1/chat/completions", content=big, headers=headers, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text

    def chunks():  # no Content-Length: counted while received
        yield b'{"model": "%s", "messages": [{"role": "user", "content": "' % MODEL.encode()
        for _ in range(48):
            yield b"y" * 65536
        yield b'"}]}'
    r = httpx.post(server.base + "/v1/chat/completions", content=chunks(), headers=headers, timeout=30)
    assert r.status_code == 413, r.text
    assert server.health()["status"] == "ok"


def test_api_key_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MINIMIND_API_KEY", "sk-from-env")
    assert serve_openai_api.build_parser().parse_args([]).api_key == "sk-from-env"
    assert serve_openai_api.build_parser().parse_args(["--api_key", "k"]).api_key == "k"
    monkeypatch.delenv("MINIMIND_API_KEY")
    assert serve_openai_api.build_parser().parse_args([]).api_key is None


def test_openai_client_raises_the_matching_exceptions(server, client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat(client, HELLO, temperature=5)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=HELLO)
    bad = openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert httpx.get(server.base + "/health").status_code == 200  # /health needs no key


def test_16_concurrent_streams_all_complete_correctly(client, server):
    cases = [(HELLO, {}, "content", HELLO_REPLY), (REASON, {}, "reasoning", "一加一等于二。"),
             (WEATHER, {"tools": [WEATHER_TOOL]}, "tool", "get_weather")]
    jobs = [cases[k % 3] for k in range(16)]

    async def one(aclient, messages, kw):
        out = {"content": "", "reasoning": "", "tool": ""}
        stream = await aclient.chat.completions.create(model=MODEL, messages=messages, temperature=0, stream=True,
                                                       **kw)
        async for ch in stream:
            for c in ch.choices:
                out["content"] += c.delta.content or ""
                out["reasoning"] += getattr(c.delta, "reasoning_content", None) or ""
                out["tool"] += "".join(tc.function.name or "" for tc in c.delta.tool_calls or [])
        return out

    async def all_at_once():
        aclient = openai.AsyncOpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        try:
            return await asyncio.gather(*(one(aclient, m, kw) for m, kw, _, _ in jobs))
        finally:
            await aclient.close()

    results = asyncio.run(all_at_once())
    for out, (_, _, field, expected) in zip(results, jobs):
        assert out[field] == expected
    assert server.health()["running_requests"] == 0 and server.health()["waiting_requests"] == 0
    # which decode step serves: on the CPU the plain one, no background compile (issue 30: CUDA only)
    assert server.health()["decode_compiled"] is False and server.health()["decode_compiling"] is False


def stopped_after(server, rid_count_before: int) -> list:
    return [int(n) for n in re.findall(r"stopped decoding after (\d+) tokens", server.log())][rid_count_before:]


def wait_idle(server, seconds: float) -> None:
    deadline = time.time() + seconds
    while server.health()["running_requests"]:
        assert time.time() < deadline, "generation still running after the client left"
        time.sleep(0.05)


def test_disconnected_stream_stops_its_generation(server, client):
    before = len(stopped_after(server, 0))
    body = ok_body(stream=True, ignore_eos=True, max_tokens=1900)
    with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(8)]  # a few chunks, then hang up
    assert any('"content"' in g for g in got)
    wait_idle(server, 10)
    deadline = time.time() + 10
    while not stopped_after(server, before):
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    (tokens,) = stopped_after(server, before)
    assert tokens < 1900
    assert chat(client, HELLO, temperature=0).choices[0].message.content == HELLO_REPLY  # the slot is free


def test_disconnected_non_streaming_request_stops_its_generation(server):
    before = len(stopped_after(server, 0))
    with httpx.Client(timeout=httpx.Timeout(30, read=1.0)) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(server.base + "/v1/chat/completions", json=ok_body(ignore_eos=True, max_tokens=1900),
                       headers={"Authorization": f"Bearer {API_KEY}"})
    deadline = time.time() + 10
    while not stopped_after(server, before):
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    assert stopped_after(server, before)[0] < 1900
    wait_idle(server, 10)


def test_load_failure_exits_with_a_clear_message(tmp_path, capsys):
    """The real entry point, in-process (a subprocess would spend ~10 s importing torch to print one line)."""
    with pytest.raises(SystemExit) as exit_:
        serve_openai_api.main(["--port", "0", "--device", "cpu", "--save_dir", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "listening on http://127.0.0.1:" in err  # it bound a free port, started loading, then gave up
    assert str(tmp_path / "empty" / "full_sft_512.pth") in err and "python trainer/train_full_sft.py" in err
    assert "Traceback" not in err


def test_port_in_use_is_a_clear_error(capsys):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(SystemExit) as exit_:
            serve_openai_api.main(["--port", str(busy.getsockname()[1]), "--device", "cpu"])
    assert exit_.value.code == 2 and "choose another --port" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ client, benchmark, demo

def run_script(name, *args, stdin=""):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], input=stdin,
                          capture_output=True, text=True, encoding="utf-8", env=ENV, timeout=120)


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_chat_client_over_stdin(server, tmp_path):
    common = ["--base_url", server.base + "/v1", "--api_key", API_KEY, "--temperature", 0]
    # the tiny model only knows single-turn prompts: the second answer is exact only if /clear emptied the history
    proc = run_script("chat_openai_api.py", *common, "--historys", 2, stdin="你好\n/clear\n1+1等于几？\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    assert f"🤖: {HELLO_REPLY}\n" in proc.stdout  # the model name came from /v1/models
    assert "🤖: [思考] 一加一等于二。\n1+1=2。\n" in proc.stdout and "history cleared" in proc.stdout
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER_TOOL]), encoding="utf-8")
    for stream in (1, 0):
        proc = run_script("chat_openai_api.py", *common, "--model", MODEL, "--tools", tools, "--stream", stream,
                          stdin="北京天气？\n晴，25度\n")
        assert proc.returncode == 0, proc.stderr
        assert '🔧 调用 / call: get_weather({"city": "北京"})' in proc.stdout
        assert f"🤖: {AFTER_TOOL_REPLY}\n" in proc.stdout  # the typed result went back as a tool message


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_chat_client_errors_are_clear(server):
    proc = run_script("chat_openai_api.py", "--base_url", "http://127.0.0.1:9/v1")
    assert proc.returncode == 2 and "cannot reach http://127.0.0.1:9/v1" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_script("chat_openai_api.py", "--base_url", server.base + "/v1", "--api_key", "wrong")
    assert proc.returncode == 2 and "401" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("chat_openai_api.py", "--base_url", server.base + "/v1", "--api_key", API_KEY,
                      "--model", "other", stdin="你好\n")
    assert proc.returncode == 0 and "error 404" in proc.stdout  # reported, and the chat goes on


def test_bench_serve_prints_one_json_line(server):
    proc = run_script("bench_serve.py", "--base_url", server.base + "/v1", "--api_key", API_KEY,
                      "--num_requests", 6, "--concurrency", 3, "--max_tokens", 8)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    stats = json.loads(line)
    assert stats["requests"] == 6 and stats["errors"] == 0 and stats["output_tokens"] == 48  # ignore_eos
    assert stats["model"] == MODEL
    for key in ("requests_per_s", "output_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "latency_ms_p50",
                "latency_ms_p99"):
        assert stats[key] > 0
    assert stats["ttft_ms_p50"] <= stats["latency_ms_p50"] and stats["latency_ms_p50"] <= stats["latency_ms_p99"]
    assert "itl_ms_p50" in stats and "itl_ms_p99" in stats  # inter-token latency (None: one delta per reply)
    if stats["itl_ms_p50"] is not None:
        assert 0 <= stats["itl_ms_p50"] <= stats["itl_ms_p99"] <= stats["latency_ms_p99"]


def test_web_demo_lists_native_weights_transformers_folders_and_adapters(tmp_path):
    from scripts import web_demo
    for name in ("full_sft_512.pth", "reason_768_moe.pth", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "MiniMind2").mkdir()
    (tmp_path / "MiniMind2" / "config.json").write_text("{}")
    (tmp_path / "scratch").mkdir()  # no config.json: not a model
    (tmp_path / "lora" / "lora_identity_512").mkdir(parents=True)
    assert web_demo.local_models(tmp_path) == ["full_sft_512.pth", "reason_768_moe.pth", "MiniMind2/"]
    assert web_demo.lora_adapters(tmp_path) == ["lora_identity_512"]
    a = web_demo.load_args(tmp_path, "reason_768_moe.pth", "")
    assert (a.weight, a.hidden_size, a.use_moe, a.load_from, a.lora_weight) == ("reason", 768, 1, None, None)
    a = web_demo.load_args(tmp_path, "MiniMind2/", "lora_identity_512")
    assert a.load_from == str(tmp_path / "MiniMind2") and a.lora_weight == str(tmp_path / "lora" / "lora_identity_512")
    assert web_demo.local_models(tmp_path / "missing") == []


def demo(monkeypatch, *argv, timeout: float = 60):
    """The page as `streamlit run scripts/web_demo.py -- ARGV` starts it (AppTest reruns it in this process, so
    the argv stays in place for the whole test)."""
    from streamlit.testing.v1 import AppTest
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "web_demo.py"), *map(str, argv)])
    return AppTest.from_file(str(ROOT / "scripts" / "web_demo.py"), default_timeout=timeout).run()


def transcript(at) -> list:
    return [(m.name, [md.value for md in m.markdown], [e.label for e in m.expander]) for m in at.chat_message]


def test_web_demo_local_weights_think_block_delete_and_clear(trained, monkeypatch):
    _, out = trained
    at = demo(monkeypatch, "--weights_dir", out)
    assert not at.exception
    assert at.sidebar.selectbox(key="folder").options == [str(out)]
    assert at.sidebar.selectbox(key=f"label:{out}").options == ["full_sft_64.pth"]
    at.sidebar.slider(key="temperature").set_value(0.0).run()
    at.chat_input[0].set_value("1+1等于几？").run()
    assert not at.exception and not at.error
    assert transcript(at) == [("user", ["1+1等于几？"], []),
                              ("assistant", ["一加一等于二。", "1+1=2。"], ["💭 思考过程 / reasoning"])]
    at.chat_input[0].set_value("<b>你好</b>").run()  # shown as text, and the history is part of the prompt
    assert transcript(at)[2] == ("user", ["<b>你好</b>"], [])
    assert not any(md.proto.allow_html for md in at.markdown)  # nothing is rendered as raw HTML
    at.button(key="delete_1").click().run()  # delete the first turn
    assert [t[1] for t in transcript(at)][0] == ["<b>你好</b>"] and len(at.chat_message) == 2
    at.sidebar.slider(key="historys").set_value(0).run()
    at.chat_input[0].set_value("你好").run()
    assert transcript(at)[-1] == ("assistant", [HELLO_REPLY], [])
    at.sidebar.button(key="clear").click().run()
    assert len(at.chat_message) == 0


def test_web_demo_api_mode(server, monkeypatch):
    at = demo(monkeypatch, "--api_base_url", server.base + "/v1")
    at.sidebar.radio(key="source").set_value("OpenAI 兼容 API / API").run()
    assert server.base + "/v1" in at.sidebar.caption[0].value
    assert [t.key for t in at.sidebar.text_input] == ["model", "api_key"]  # no base_url box for visitors
    at.sidebar.text_input(key="api_key").set_value(API_KEY)
    at.sidebar.slider(key="temperature").set_value(0.0).run()
    at.chat_input[0].set_value("1+1等于几？").run()
    assert not at.error, at.error[0].value if at.error else ""
    assert transcript(at)[-1] == ("assistant", ["一加一等于二。", "1+1=2。"], ["💭 思考过程 / reasoning"])
    at.sidebar.text_input(key="api_key").set_value("wrong").run()
    at.chat_input[0].set_value("你好").run()
    assert "401 Incorrect API key" in at.error[0].value
    assert len(at.session_state["messages"]) == 2  # the failed question is taken back


def test_web_demo_says_when_no_weights_exist(tmp_path, monkeypatch):
    at = demo(monkeypatch, "--weights_dir", tmp_path)
    at.chat_input[0].set_value("你好").run()
    assert "no weights in" in at.error[0].value and at.session_state["messages"] == []


def test_web_demo_offers_only_the_folders_it_was_started_with(tmp_path, monkeypatch):
    """Visitors choose among --weights_dir folders (default out/ and its weight subfolders); no typed paths."""
    from scripts import web_demo
    (tmp_path / "a").mkdir()
    at = demo(monkeypatch, "--weights_dir", tmp_path / "a", "--weights_dir", "out")
    assert at.sidebar.selectbox(key="folder").options == [str(tmp_path / "a"), "out"]
    assert not [t for t in at.sidebar.text_input if t.key == "folder"]
    root = tmp_path / "repo"
    for d in ("out/demo", "out/empty", "out/lora/x"):
        (root / d).mkdir(parents=True)
    (root / "out/demo/full_sft_256.pth").write_bytes(b"")
    monkeypatch.setattr(web_demo, "ROOT", root)
    assert web_demo.allowed_folders(None) == [root / "out", root / "out/demo"]
    assert web_demo.demo_options(["-q", "--api_base_url", "http://h:1/v1"]).api_base_url == "http://h:1/v1"


def test_streamlit_config_binds_localhost():
    import tomllib
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
