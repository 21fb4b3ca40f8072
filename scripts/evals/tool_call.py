"""Tool-calling evaluation: a multi-round model -> tool calls -> mock results -> model loop, scored
(scripts/eval_tool_call.py is the command).

Cases: the held-out file of scripts/data_prepare_toolcall.py (its first assistant turn is the expected call; the
recorded tool results are replayed) and SUITE below (should-call, should-not-call, two calls, argument types,
Chinese and English) on the mock tools of scripts/toolcall/tool_mocks.py. Decoding is greedy by default, so a score is
reproducible. Native weights decode through the shared `model.engine.Engine`, batched over cases; an endpoint is
driven with the official `openai` client (urllib when it is not installed).

Metrics (first reply unless said otherwise; "should-call" = cases whose expected reply has calls):
    call_detection        should-call cases whose reply has at least one <tool_call> block (parsed or not)
    no_call_accuracy      should-not-call cases whose reply has none
    json_validity         should-call cases with at least one block, every block {"name": str, "arguments": {}}
    tool_name_accuracy    should-call cases whose called names equal the expected ones (as multisets)
    argument_exact_match  should-call cases whose calls equal the expected calls (names and arguments)
    argument_key_f1       micro F1 over (tool name, argument key, value) items of all should-call cases
    final_uses_result     cases whose tools returned something: the final answer (first reply without calls)
                          contains one of the result's values that the question did not already contain
Output: one JSON line per case and a last {"summary": ...} line (--out), and a table on stdout.
"""
import argparse
import collections
import json
import os
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional

from dataset.lm_dataset import parse_chat_record
from model.chat_protocol import parse_tool_call, read_questions
from model.checkpoint import add_model_args, atomic_write_text, load_model
from model import constrain
from model.engine import Engine, SamplingParams
from model.runtime import UserError, repo_path
from scripts.evals import bfcl
from scripts.toolcall.tool_mocks import MOCK_TOOLS, RecordedTools, canonical, run_tool

BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
TOOLS_EXAMPLE = repo_path("scripts/tools_example.json")


def _tools(*names):
    return [t for t in MOCK_TOOLS if t["function"]["name"] in names]


def _call(name, **arguments):
    return {"name": name, "arguments": arguments}


W, C, S, T = "get_weather", "calculator", "search", "get_time"
# The fixed suite: (id, language, tools offered, question, expected calls). Mock results are computed by the mocks.
SUITE = [
    ("weather_zh", "zh", (W, C), "北京今天天气怎么样？", [_call(W, city="北京")]),
    ("weather_en", "en", (W, T), "What's the weather like in Paris?", [_call(W, city="Paris")]),
    ("weather_enum_en", "en", (W,), "What is the temperature in Tokyo, in fahrenheit?",
     [_call(W, city="Tokyo", unit="fahrenheit")]),
    ("calc_zh", "zh", (C, W), "帮我算一下 (12+7)*3", [_call(C, expression="(12+7)*3")]),
    ("calc_en", "en", (C,), "What is 345*12?", [_call(C, expression="345*12")]),
    ("time_zh", "zh", (T, W), "现在上海几点了？时区是 Asia/Shanghai。", [_call(T, timezone="Asia/Shanghai")]),
    ("time_en", "en", (T, S), "What time is it in the Europe/London time zone?", [_call(T, timezone="Europe/London")]),
    ("search_int_zh", "zh", (S, C), "搜索 vLLM，只要 2 条结果。", [_call(S, query="vLLM", top_k=2)]),
    ("search_en", "en", (S,), "Search the notes for LoRA.", [_call(S, query="LoRA")]),
    ("two_weather_zh", "zh", (W, C), "北京和上海的天气分别怎么样？", [_call(W, city="北京"), _call(W, city="上海")]),
    ("two_calc_en", "en", (C, S), "Compute 12*12 and 15*15.",
     [_call(C, expression="12*12"), _call(C, expression="15*15")]),
    ("corpus_calc_zh", "zh", ("corpus",), "计算：(25+17)*3", [_call(C, expression="(25+17)*3")]),
    ("nocall_hello_zh", "zh", (W, C, S, T), "你好，你是谁？", []),
    ("nocall_thanks_zh", "zh", (W, S), "谢谢你的帮助！", []),
    ("nocall_joke_en", "en", (C, T), "Tell me a joke.", []),
    ("nocall_who_en", "en", (W,), "Who are you?", []),
]


