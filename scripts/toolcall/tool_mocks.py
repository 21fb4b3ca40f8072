"""Safe mock tools for tool-calling evaluation (scripts/evals/tool_call.py) and their OpenAI schemas.

Four general mocks, the same four that scripts/web_tool_test.html implements in JavaScript:

    get_weather(city, unit)      a fixed pseudo-forecast derived from the city name (clearly marked "mock")
    calculator(expression)       arithmetic through a hand-walked `ast` tree: no eval, bounded work
    search(query, top_k)         keyword search over a small fixed set of notes about this project
    get_time(timezone)           the current time in an IANA time zone (zoneinfo)

plus `RecordedTools`, which answers the corpus tools of the local training data (lookup_idiom, lookup_char,
search_poem, ...) with the real tool results recorded in the data files, so held-out dialogues can be replayed.

The calculator is the only mock that reads model output as code-like text, so it is built to refuse quickly:
at most 200 characters and 64 syntax nodes; numbers, + - * / // % ** and parentheses only; an exponent above
64, a power or product whose result would exceed 300 digits, and any result longer than 300 characters are
refused before they are computed (`9**9**9**9` is refused in microseconds: 9**9 is already too large an exponent).
"""
import ast
import datetime
import hashlib
import json
import math
from typing import Callable, Dict, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_EXPR_CHARS = 200
MAX_NODES = 64
MAX_EXPONENT = 64
MAX_DIGITS = 300


class CalcError(ValueError):
    """An expression the calculator refuses (syntax, operator, size); the message says which."""


def _digits(x) -> float:
    """Roughly how many decimal digits |x| has (for floats: of its integer part)."""
    x = abs(x)
    return math.log10(x) + 1 if x >= 1 else 1.0


_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a ** b,
}


def _check_size(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is not a finite number")
    if _digits(value) > MAX_DIGITS:
        raise CalcError(f"the result would have more than {MAX_DIGITS} digits")
    return value


def _walk(node):
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalcError(f"only numbers are allowed, not {node.value!r}")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _walk(node.operand)
        return v if isinstance(node.op, ast.UAdd) else -v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(b) > MAX_EXPONENT:
                raise CalcError(f"exponent {b} is too large (at most {MAX_EXPONENT})")
            if abs(a) > 1 and b > 0 and b * math.log10(abs(a)) > MAX_DIGITS:
                raise CalcError(f"the result would have more than {MAX_DIGITS} digits")
            if a == 0 and b < 0:
                raise CalcError("division by zero")
            if a < 0 and not float(b).is_integer():
                raise CalcError("a negative number to a fractional power is not a real number")
        elif isinstance(node.op, ast.Mult) and _digits(a) + _digits(b) > MAX_DIGITS + 1:
            raise CalcError(f"the result would have more than {MAX_DIGITS} digits")
        elif isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
            raise CalcError("division by zero")
        try:
            return _check_size(_BINOPS[type(node.op)](a, b))
        except OverflowError:
            raise CalcError("the result is too large") from None
    what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise CalcError(f"unsupported syntax: {what} (numbers, + - * / // % ** and parentheses only)")


def calculate(expression: str):
    """The value of an arithmetic expression, or CalcError. Accepts × ÷ and full-width digits/brackets too."""
    if not isinstance(expression, str):
        raise CalcError("expression must be a string")
    text = expression.strip().translate(str.maketrans("×÷（）＋－＊／", "*/()+-*/"))
    text = "".join(chr(ord(c) - 0xFEE0) if "０" <= c <= "９" else c for c in text).replace("^", "**")
    if not text:
        raise CalcError("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise CalcError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalcError(f"not an arithmetic expression: {expression!r}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalcError(f"expression has more than {MAX_NODES} parts")
    value = _walk(tree)
    if isinstance(value, float):
        value = int(value) if value.is_integer() and abs(value) < 1e15 else round(value, 10)
    if len(str(value)) > MAX_DIGITS:
        raise CalcError(f"result longer than {MAX_DIGITS} characters")
    return value


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
    if recorded is not None and name in recorded.names:
        return {}  # a corpus tool asked about something no record holds: "not found", as the real tool says
    return {"error": f"unknown tool {name!r}"}
