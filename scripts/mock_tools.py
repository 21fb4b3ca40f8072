"""Safe mock tools for tool-calling tests (weather, calculator, search, time) and the auto-test that scores a model.

Fixed data from scripts/mock_tools.json: no network, no file access, and the calculator parses arithmetic itself
(an AST walk over numbers and + - * / ** % only), so a model's tool call can never run code. The training
manager serves these tools over MCP and as JSON endpoints; the web app's tool playground simulates the same tools
in the browser from the same JSON and scores the same cases with the same rules (src/hands_on/tools.ts).

Scores per case (`score_case`): did the model call the expected tool (or no tool when none is expected), were its
arguments valid JSON, do they match the expected ones, does the final answer contain the expected text.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import ast
import json
import math
import operator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Optional

DATA_FILE = Path(__file__).resolve().with_name("mock_tools.json")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Mod: operator.mod, ast.Pow: operator.pow}
MAX_EXPRESSION_CHARS = 200
MAX_MAGNITUDE = 300  # |values| stay below 1e300: bigger integers would take seconds to multiply
MAX_EXPONENT = 64  # 10 ** 10 ** 10 would hang the process; a bounded exponent keeps every call instant


@lru_cache(maxsize=1)
def data() -> dict:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def tool_schemas() -> list:
    """The tools in OpenAI `tools=[...]` format."""
    return data()["tools"]


def calculate(expression: str) -> float:
    """Arithmetic only: numbers, + - * / ** %, unary +/-, parentheses. ValueError for anything else."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("expression must be a non-empty string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            v = walk(node.operand)
            return v if isinstance(node.op, ast.UAdd) else -v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT
                                                 or (abs(left) > 1 and math.log10(abs(left)) * right > MAX_MAGNITUDE)):
                raise ValueError(f"power {left} ** {right} too large")
            if isinstance(node.op, (ast.Div, ast.Mod)) and right == 0:
                raise ValueError("division by zero")
            value = _BINARY[type(node.op)](left, right)
            if isinstance(value, complex) or abs(value) > 10.0 ** MAX_MAGNITUDE:
                raise ValueError(f"result out of range: {expression!r}")
            return value
        raise ValueError(f"only numbers and + - * / ** % ( ) are allowed: {expression!r}")

    value = walk(tree)
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError(f"result is not a finite real number: {expression!r}")
    return value


def _city(name: str) -> str:
    name = str(name).strip().removesuffix("市")
    return data()["city_aliases"].get(name.lower(), name)


def call_tool(name: str, arguments: dict, now: Optional[datetime] = None) -> dict:
    """Run one mock tool. Unknown tools and bad arguments come back as {"error": ...} (what a model should see)."""
    if not isinstance(arguments, dict):
        return {"error": "arguments must be a JSON object"}
    try:
        if name == "get_weather":
            city = _city(arguments.get("city", ""))
            hit = data()["weather"].get(city)
            return hit if hit else {"error": f"no weather data for {city!r}", "known": sorted(data()["weather"])}
        if name == "calculator":
            value = calculate(arguments.get("expression", ""))
            return {"expression": arguments["expression"], "result": int(value) if float(value).is_integer() else value}
        if name == "search":
            q = str(arguments.get("query", "")).lower()
            hits = [{"title": d["title"], "snippet": d["snippet"]} for d in data()["search"]
                    if any(k in q or q in k for k in d["keywords"]) or d["title"].lower() in q]
            return {"query": arguments.get("query", ""), "results": hits[:3]}
        if name == "get_time":
            tz = str(arguments.get("timezone", ""))
            offsets = {k.lower(): (k, v) for k, v in data()["timezones"].items()}
            if tz.lower() not in offsets:
                return {"error": f"unknown time zone {tz!r}", "known": sorted(data()["timezones"])}
            zone, minutes = offsets[tz.lower()]
            t = (now or datetime.now(timezone.utc)).astimezone(timezone(timedelta(minutes=minutes)))
            return {"timezone": zone, "time": t.strftime("%Y-%m-%d %H:%M"), "utc_offset_minutes": minutes}
    except ValueError as e:
        return {"error": str(e)}
    return {"error": f"unknown tool {name!r}", "known": [t["function"]["name"] for t in tool_schemas()]}


def _norm(v) -> str:
    return "".join(str(v).split()).lower()


def args_match(tool: str, expected: dict, actual: dict) -> bool:
    """Expected arguments, compared the way a person would: calculator by value, city by alias, text by containment."""
    if not isinstance(actual, dict):
        return False
    for key, want in expected.items():
        if key not in actual:
            return False
        got = actual[key]
        if tool == "calculator":
            try:
                if not math.isclose(calculate(str(got)), calculate(str(want))):
                    return False
            except ValueError:
                return False
        elif tool == "get_weather":
            if _city(got) != _city(want):
                return False
        elif not (_norm(want) in _norm(got) or (_norm(got) and _norm(got) in _norm(want))):
            return False
    return True


def score_case(case: dict, calls: list, answer: str) -> dict:
    """calls: [{"name": str, "arguments": dict or the raw string the model produced}]; answer: final text."""
    expect = case.get("expect_tool")
    parsed = [c for c in calls if isinstance(c.get("arguments"), dict)]
    first = calls[0] if calls else None
    if expect is None:
        tool_ok = not calls
        args_ok = tool_ok
    else:
        tool_ok = first is not None and first.get("name") == expect
        args_ok = tool_ok and args_match(expect, case.get("expect_args", {}), first.get("arguments"))
    answer_ok = all(_norm(s) in _norm(answer or "") for s in case.get("answer_contains", []))
    return {"id": case["id"], "tool_ok": tool_ok, "args_ok": args_ok,
            "json_ok": len(parsed) == len(calls), "answer_ok": answer_ok, "calls": len(calls)}


def summarize(scores: list) -> dict:
    """Fractions over the cases: tool choice (incl. correctly calling none), arguments, valid JSON, answers."""
    n = max(1, len(scores))
    return {"cases": len(scores),
            "tool_accuracy": sum(s["tool_ok"] for s in scores) / n,
            "args_accuracy": sum(s["args_ok"] for s in scores) / n,
            "json_valid_rate": sum(s["json_ok"] for s in scores) / n,
            "answer_accuracy": sum(s["answer_ok"] for s in scores) / n}


def cases() -> list:
    return data()["cases"]