# -------------------------------------------------------------------------------------------------- cases

@dataclass
class Case:
    id: str
    source: str  # "heldout" or "suite"
    lang: str
    tools: list
    messages: list  # the prompt: system/user (and earlier turns) before the first expected assistant turn
    expected: list  # [{"name", "arguments"}]; [] = the model should answer without a call
    recorded: RecordedTools = field(default_factory=RecordedTools)


def _lang(text: str) -> str:
    return "zh" if any("\u4e00" <= c <= "\u9fff" for c in text) else "en"


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def cases_from_rows(rows: list, prefix: str = "heldout") -> list:
    """Cases from SFT rows with tools: the prompt is everything before the first assistant turn."""
    out = []
    for n, row in enumerate(rows):
        chat = parse_chat_record(json.loads(json.dumps(row)))
        msgs = chat.messages
        first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
        if first is None:
            continue
        expected = [{"name": c[0], "arguments": json.loads(c[1])}
                    for c in (parse_tool_call(b.strip()) for b in BLOCK.findall(msgs[first]["content"])) if c]
        recorded = RecordedTools()
        pending = []
        for m in msgs:  # replay: the k-th tool turn after an assistant turn answers its k-th call
            if m["role"] == "assistant":
                pending = [parse_tool_call(b.strip()) for b in BLOCK.findall(m["content"])]
                pending = [p for p in pending if p]
            elif m["role"] == "tool" and pending:
                name, args = pending.pop(0)
                recorded.add(name, json.loads(args), _json_or_text(m["content"]))
        prompt = [{k: v for k, v in m.items() if k in ("role", "content")} for m in msgs[:first]]
        user = next((m["content"] for m in prompt if m["role"] == "user"), "")
        out.append(Case(f"{prefix}_{n}", "heldout", _lang(user), chat.tools or [], prompt, expected, recorded))
    return out


def suite_cases() -> list:
    corpus = [t if "function" in t else {"type": "function", "function": t}
              for t in json.loads(TOOLS_EXAMPLE.read_text(encoding="utf-8"))]
    out = []
    for cid, lang, names, question, expected in SUITE:
        tools = corpus if names == ("corpus",) else _tools(*names)
        out.append(Case(cid, "suite", lang, tools, [{"role": "user", "content": question}], expected))
    return out


