"""A library of real tools for tool-calling data (scripts/toolcall/synth.py turns it into dialogues).

Every tool runs real code on its arguments: the Python standard library (math, statistics, fractions, decimal,
datetime, calendar, zoneinfo, unicodedata, difflib, textwrap, re, ipaddress, urllib.parse, hashlib, base64, zlib,
html, colorsys, mimetypes, stat, http, heapq, bisect, itertools), OpenCC for Chinese script conversion, and searches
of the bundled dictionary and poems. Tools come in families (numbers.py, text.py, timeplace.py, web.py, lookup.py);
the held-out split is by whole family (HELDOUT_FAMILIES), so no held-out tool, nor a sibling with a guessable
name, is ever trained on.
"""
import datetime
import json

import jsonschema

from scripts.toolcall.library import lookup, numbers, text, timeplace, web
from scripts.toolcall.library.base import Family, Param, Tool

FAMILIES = numbers.FAMILIES + text.FAMILIES + timeplace.FAMILIES + web.FAMILIES + lookup.FAMILIES
TOOLS = {t.name: t for f in FAMILIES for t in f.tools}

# The fixed held-out split: whole families, about a quarter of the tools, chosen so that each kind of value the
# model must copy (numbers, dates/time zones, free text, enums, lists, nested objects) is still trained on in other
# families while the held-out tools' names and purposes are new. Changing this list changes every evaluation
# number: record it in docs/LOG.md when you do.
HELDOUT_FAMILIES = ("geometry", "timezones", "unicode", "network", "url", "color", "poetry")
HELDOUT = tuple(t.name for f in FAMILIES if f.name in HELDOUT_FAMILIES for t in f.tools)
TRAIN = tuple(name for name in TOOLS if name not in HELDOUT)

# Calls a model writes are run live (scripts/evals/tool_call.py's multi-round loop, its interactive mode) only
# inside these bounds, checked before the function runs: the generators stay far inside them, a model may not.
MAX_TEXT, MAX_ITEMS, MAX_INT, MAX_RESULT_CHARS = 1000, 50, 10 ** 12, 2000
LIVE_LIMITS = {  # per-tool bounds where work grows faster than the size of the arguments
    "factorial": lambda a: a["n"] <= 1000,
    "combinations": lambda a: a["n"] <= 1000, "permutations": lambda a: a["n"] <= 1000,
    "list_permutations": lambda a: len(a["items"]) <= 6,
    "weekdays_between": lambda a: abs((datetime.date.fromisoformat(a["end"])
                                       - datetime.date.fromisoformat(a["start"])).days) <= 40000,
}
# Regular expressions written by a model can take exponential time ("(a+)+$"), and Python's re has no timeout.
NOT_LIVE = {"regex_findall", "regex_test", "split_text"}


def _sizes_ok(value) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return abs(value) <= MAX_INT
    if isinstance(value, list):
        return len(value) <= MAX_ITEMS and all(_sizes_ok(v) for v in value)
    if isinstance(value, dict):
        return len(value) <= MAX_ITEMS and all(_sizes_ok(v) for v in value.values())
    return value is None


def call(name: str, arguments):
    """Run a model's call of a library tool: the real result, as the training data's tool turns hold it, or
    {"error": ...} for arguments outside the schema or the live bounds and for anything the function refuses.
    Never raises for bad model output."""
    tool = TOOLS[name]
    if name in NOT_LIVE:
        return {"error": f"{name} is not run on model-written patterns here (a regular expression can take "
                         f"exponential time)"}
    params = tool.schema("en")["function"]["parameters"]
    try:
        jsonschema.validate(arguments, {**params, "additionalProperties": False})
    except jsonschema.ValidationError as e:
        return {"error": f"bad arguments for {name}: {e.message}"}
    if not _sizes_ok(arguments):
        return {"error": f"arguments of {name} are too large (text <= {MAX_TEXT} characters, lists <= {MAX_ITEMS} "
                         f"items, numbers <= {MAX_INT})"}
    try:
        if name in LIVE_LIMITS and not LIVE_LIMITS[name](arguments):
            return {"error": f"arguments of {name} are beyond what this tool computes live"}
        result = tool.run(arguments)
    except (ValueError, ArithmeticError, TypeError, KeyError, LookupError, OSError) as e:
        return {"error": f"{name}: {type(e).__name__}: {e}"}
    if len(json.dumps(result, ensure_ascii=False)) > MAX_RESULT_CHARS:
        return {"error": f"the result of {name} is longer than {MAX_RESULT_CHARS} characters"}
    return result


__all__ = ["FAMILIES", "TOOLS", "HELDOUT", "HELDOUT_FAMILIES", "TRAIN", "Family", "Param", "Tool", "call"]
