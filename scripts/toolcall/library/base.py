"""The pieces every tool of the library is made of: typed parameters with value generators, the Tool record (real
function + bilingual schema + request and answer templates) and the Family that collects them.

A template is a str.format string. Request templates name parameters as {x}; a template that names an optional
parameter puts it into the call, one that does not leaves it out (the tool then uses its default). Answer
templates see the arguments as {x} and the tool's result as {r} (scalar results) or {r[key]} (dict results);
lists are shown joined ("、" in Chinese, ", " in English) so the answer reads like prose.
"""
import math
import random
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

@dataclass(frozen=True)
class Param:
    """One argument: JSON Schema type, zh/en description, a generator of real values, optional enum / default."""
    type: str  # integer | number | string | boolean | array | object
    zh: str
    en: str
    gen: Callable[[random.Random], Any]
    enum: Optional[Tuple] = None
    items: Optional[str] = None  # item type of an array
    default: Any = None
    required: bool = True

    def schema(self, lang: str, brief: bool = False) -> dict:
        out = {"type": self.type}
        if not brief:
            out["description"] = self.zh if lang == "zh" else self.en
        if self.enum:
            out["enum"] = list(self.enum)
        if self.items:
            out["items"] = {"type": self.items}
        if not self.required and self.default is not None:
            out["default"] = self.default
        return out


def I(lo: int, hi: int, zh: str, en: str) -> Param:  # noqa: E743 - short names keep the tool tables readable
    return Param("integer", zh, en, lambda r: r.randint(lo, hi))


def F(lo: float, hi: float, zh: str, en: str, nd: int = 1) -> Param:
    return Param("number", zh, en, lambda r: round(r.uniform(lo, hi), nd))


def S(pool, zh: str, en: str) -> Param:
    """A string drawn from a list, or made by a function of the rng."""
    return Param("string", zh, en, pool if callable(pool) else (lambda r: r.choice(pool)))


def E(choices: Sequence[str], zh: str, en: str) -> Param:
    return Param("string", zh, en, lambda r: r.choice(list(choices)), enum=tuple(choices))


def L(item: Callable[[random.Random], Any], lo: int, hi: int, zh: str, en: str, items: str = "number") -> Param:
    return Param("array", zh, en, lambda r: [item(r) for _ in range(r.randint(lo, hi))], items=items)


def opt(p: Param, default) -> Param:
    """The same parameter, optional with a default (the schema shows the default)."""
    return Param(p.type, p.zh, p.en, p.gen, p.enum, p.items, default, False)


def placeholders(template: str) -> set:
    """The top-level names a format string uses: "{r[x]} {a}" -> {"r", "a"}."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            names.add(name.split("[")[0].split(".")[0])
    return names


def tidy(value):
    """Results as the tools return them: floats rounded to 4 decimals (6 significant digits below 0.001), whole
    floats as ints. A full repr such as 1.4142135623730951 costs ~12 tokens with the project tokenizer and no
    answer needs it; 4 decimals keep cents and the digits a person reads."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return int(value)
        return round(value, 4) if abs(value) >= 1e-3 else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {str(k): tidy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(v) for v in value]
    raise TypeError(f"a tool returned {type(value).__name__}, which is not JSON")


def show(value, lang: str) -> str:
    """A value as a request or answer shows it."""
    if isinstance(value, bool):
        return ("是" if value else "否") if lang == "zh" else ("yes" if value else "no")
    if isinstance(value, (list, tuple)):
        inner = [f"[{show(v, lang)}]" if isinstance(v, (list, tuple, dict)) else show(v, lang) for v in value]
        return ("、" if lang == "zh" else ", ").join(inner)
    if isinstance(value, dict):
        return ("，" if lang == "zh" else ", ").join(f"{k}={show(v, lang)}" for k, v in value.items())
    return str(value)


class Shown(dict):
    """A result dict whose values format as shown text ({r[key]} in an answer template); {r} shows it whole."""

    def __init__(self, data: dict, lang: str):
        super().__init__({k: show(v, lang) for k, v in data.items()})
        self.text = show(data, lang)

    def __format__(self, spec: str) -> str:
        return format(self.text, spec)


@dataclass
class Tool:
    name: str
    family: str
    fn: Callable[..., Any]
    zh: str  # what the tool does, from the function's documentation
    en: str
    params: Dict[str, Param]
    ask_zh: Sequence[str]
    ask_en: Sequence[str]
    say_zh: Any  # a format string, or a function (arguments, result) -> text
    say_en: Any
    check: Optional[Callable[[dict], bool]] = None  # arguments the real function accepts (else resample)
    extras: dict = field(default_factory=dict)

    def schema(self, lang: str, brief: bool = False) -> dict:
        """The OpenAI tool schema, descriptions in `lang`; `brief` leaves out the parameters' descriptions (as
        many users' tools do; it also halves the ~130 tokens a schema costs with the project tokenizer)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.zh if lang == "zh" else self.en,
            "parameters": {"type": "object",
                           "properties": {k: p.schema(lang, brief) for k, p in self.params.items()},
                           "required": [k for k, p in self.params.items() if p.required]}}}

    def run(self, arguments: dict):
        """The real result of a call (defaults filled by the function itself)."""
        return tidy(self.fn(**arguments))

    def sample(self, rng: random.Random, lang: str, tries: int = 20):
        """(request, arguments, result, answer) with real values; the request carries every argument it passes."""
        templates = self.ask_zh if lang == "zh" else self.ask_en
        for _ in range(tries):
            template = rng.choice(templates)
            named = placeholders(template)
            values = {k: p.gen(rng) for k, p in self.params.items()}
            args = {k: v for k, v in values.items() if k in named}
            if self.check and not self.check(args):
                continue
            try:
                result = self.run(args)
            except (ValueError, ArithmeticError, OverflowError, KeyError, LookupError):
                continue  # arguments this function refuses (e.g. stdev of one number): draw again
            if result in ({}, [], ""):
                continue  # the lookup found nothing for this draw: the answer templates need a result
            text = template.format(**{k: show(v, lang) for k, v in args.items()})
            return text, args, result, self.answer(lang, args, result)
        raise ValueError(f"{self.name}: no valid arguments in {tries} draws")

    def answer(self, lang: str, args: dict, result) -> str:
        template = self.say_zh if lang == "zh" else self.say_en
        if callable(template):  # results too nested for a format string (lists of poems)
            return template(args, result)
        r = Shown(result, lang) if isinstance(result, dict) else show(result, lang)
        shown = {k: show(self.params[k].default if k not in args else args[k], lang) for k in self.params}
        return template.format(r=r, **shown)


class Family:
    """The tools of one family (the unit of the held-out split)."""

    def __init__(self, name: str):
        self.name, self.tools = name, []

    def add(self, name, fn, zh, en, params, ask_zh, ask_en, say_zh, say_en, check=None) -> Tool:
        t = Tool(name, self.name, fn, zh, en, params, tuple(ask_zh), tuple(ask_en), say_zh, say_en, check)
        self.tools.append(t)
        return t