def read_jsonl(path: Path) -> list:
    if not path.is_file():
        raise UserError(f"{path}: no such file; make it with `python scripts/data_prepare_toolcall.py` "
                        f"(held-out file: dataset/sft_tool_call_heldout.jsonl), or pass --data_path none")
    rows = []
    for n, line in enumerate(path.open(encoding="utf-8"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: invalid JSON ({e.msg}); fix or delete that line") from None
    return rows


# -------------------------------------------------------------------------------------------------- replies

@dataclass
class Reply:
    content: str  # text outside valid tool calls (invalid blocks stay in it, as the server leaves them)
    calls: list  # [{"name", "arguments": dict}]
    invalid_blocks: int  # <tool_call> blocks that do not parse, and an unclosed one
    seconds: float = 0.0
    error: Optional[str] = None


def parse_reply_text(text: str) -> Reply:
    """Calls, invalid block count and remaining content of raw model text."""
    calls, invalid, kept = [], 0, []
    pos = 0
    for m in BLOCK.finditer(text):
        kept.append(text[pos:m.start()])
        parsed = parse_tool_call(m.group(1).strip())
        if parsed:
            calls.append({"name": parsed[0], "arguments": json.loads(parsed[1])})
        else:
            invalid += 1
            kept.append(m.group(0))
        pos = m.end()
    rest = text[pos:]
    if "<tool_call>" in rest:  # an unclosed block: the model stopped or was cut inside it
        invalid += 1
    kept.append(rest)
    return Reply("".join(kept).strip(), calls, invalid)


def reply_from_api_message(message: dict) -> Reply:
    """Our server and vLLM return parsed calls in tool_calls and leave unparsable blocks in content."""
    content = message.get("content") or ""
    base = parse_reply_text(content)  # a server that did not parse (no tools) leaves blocks in content
    calls, invalid = list(base.calls), base.invalid_blocks
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = None
        if isinstance(fn.get("name"), str) and fn["name"] and isinstance(args, dict):
            calls.append({"name": fn["name"], "arguments": args})
        else:
            invalid += 1
    return Reply(base.content, calls, invalid)


def openai_messages(messages: list) -> list:
    """Internal messages (assistant calls as {"name", "arguments": dict}) in OpenAI's request format."""
    out = []
    for m in messages:
        if m["role"] == "assistant" and m.get("calls"):
            out.append({"role": "assistant", "content": m.get("content") or None, "tool_calls": [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
                for c in m["calls"]]})
        elif m["role"] == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


class EngineBackend:
    """Native weights through the shared Engine; one batched generate per round over all unfinished cases."""

    def __init__(self, model, tokenizer, max_new_tokens: int, temperature: float, top_p: float, batch_size: int,
                 constrained: bool = False):
        self.tokenizer = tokenizer
        # --constrained: every <tool_call> the model opens is a valid call of an offered tool (model/constrain.py)
        self.vocab = constrain.vocabulary(tokenizer) if constrained else None
        self.engine = Engine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0)
        # seed 0: with --temperature > 0 a rerun of the same weights gives the same score
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=0)
        self.limit = model.config.max_position_embeddings
        self.batch_size = batch_size
        self.name = "engine"

    def prompt_ids(self, messages: list, tools: list) -> list:
        text = self.tokenizer.apply_chat_template(openai_messages(messages), tools=tools or None, tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def replies(self, convs: list) -> list:
        out: List[Optional[Reply]] = [None] * len(convs)
        todo = []
        for i, (messages, tools) in enumerate(convs):
            ids = self.prompt_ids(messages, tools)
            if len(ids) + self.params.max_new_tokens > self.limit:
                out[i] = Reply("", [], 0, error=f"prompt of {len(ids)} tokens + max_new_tokens does not fit "
                                                f"the model's {self.limit} positions")
            else:
                todo.append((i, ids))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            t0 = time.perf_counter()
            params = self.params
            if self.vocab is not None:  # one grammar per case: each case offers its own tools
                params = [replace(self.params, constraint=constrain.tool_call_constraint(
                    self.vocab, self.tokenizer, convs[i][1]) if convs[i][1] else None) for i, _ in chunk]
            done = self.engine.generate([ids for _, ids in chunk], params)
            seconds = (time.perf_counter() - t0) / len(chunk)
            for (i, _), comp in zip(chunk, done):
                r = parse_reply_text(self.tokenizer.decode(comp.token_ids, skip_special_tokens=True))
                r.seconds = seconds
                out[i] = r
        return out


class APIBackend:
    """Any OpenAI-compatible endpoint (our server, vLLM): the official client, or urllib without it."""

    def __init__(self, base_url: str, model: str, api_key: str, max_new_tokens: int, temperature: float,
                 top_p: float, concurrency: int, timeout: float = 120.0):
        self.base_url, self.model, self.api_key = base_url.rstrip("/"), model, api_key
        self.body = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        self.concurrency, self.timeout = concurrency, timeout
        try:
            import openai
            self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none", timeout=timeout,
                                        max_retries=0)
            self.name = f"openai {openai.__version__}"
        except ImportError:
            self.client, self.name = None, "urllib (openai not installed)"

    def _request(self, messages: list, tools: list) -> dict:
        body = {"model": self.model, "messages": openai_messages(messages), **self.body}
        if tools:
            body["tools"] = tools
        if self.client is not None:
            return self.client.chat.completions.create(**body).choices[0].message.model_dump()
        req = urllib.request.Request(self.base_url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.api_key or 'none'}"})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())["choices"][0]["message"]

    def _one(self, conv) -> Reply:
        t0 = time.perf_counter()
        try:
            r = reply_from_api_message(self._request(*conv))
        except Exception as e:  # a failed request scores as a reply without calls; the case records why
            r = Reply("", [], 0, error=f"{type(e).__name__}: {e}")
        r.seconds = time.perf_counter() - t0
        return r

    def replies(self, convs: list) -> list:
        # requests in parallel (default 8): a server batches them (ours continuously, vLLM too), so a round of
        # 30 cases costs about one reply's latency instead of 30
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, convs))


