"""Safe mock tools for tool-calling evaluation (scripts/evals/tool_call.py) and their OpenAI schemas.

Four general mocks, the same four that scripts/web_tool_test.html implements in JavaScript:

    get_weather(city, unit)      a fixed pseudo-forecast derived from the city name (clearly marked "mock")
    calculator(expression)       arithmetic through a hand-walked `ast` tree: no eval, bounded work
    search(query, top_k)         keyword search over a small fixed set of notes about this project
    get_time(timezone)           the current time in an IANA time zone (zoneinfo)

plus `RecordedTools`, which answers the tools of the training data with the real tool results recorded in the
data files, so held-out dialogues can be replayed; a call with other arguments of a tool of the real tool library
(scripts/toolcall/library) is computed live by `library.call`, inside its bounds.

The calculator is the only mock that reads model output as code-like text, so it is built to refuse quickly:
at most 200 characters and 64 syntax nodes; numbers, + - * / // % ** and parentheses only; an exponent above
64, a power or product whose result would exceed 300 digits, and any result longer than 300 characters are
refused before they are computed (`9**9**9**9` is refused in microseconds: 9**9 is already too large an exponent).
"""
import datetime
import hashlib
import json
from typing import Callable, Dict, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scripts.toolcall import library
from scripts.toolcall.calc import CalcError, calculate

# ------------------------------------------------------------------------------------------------- the mocks

CONDITIONS = ["晴 sunny", "多云 cloudy", "小雨 light rain", "阴 overcast", "雷阵雨 thunderstorm", "雪 snow"]

# The search mock's notes: facts about this repository, so a search has something true to return.
SEARCH_NOTES = [{"title": t, "snippet": s} for t, s in [
    ("MiniMind",
     "MiniMind 是一个从零训练的小型中文语言模型项目，最小的 MiniMind2-Small 约 26M 参数。"),
    ("tool calling / 工具调用",
     "工具调用模型把调用写成 <tool_call> 块，服务端把它转换成 OpenAI 的 tool_calls。"),
    ("OpenAI-compatible server",
     "scripts/serve_openai_api.py serves /v1/chat/completions on port 8998."),
    ("vLLM",
     "vLLM serves the converted model with --enable-auto-tool-choice --tool-call-parser hermes."),
    ("tokenizer / 分词器",
     "MiniMind 的分词器词表大小为 6400，<|im_start|> 和 <|im_end|> 是对话模板的特殊标记。"),
    ("Ascend NPU",
     "On Ascend 910B the usual training dtype is float16 with a GradScaler."),
    ("SFT",
     "监督微调只在 assistant 的回答上计算损失，system、user 和 tool 的内容不计损失。"),
    ("LoRA",
     "LoRA adapters are saved under out/lora/ and merged into the model for evaluation."),
]]


def get_weather(city: str, unit: str = "celsius") -> dict:
    if not isinstance(city, str) or not city.strip():
        return {"error": "city must be a non-empty string"}
    if unit not in ("celsius", "fahrenheit"):
        return {"error": f"unit must be celsius or fahrenheit, not {unit!r}"}
    h = hashlib.sha256(city.strip().lower().encode()).digest()
    celsius = h[0] % 36 - 5
    temp = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32)
    return {"city": city.strip(), "temperature": temp, "unit": unit, "condition": CONDITIONS[h[1] % len(CONDITIONS)],
            "humidity": 30 + h[2] % 60, "mock": True}


def calculator(expression: str) -> dict:
    try:
        return {"expression": expression, "result": calculate(expression)}
    except CalcError as e:
        return {"error": str(e)}


def _terms(text: str) -> set:
    text = text.lower()
    words = {w for w in "".join(c if c.isalnum() else " " for c in text).split() if len(w) > 1}
    return words | {c for c in text if "\u4e00" <= c <= "\u9fff"}


def search(query: str, top_k: int = 3) -> dict:
    if not isinstance(query, str) or not query.strip():
        return {"error": "query must be a non-empty string"}
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 10:
        return {"error": "top_k must be an integer from 1 to 10"}
    q = _terms(query)
    scored = sorted(((len(q & _terms(n["title"] + " " + n["snippet"])), i) for i, n in enumerate(SEARCH_NOTES)),
                    key=lambda s: (-s[0], s[1]))
    return {"query": query, "results": [SEARCH_NOTES[i] for score, i in scored[:top_k] if score > 0]}


def get_time(timezone: str = "UTC", now: Optional[datetime.datetime] = None) -> dict:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return {"error": f"unknown time zone {timezone!r} (use an IANA name such as Asia/Shanghai)"}
    t = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(zone)
    return {"timezone": timezone, "datetime": t.strftime("%Y-%m-%d %H:%M:%S"), "weekday": t.strftime("%A")}


def _fn(name, description, properties, required):
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


MOCK_TOOLS = [
    _fn("get_weather", "查询城市的天气（模拟数据）/ current weather of a city (mock data)",
        {"city": {"type": "string", "description": "城市名 / city name"},
         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "温度单位 / temperature unit"}},
        ["city"]),
    _fn("calculator", "计算一个算术表达式（+ - * / 和括号），返回结果。",
        {"expression": {"type": "string", "description": "算术表达式，例如 (3+4)*5"}}, ["expression"]),
    _fn("search", "搜索项目笔记 / search notes about this project",
        {"query": {"type": "string", "description": "关键词 / keywords"},
         "top_k": {"type": "integer", "description": "返回条数 1-10 / number of results"}}, ["query"]),
    _fn("get_time", "查询某个时区的当前时间 / current time in an IANA time zone",
        {"timezone": {"type": "string", "description": "IANA 时区，例如 Asia/Shanghai / time zone"}}, ["timezone"]),
]
MOCKS: Dict[str, Callable[..., dict]] = {"get_weather": get_weather, "calculator": calculator, "search": search,
                                         "get_time": get_time}


def canonical(arguments) -> str:
    """One string per argument object, independent of key order (tool-call identity)."""
    return json.dumps(arguments, ensure_ascii=False, sort_keys=True)


class RecordedTools:
    """Tool results recorded in training/held-out dialogues, looked up by (name, arguments)."""

    def __init__(self):
        self.results: Dict[tuple, object] = {}
        self.names: set = set()

    def add(self, name: str, arguments, result) -> None:
        self.results[(name, canonical(arguments))] = result
        self.names.add(name)

    def get(self, name: str, arguments):
        return self.results.get((name, canonical(arguments)))


def run_tool(name: str, arguments, recorded: Optional[RecordedTools] = None):
    """The result of one call, as the object a tool message carries; never raises for bad model output."""
    if recorded is not None:
        hit = recorded.get(name, arguments)
        if hit is not None:
            return hit
    if not isinstance(arguments, dict):
        return {"error": "arguments must be a JSON object"}
    if name in MOCKS:
        try:
            return MOCKS[name](**arguments)
        except TypeError as e:  # missing or unexpected argument names
            return {"error": f"bad arguments for {name}: {e}"}
    if name in library.TOOLS:  # the real tools of the training data: computed live, within the library's bounds
        return library.call(name, arguments)
    if recorded is not None and name in recorded.names:
        return {}  # a corpus tool asked about something no record holds: "not found", as the real tool says
    return {"error": f"unknown tool {name!r}"}
