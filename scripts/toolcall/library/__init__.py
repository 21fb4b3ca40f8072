"""A library of real tools for tool-calling data (scripts/toolcall/synth.py turns it into dialogues).

Every tool runs real code on its arguments: the Python standard library (math, statistics, fractions, decimal,
datetime, calendar, zoneinfo, unicodedata, difflib, textwrap, re, ipaddress, urllib.parse, hashlib, base64, zlib,
html, colorsys, mimetypes, stat, http, heapq, bisect, itertools), OpenCC for Chinese script conversion, and searches
of the bundled dictionary and poems. Tools come in families (numbers.py, text.py, timeplace.py, web.py, lookup.py);
the held-out split is by whole family (HELDOUT_FAMILIES), so no held-out tool, nor a sibling with a guessable
name, is ever trained on.
"""
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

__all__ = ["FAMILIES", "TOOLS", "HELDOUT", "HELDOUT_FAMILIES", "TRAIN", "Family", "Param", "Tool"]
