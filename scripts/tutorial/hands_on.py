"""Data for the app's hands-on tabs, exported by Python so the browser code is checked against the real thing:

- flag-bounds.json: the trainer's limits (trainer_utils.MINIMUM_FLAG_VALUES / MAXIMUM_FLAG_VALUES), shown at
  each field of the training form; the manager refuses a value outside them.
- tool-parity.json: calls to scripts/toolcall/tool_mocks.py's mock tools and what they return; tools.test.ts runs the
  browser copies (src/hands_on/tools.ts) on the same calls and expects the same results.
"""
import datetime

from scripts.toolcall import tool_mocks
from trainer.trainer_utils import MAXIMUM_FLAG_VALUES, MINIMUM_FLAG_VALUES

# fixed instant for get_time, so the export does not change with the clock: 2026-01-01 00:00 UTC (a Thursday)
PARITY_NOW = datetime.datetime(2026, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)

# Calls whose results the browser must reproduce: cities with Chinese, mixed case and spaces (the hash is of the
# stripped lower-cased name), both units, bad arguments, and each tool's refusals.
PARITY_CALLS = [
    ("get_weather", {"city": "Beijing"}),
    ("get_weather", {"city": "北京"}),
    ("get_weather", {"city": "  New York  "}),
    ("get_weather", {"city": "上海", "unit": "fahrenheit"}),
    ("get_weather", {"city": "Tokyo", "unit": "kelvin"}),
    ("get_weather", {"city": ""}),
    ("calculator", {"expression": "(3+4)*5"}),
    ("calculator", {"expression": "7//2"}),
    ("calculator", {"expression": "2**-1"}),
    ("calculator", {"expression": "-2**2"}),
    ("calculator", {"expression": "10/4"}),
    ("search", {"query": "LoRA", "top_k": 2}),
    ("search", {"query": "分词器 词表"}),
    ("search", {"query": "x", "top_k": 11}),
    ("get_time", {"timezone": "Asia/Shanghai"}),
    ("get_time", {"timezone": "America/New_York"}),
    ("nope", {}),
]


def flag_bounds() -> dict:
    return {"min": dict(MINIMUM_FLAG_VALUES), "max": dict(MAXIMUM_FLAG_VALUES)}


def tool_parity() -> dict:
    cases = []
    for name, args in PARITY_CALLS:
        if name == "get_time":
            result = tool_mocks.get_time(**args, now=PARITY_NOW)
        else:
            result = tool_mocks.run_tool(name, args)
        cases.append({"name": name, "arguments": args, "result": result})
    return {"now": PARITY_NOW.isoformat(), "cases": cases}