# ------------------------------------------------------------------------------------------------ the loop

def run_cases(backend, cases: list, max_rounds: int) -> list:
    """Each case: reply, run the calls on the mocks (replayed results first), feed results back, up to max_rounds
    model replies. Cases advance in lockstep so a native backend decodes each round as one batch."""
    state = [{"messages": list(c.messages), "rounds": [], "final": None, "results": []} for c in cases]
    active = list(range(len(cases)))
    for round_no in range(max_rounds):
        if not active:
            break
        replies = backend.replies([(state[i]["messages"], cases[i].tools) for i in active])
        still = []
        for i, reply in zip(active, replies):
            s = state[i]
            entry = {"content": reply.content, "calls": reply.calls, "invalid_blocks": reply.invalid_blocks,
                     "seconds": round(reply.seconds, 4)}
            if reply.error:
                entry["error"] = reply.error
            s["rounds"].append(entry)
            if not reply.calls:  # a plain answer (or invalid blocks only) ends the case
                s["final"] = reply.content
                continue
            calls = [dict(c, id=f"call_{i}_{round_no}_{k}") for k, c in enumerate(reply.calls)]
            s["messages"].append({"role": "assistant", "content": reply.content, "calls": calls})
            entry["results"] = []
            for c in calls:
                result = run_tool(c["name"], c["arguments"], cases[i].recorded)
                text = json.dumps(result, ensure_ascii=False)
                s["messages"].append({"role": "tool", "tool_call_id": c["id"], "content": text})
                s["results"].append(result)
                entry["results"].append(result)
            still.append(i)
        active = still
    return state


# ------------------------------------------------------------------------------------------------- scoring

def result_values(result) -> list:
    """Leaf values of a tool result worth quoting: numbers and strings of 2+ characters (long ones cut to 20)."""
    out = []
    if isinstance(result, dict):
        for k, v in result.items():
            if k not in ("mock", "error"):
                out += result_values(v)
    elif isinstance(result, list):
        for v in result:
            out += result_values(v)
    elif isinstance(result, bool) or result is None:
        pass
    elif isinstance(result, (int, float)):
        out.append(str(result))
    elif isinstance(result, str) and len(result.strip()) >= 2:
        # one character (a 是 / 的) appears in almost any answer, so it would prove nothing; a long value (a
        # dictionary gloss of 100+ characters) is paraphrased, so only its first 20 characters are looked for
        out.append(result.strip()[:20])
    return out


def _items(calls: list) -> collections.Counter:
    return collections.Counter((c["name"], k, canonical(v)) for c in calls for k, v in c["arguments"].items())


def score_case(expected: list, first: dict, final: Optional[str], results: list, question: str) -> dict:
    """Per-case flags (None = the metric does not apply to this case). `first` is the first round's entry."""
    should_call = bool(expected)
    pred = first.get("calls", [])
    # a <tool_call> block that is not valid JSON still shows the model decided to call: it counts for detection
    # (and against no_call_accuracy) but fails json_validity
    called = bool(pred) or first.get("invalid_blocks", 0) > 0
    s = {"should_call": should_call, "detected": None, "no_call_correct": None, "json_valid": None,
         "name_correct": None, "exact": None, "key_tp": 0, "key_pred": 0, "key_expected": 0, "uses_result": None}
    if should_call:
        s["detected"] = called
        s["json_valid"] = called and first.get("invalid_blocks", 0) == 0
        s["name_correct"] = sorted(c["name"] for c in pred) == sorted(c["name"] for c in expected)
        s["exact"] = (collections.Counter((c["name"], canonical(c["arguments"])) for c in pred)
                      == collections.Counter((c["name"], canonical(c["arguments"])) for c in expected))
        p, e = _items(pred), _items(expected)
        s["key_tp"], s["key_pred"], s["key_expected"] = sum((p & e).values()), sum(p.values()), sum(e.values())
    else:
        s["no_call_correct"] = not called
    # a value the question or the call already contained (the city in a weather result) is no evidence that the
    # answer read the result, so only new values count
    asked = question + " " + " ".join(canonical(c["arguments"]) for c in pred)
    values = [v for r in results for v in result_values(r) if v not in asked]
    if values:
        s["uses_result"] = final is not None and any(v in final for v in values)
    return s


def _mean(flags) -> Optional[float]:
    flags = [f for f in flags if f is not None]
    return round(sum(flags) / len(flags), 4) if flags else None


def aggregate(scores: list) -> dict:
    tp = sum(s["key_tp"] for s in scores)
    n_pred, n_exp = sum(s["key_pred"] for s in scores), sum(s["key_expected"] for s in scores)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_exp if n_exp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "cases": len(scores),
        "should_call": sum(1 for s in scores if s["should_call"]),
        "should_not_call": sum(1 for s in scores if not s["should_call"]),
        "call_detection": _mean(s["detected"] for s in scores),
        "no_call_accuracy": _mean(s["no_call_correct"] for s in scores),
        "json_validity": _mean(s["json_valid"] for s in scores),
        "tool_name_accuracy": _mean(s["name_correct"] for s in scores),
        "argument_exact_match": _mean(s["exact"] for s in scores),
        "argument_key_f1": round(f1, 4) if n_exp else None,
        "final_uses_result": _mean(s["uses_result"] for s in scores),
        "result_cases": sum(1 for s in scores if s["uses_result"] is not None),
    }


METRICS = ["call_detection", "no_call_accuracy", "json_validity", "tool_name_accuracy", "argument_exact_match",
           "argument_key_f1", "final_uses_result"]


def table(summary: dict) -> str:
    cols = [k for k in ("heldout", "suite", "all") if k in summary]
    rows = [["metric"] + cols, ["cases"] + [str(summary[c]["cases"]) for c in cols]]
    for m in METRICS:
        rows.append([m] + ["-" if summary[c][m] is None else f"{summary[c][m]:.3f}" for c in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)


def evaluate(backend, cases: list, max_rounds: int) -> tuple:
    """(per-case records, summary by source and overall)."""
    state = run_cases(backend, cases, max_rounds)
    records, by = [], collections.defaultdict(list)
    for case, s in zip(cases, state):
        question = " ".join(m["content"] for m in case.messages if m["role"] == "user")
        sc = score_case(case.expected, s["rounds"][0], s["final"], s["results"], question)
        by[case.source].append(sc)
        by["all"].append(sc)
        records.append({"id": case.id, "source": case.source, "lang": case.lang, "question": question,
                        "tools": [t["function"]["name"] for t in case.tools], "expected": case.expected,
                        "rounds": s["rounds"], "final_answer": s["final"], "score": sc})
    return records, {k: aggregate(v) for k, v in by.items()}


# -------------------------------------------------------------------------------------------- interactive

def interactive(backend, tools: list, recorded: RecordedTools, max_rounds: int) -> None:
    history: list = []
    names = ", ".join(t["function"]["name"] for t in tools)
    print(f"tools / 工具: {names}\n/clear 清空历史 clears the history, /exit quits", flush=True)
    for question in read_questions(history.clear):
        history.append({"role": "user", "content": question})
        for round_no in range(max_rounds):
            reply = backend.replies([(history, tools)])[0]
            if reply.error:
                print(f"error: {reply.error}", flush=True)
                break
            if reply.invalid_blocks:
                print(f"[{reply.invalid_blocks} tool call block(s) that are not valid JSON]", flush=True)
            if not reply.calls:
                print(f"🤖: {reply.content}", flush=True)
                history.append({"role": "assistant", "content": reply.content})
                break
            calls = [dict(c, id=f"call_{len(history)}_{k}") for k, c in enumerate(reply.calls)]
            history.append({"role": "assistant", "content": reply.content, "calls": calls})
            for c in calls:
                result = json.dumps(run_tool(c["name"], c["arguments"], recorded), ensure_ascii=False)
                print(f"🔧 {c['name']}({json.dumps(c['arguments'], ensure_ascii=False)}) -> {result}", flush=True)
                history.append({"role": "tool", "tool_call_id": c["id"], "content": result})
        else:
            print(f"[stopped after {max_rounds} rounds of tool calls]", flush=True)
        print(flush=True)


# ---------------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="工具调用评测 / tool-calling evaluation",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", default="auto", choices=["auto", "interactive"],
                   help="auto = 评测并打分 / score the cases; interactive = 与模拟工具对话 / chat with the mock tools")
    add_model_args(p)
    p.set_defaults(weight="tool_sft")
    add = p.add_argument_group("endpoint / 接口").add_argument
    add("--base_url", default=None, help="OpenAI 兼容接口，如 http://127.0.0.1:8998/v1（不加载本地权重）/ "
                                         "score an endpoint instead of native weights (our server, vLLM)")
    add("--model", default="minimind", help="接口的模型名 / model name sent to the endpoint")
    add("--api_key", default=None, help="接口密钥 / endpoint API key (default $MINIMIND_API_KEY)")
    add("--concurrency", type=int, default=8, help="并发请求数 / parallel requests to the endpoint")
    add = p.add_argument_group("cases / 用例").add_argument
    add("--data_path", default="dataset/sft_tool_call_heldout.jsonl",
        help="留出集（data_prepare_toolcall.py 生成）/ held-out SFT rows; 'none' = the suite only")
    add("--max_cases", type=int, default=0,
        help="留出用例上限（BFCL：每类上限），0 = 全部 / most held-out cases (BFCL: per category; 0 = all)")
    add("--bfcl_dir", default=None,
        help="BFCL v3 格式目录（BFCL_v3_<类别>.json + possible_answer/），按 BFCL 的 AST 规则打分，代替留出集与手写用例 / "
             "score a Berkeley Function Calling Leaderboard folder instead of the held-out set and the suite")
    add("--suite", type=int, default=1, choices=[0, 1], help="1 = 加上手写用例 / also run the hand-written suite")
    add("--max_rounds", type=int, default=3, help="每个用例最多几轮模型回复 / model replies per case")
    add("--tools", default=None, help="interactive：工具 JSON 文件 / tool schemas for interactive mode "
                                      "(default: the four mocks + scripts/tools_example.json)")
    add = p.add_argument_group("generation / 生成").add_argument
    add("--max_new_tokens", type=int, default=256, help="每轮最多生成 token / tokens per reply")
    add("--temperature", type=float, default=0.0, help="0 = 贪心（可复现）/ 0 = greedy, reproducible")
    add("--top_p", type=float, default=1.0, help="nucleus 采样阈值 / nucleus sampling mass")
    add("--batch_size", type=int, default=32, help="本地权重一次解码的用例数 / cases decoded together")
    add("--constrained", type=int, default=0, choices=[0, 1],
        help="1 = 语法约束解码（调用一定是合法 JSON、工具名在给定列表里；需 llguidance）/ grammar-constrained tool "
             "calls for native weights (needs llguidance); an endpoint decides itself (our server: --constrained)")
    add("--out", default=None,
        help="JSONL 结果 / per-case JSON lines + summary; default {save_dir}/tool_eval_<weight>.jsonl "
             "(--bfcl_dir: {save_dir}/bfcl_eval_<weight>.jsonl)")
    return p


def make_backend(args):
    if args.base_url:
        if args.constrained:
            raise UserError("--constrained 1 applies to native weights; an endpoint constrains by its own settings "
                            "(scripts/serve_openai_api.py --constrained on)")
        key = args.api_key or os.environ.get("MINIMIND_API_KEY")
        return APIBackend(args.base_url, args.model, key, args.max_new_tokens, args.temperature, args.top_p,
                          args.concurrency)
    if args.constrained:
        constrain.require("--constrained 1")
    model, tokenizer = load_model(args)
    return EngineBackend(model, tokenizer, args.max_new_tokens, args.temperature, args.top_p, args.batch_size,
                         bool(args.constrained))


def load_cases(args) -> list:
    cases = []
    if str(args.data_path).lower() != "none":
        rows = read_jsonl(repo_path(args.data_path))
        cases = cases_from_rows(rows)
        if args.max_cases > 0:
            cases = cases[:args.max_cases]
    if args.suite:
        cases += suite_cases()
    if not cases:
        raise UserError("no cases: give a held-out file with --data_path or keep --suite 1")
    return cases


def run(args) -> int:
    """The whole command for parsed flags (scripts/eval_tool_call.py); UserError for what the user can fix."""
    for name in ("max_new_tokens", "max_rounds", "batch_size", "concurrency"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.mode == "interactive":
        tools = MOCK_TOOLS + [t if "function" in t else {"type": "function", "function": t}
                              for t in json.loads(TOOLS_EXAMPLE.read_text(encoding="utf-8"))]
        if args.tools:
            tools = json.loads(repo_path(args.tools).read_text(encoding="utf-8"))
        recorded = RecordedTools()
        for path in ("dataset/sft_tool_call.jsonl", args.data_path):
            if str(path).lower() != "none" and repo_path(path).is_file():
                for case in cases_from_rows(read_jsonl(repo_path(path))):
                    recorded.results.update(case.recorded.results)
                    recorded.names |= case.recorded.names
        interactive(make_backend(args), tools, recorded, args.max_rounds)
        return 0
    if args.bfcl_dir:
        return run_bfcl(args)
    cases = load_cases(args)
    backend = make_backend(args)
    t0 = time.perf_counter()
    records, summary = evaluate(backend, cases, args.max_rounds)
    seconds = time.perf_counter() - t0
    target = args.base_url or args.weight
    name = f"tool_eval_{'api' if args.base_url else args.weight}.jsonl"
    out = repo_path(args.out) if args.out else repo_path(args.save_dir) / name  # next to the weights
    out.parent.mkdir(parents=True, exist_ok=True)
    tail = {"summary": summary, "target": target, "backend": backend.name, "seconds": round(seconds, 2),
            "max_rounds": args.max_rounds, "temperature": args.temperature,
            "constrained": bool(args.constrained)}
    atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records + [tail]), out)
    print(f"tool-calling eval of {target} ({backend.name}, {len(cases)} cases, {seconds:.1f} s) -> {out}")
    print(table(summary))
    return 0



def run_bfcl(args) -> int:
    """--bfcl_dir: one batched reply per BFCL case, scored by scripts/evals/bfcl.py; JSON lines + a Markdown table."""
    cases = bfcl.read_bfcl_dir(repo_path(args.bfcl_dir), args.max_cases)  # bad files fail before the model loads
    backend = make_backend(args)
    t0 = time.perf_counter()
    records, summary = bfcl.evaluate(backend, cases)
    seconds = time.perf_counter() - t0
    target = args.base_url or args.weight
    name = f"bfcl_eval_{'api' if args.base_url else args.weight}.jsonl"
    out = repo_path(args.out) if args.out else repo_path(args.save_dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    tail = {"summary": summary, "target": target, "backend": backend.name, "seconds": round(seconds, 2),
            "bfcl_dir": str(args.bfcl_dir), "temperature": args.temperature}
    atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records + [tail]), out)
    print(f"BFCL eval of {target} ({backend.name}, {len(cases)} cases, {seconds:.1f} s) -> {out}")
    print(bfcl.table(summary))
    return 0
