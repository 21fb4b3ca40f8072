"""Berkeley Function Calling Leaderboard (BFCL v3) style evaluation: read a folder of BFCL files, ask the model once
per case with the case's functions offered as tools, and score the first reply the way BFCL's AST checker does
(`scripts/eval_tool_call.py --bfcl_dir DIR` is the command; the loop and backends are scripts/evals/tool_call.py's).

The folder (JSON Lines despite the .json name):
    DIR/BFCL_v3_<category>.json                 {"id", "question": [[{"role", "content"}, ...]], "function": [...]}
    DIR/possible_answer/BFCL_v3_<category>.json {"id", "ground_truth": [{"fn": {"param": [accepted values]}}, ...]}
Categories: simple, multiple, parallel, parallel_multiple, irrelevance (no answer file), and the same names with
"live_" in front; relevance (live_relevance) passes when the model calls anything. BFCL v4 file names
(BFCL_v4_simple_python.json, ..., as the bfcl-eval package ships them) are read too. Other BFCL files (java,
javascript, exec_*, multi_turn_*, memory, web_search) need other checkers and are skipped with a note.

The checker follows BFCL's published rules (bfcl/eval_checker/ast_eval/ast_checker.py):
- a case needs exactly as many calls as ground-truth entries (simple: one); parallel ones match in any order;
- per call: the name equals the expected one; every required parameter is present; no parameter outside the
  function's properties or the ground truth; each value has the declared type (an int is accepted where a float is
  declared at the top level, not inside arrays, as in BFCL; a value of the ground truth's own type is compared as
  it is, BFCL's "variable" rule); each value is among the accepted ones; a parameter the model leaves out must list
  "" among its accepted values;
- strings are compared BFCL's way: spaces and , . / - _ * ^ removed, lower case, ' read as " (also inside lists
  and dicts); dicts key by key, lists of dicts item by item in order;
- irrelevance passes when the reply has no parsed call (BFCL counts an undecodable call as no call);
- a reply with a <tool_call> block that does not parse fails every other category (BFCL: failed to decode).
Extra metrics next to BFCL's pass rate (`ast_accuracy`): call detection, JSON validity, tool-name accuracy (called
names equal the expected ones as multisets), argument exact match (the same checker with exact string comparison,
no normalising), irrelevance accuracy and parallel accuracy; `category_mean` is the unweighted mean over
categories, the way BFCL combines them.
"""
import collections
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from model.runtime import UserError

BASE_CATEGORIES = ("simple", "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "relevance")
FILE = re.compile(r"^BFCL_v[34]_(?P<category>[a-z_]+)\.json$")
# BFCL's type names (and the JSON-schema ones a hand-written file may use) -> the Python type of a parsed value
PY_TYPES = {"string": str, "integer": int, "float": float, "number": float, "boolean": bool, "array": list,
            "tuple": list, "dict": dict, "object": dict, "any": str}
# the schema the chat template shows the model: JSON-schema names, which is what tool SFT data is written in
SCHEMA_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}
STRIP = re.compile(r"[ ,./\-_*^]")


@dataclass
class BfclCase:
    id: str
    category: str  # e.g. "simple", "live_parallel"
    messages: list  # [{"role", "content"}]: the single turn of the question
    functions: list  # BFCL function documents as in the file (their types are what the checker uses)
    ground_truth: Optional[list]  # [{name: {param: [accepted values]}}]; None for (ir)relevance

    @property
    def kind(self) -> str:
        """The checker a category takes, chosen by name as BFCL does."""
        for k in ("irrelevance", "relevance", "parallel", "multiple"):
            if k in self.category:
                return k
        return "simple"


# ------------------------------------------------------------------------------------------------------ reading

def _jsonl(path: Path) -> list:
    """(line number, object) of every non-empty line; a broken line names file and line."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); BFCL files hold one JSON "
                            f"object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise UserError(f"{path}:{n}: expected a JSON object with a string 'id'")
        rows.append((n, row))
    return rows


def _check_schema(where: str, name: str, schema: dict) -> None:
    """Every declared type must be one the checker knows, at every depth the checker looks at."""
    t = schema.get("type") if isinstance(schema, dict) else None
    if t not in PY_TYPES:
        raise UserError(f"{where}: parameter {name!r} of type {t!r}; the checker knows {', '.join(PY_TYPES)}")
    if t in ("array", "tuple") and "items" in schema:
        _check_schema(where, f"{name}[]", schema["items"])


def _functions(where: str, row: dict, may_be_empty: bool) -> list:
    fns = row.get("function")
    fns = [fns] if isinstance(fns, dict) else fns  # BFCL v1 files held a single object here
    # live_irrelevance has cases that offer no function at all (the model must simply answer)
    if not isinstance(fns, list) or not (fns or may_be_empty):
        raise UserError(f"{where}: 'function' must be a non-empty list of function documents")
    for f in fns:
        params = f.get("parameters") if isinstance(f, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not isinstance(params, dict):
            raise UserError(f"{where}: each function needs a 'name' string and a 'parameters' object")
        props = params.get("properties", {})
        if not isinstance(props, dict) or not isinstance(params.get("required", []), list):
            raise UserError(f"{where}: function {f['name']!r}: 'properties' must be an object and 'required' a list")
        for p, spec in props.items():
            _check_schema(f"{where}: function {f['name']!r}", p, spec)
    return fns


def _messages(where: str, row: dict) -> list:
    q = row.get("question")
    if isinstance(q, list) and q and all(isinstance(m, dict) for m in q):
        q = [q]  # one turn written without the outer list
    if not isinstance(q, list) or not q or not all(isinstance(t, list) for t in q):
        raise UserError(f"{where}: 'question' must be a list of turns, each a list of {{role, content}} messages")
    if len(q) > 1:
        raise UserError(f"{where}: {len(q)} turns; multi-turn BFCL categories need their own checker, remove the file "
                        f"or keep single-turn cases")
    msgs = q[0]
    if not msgs or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                           for m in msgs):
        raise UserError(f"{where}: each message needs 'role' and 'content' strings")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _ground_truth(where: str, row: dict, functions: list) -> list:
    gt = row.get("ground_truth")
    names = {f["name"] for f in functions}
    ok = isinstance(gt, list) and gt and all(
        isinstance(e, dict) and len(e) == 1 and isinstance(next(iter(e.values())), dict)
        and all(isinstance(v, list) for v in next(iter(e.values())).values()) for e in gt)
    if not ok:
        raise UserError(f"{where}: 'ground_truth' must be a list of "
                        f"{{function name: {{parameter: [accepted values]}}}}")
    for e in gt:
        name = next(iter(e))
        if name not in names:
            raise UserError(f"{where}: the answer calls {name!r}, which is not among the case's functions "
                            f"{sorted(names)}")
    return gt


def category_files(folder: Path) -> list:
    """[(category, path)] of the BFCL files this checker scores, in a stable order; notes for skipped files."""
    found, skipped = [], []
    for path in sorted(folder.glob("BFCL_v[34]_*.json")):
        m = FILE.match(path.name)
        cat = m.group("category") if m else None
        if cat and cat.removeprefix("live_") in BASE_CATEGORIES:
            found.append((cat, path))
        else:
            skipped.append(path.name)
    order = {c: i for i, c in enumerate(BASE_CATEGORIES)}
    found.sort(key=lambda cp: (cp[0].startswith("live_"), order[cp[0].removeprefix("live_")]))
    return found, skipped


def read_bfcl_dir(folder, max_per_category: int = 0, log=print) -> list:
    """Every case of the folder's BFCL files, joined with its possible answer. max_per_category > 0 keeps the first
    N cases of each file (a quick look)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--bfcl_dir {folder}: no such folder; it should hold BFCL_v3_simple.json, ... and "
                        f"possible_answer/BFCL_v3_simple.json, ...")
    files, skipped = category_files(folder)
    if skipped:
        log(f"BFCL: skipped {', '.join(skipped)} (only simple(_python), multiple, parallel, parallel_multiple, "
            f"(ir)relevance and their live_ versions are scored by the AST checker here)")
    if not files:
        raise UserError(f"--bfcl_dir {folder}: no BFCL_v3_<category>.json (or v4) files for the categories "
                        f"{', '.join(BASE_CATEGORIES)}")
    cases = []
    for category, path in files:
        rows = _jsonl(path)
        if max_per_category > 0:
            rows = rows[:max_per_category]
        answers = {}
        if "relevance" not in category:  # irrelevance and relevance have no possible answer file
            answer_path = folder / "possible_answer" / path.name
            if not answer_path.is_file():
                raise UserError(f"{answer_path}: missing; category {category} is scored against it (BFCL ships it "
                                f"as possible_answer/{path.name})")
            answers = {row["id"]: (n, row) for n, row in _jsonl(answer_path)}
        seen = set()
        for n, row in rows:
            where = f"{path}:{n} (id {row['id']})"
            if row["id"] in seen:
                raise UserError(f"{where}: the id occurs twice in the file")
            seen.add(row["id"])
            functions = _functions(where, row, may_be_empty=category.endswith("irrelevance"))
            gt = None
            if answers:
                if row["id"] not in answers:
                    raise UserError(f"{where}: no entry with this id in possible_answer/{path.name}")
                an, arow = answers[row["id"]]
                gt = _ground_truth(f"{folder / 'possible_answer' / path.name}:{an} (id {row['id']})", arow, functions)
            cases.append(BfclCase(row["id"], category, _messages(where, row), functions, gt))
    return cases


def to_tool(function: dict) -> dict:
    """An OpenAI tool for the chat template: BFCL's "dict"/"float"/"tuple"/"any" written as JSON-schema types."""
    def convert(node):
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items()}
            if isinstance(out.get("type"), str):
                out["type"] = SCHEMA_TYPES.get(out["type"], out["type"])
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node
    fn = dict(function)
    fn["parameters"] = convert(function["parameters"])
    return {"type": "function", "function": fn}


# ------------------------------------------------------------------------------------------------------ checking

def normalise(text: str) -> str:
    """BFCL's string standardising: "April 1, 2024" and "april 1 2024" compare equal."""
    return STRIP.sub("", text).lower().replace("'", '"')


def _norm(value, loose: bool):
    if not loose:
        return value
    if isinstance(value, str):
        return normalise(value)
    if isinstance(value, list):
        return [_norm(v, loose) for v in value]
    return value


def _type_name(value) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "float", list: "array", dict: "dict"}.get(
        type(value), type(value).__name__)


def _dict_ok(value: dict, options: list, loose: bool) -> bool:
    """A dict value matches one accepted dict: its keys known, each value accepted, each missing key optional."""
    for option in options:
        if not isinstance(option, dict):
            continue
        if all(k in option and _norm(v, loose) in [_norm(o, loose) for o in option[k]] for k, v in value.items()) \
                and all(k in value or "" in accepted for k, accepted in option.items()):
            return True
    return False


def check_value(param: str, value, spec: dict, options: list, loose: bool = True) -> Optional[str]:
    """None when `value` is acceptable for a parameter declared as `spec` with accepted `options`, else why not."""
    t = spec["type"]
    want = PY_TYPES[t]
    if want is float and type(value) is int:
        value = float(value)
    real = [o for o in options if o != ""]
    rejected = f"parameter {param!r}: {value!r} is not among the accepted {options!r}"
    # BFCL's "variable" rule: when the ground truth is written in another type than the declared one ("dontcare"
    # where an integer is declared), a value of the ground truth's type is compared as it is, not normalised
    if real and type(real[0]) is not want and type(value) is type(real[0]):
        return None if value in real else rejected
    if type(value) is not want:  # type(), not isinstance: True is not an integer here, as in BFCL
        return f"parameter {param!r}: expected {t}, got {_type_name(value)} {value!r}"
    items = spec.get("items") if t in ("array", "tuple") else None
    if items is not None:
        item_type = PY_TYPES[items["type"]]
        # each item has the declared type or the type the accepted list is written in (BFCL's rule one level down;
        # an accepted "" skips the check there too)
        if not any(not isinstance(o, list) or all(type(v) is item_type or (o and type(v) is type(o[0]))
                                                  for v in value) for o in options):
            return f"parameter {param!r}: expected {t} of {items['type']}, got {value!r}"
        if item_type is dict:  # a list of dicts: item by item, in order, against an accepted list
            ok = any(isinstance(o, list) and len(o) == len(value)
                     and all(isinstance(v, dict) and _dict_ok(v, [d], loose) for v, d in zip(value, o)) for o in real)
            return None if ok else rejected
    if want is dict:
        return None if _dict_ok(value, real, loose) else rejected
    return None if _norm(value, loose) in [_norm(o, loose) for o in real] else rejected


def check_call(function: dict, call: dict, expected: dict, loose: bool = True) -> Optional[str]:
    """None when one parsed call {"name", "arguments"} matches one ground-truth entry {name: {param: [...]}}."""
    name, accepted = next(iter(expected.items()))
    if call["name"] != name:
        return f"function name {call['name']!r}, expected {name!r}"
    args = call["arguments"]
    props = function["parameters"].get("properties", {})
    for p in function["parameters"].get("required", []):
        if p not in args:
            return f"missing required parameter {p!r}"
    for p, value in args.items():
        if p not in props or p not in accepted:
            return f"unexpected parameter {p!r}"
        why = check_value(p, value, props[p], accepted[p], loose)
        if why:
            return why
    for p, options in accepted.items():
        if p not in args and "" not in options:
            return f"parameter {p!r} left out, but the answer has no default for it"
    return None


def check_case(case: BfclCase, calls: list, invalid_blocks: int, loose: bool = True) -> Optional[str]:
    """None when the reply passes the case's category check, else the reason (BFCL's rules, module docstring)."""
    if case.kind == "irrelevance":
        return f"called {', '.join(c['name'] for c in calls)} although no offered function fits" if calls else None
    if case.kind == "relevance":
        return None if calls else "no call, although an offered function fits"
    if invalid_blocks:
        return f"{invalid_blocks} <tool_call> block(s) that do not parse as {{\"name\", \"arguments\"}}"
    gt = case.ground_truth
    if len(calls) != len(gt):
        return f"{len(calls)} call(s), expected {len(gt)}"
    by_name = {f["name"]: f for f in case.functions}
    if case.kind != "parallel":
        # simple: BFCL checks against the case's only function; multiple: against the expected one's document
        fn = case.functions[0] if case.kind == "simple" else by_name[next(iter(gt[0]))]
        return check_call(fn, calls[0], gt[0], loose)
    used = set()
    for i, entry in enumerate(gt):  # every expected call takes the first unused reply call that matches it
        fn = by_name[next(iter(entry))]
        match = next((j for j, c in enumerate(calls) if j not in used and check_call(fn, c, entry, loose) is None),
                     None)
        if match is None:
            reasons = "; ".join(check_call(fn, c, entry, loose) for j, c in enumerate(calls) if j not in used)
            return f"no reply call matches expected call {i} ({next(iter(entry))}): {reasons}"
        used.add(match)
    return None


# ------------------------------------------------------------------------------------------------------- scoring

def score(case: BfclCase, calls: list, invalid_blocks: int) -> dict:
    """Per-case flags (None = the metric does not apply): BFCL's verdict and the extra metrics."""
    why = check_case(case, calls, invalid_blocks)
    s = {"ast_pass": why is None, "reason": why, "detected": None, "json_valid": None, "name_correct": None,
         "exact": None, "no_call": None}
    if case.kind == "irrelevance":
        s["no_call"] = not calls
    elif case.kind != "relevance":
        detected = bool(calls) or invalid_blocks > 0
        s["detected"] = detected
        s["json_valid"] = detected and invalid_blocks == 0
        s["name_correct"] = sorted(c["name"] for c in calls) == sorted(next(iter(e)) for e in case.ground_truth)
        s["exact"] = check_case(case, calls, invalid_blocks, loose=False) is None
    return s


def _mean(flags) -> Optional[float]:
    flags = [f for f in flags if f is not None]
    return round(sum(flags) / len(flags), 4) if flags else None


METRICS = ["ast_accuracy", "call_detection", "json_validity", "tool_name_accuracy", "argument_exact_match",
           "irrelevance_accuracy", "parallel_accuracy"]


def aggregate(pairs: list) -> dict:
    """Summary of [(case, score)]."""
    return {
        "cases": len(pairs),
        "ast_accuracy": _mean(s["ast_pass"] for _, s in pairs),
        "call_detection": _mean(s["detected"] for _, s in pairs),
        "json_validity": _mean(s["json_valid"] for _, s in pairs),
        "tool_name_accuracy": _mean(s["name_correct"] for _, s in pairs),
        "argument_exact_match": _mean(s["exact"] for _, s in pairs),
        "irrelevance_accuracy": _mean(s["no_call"] for _, s in pairs),
        "parallel_accuracy": _mean(s["ast_pass"] for c, s in pairs if c.kind == "parallel"),
    }


def summarise(cases: list, scores: list) -> dict:
    """{category: summary, ..., "all": summary + category_mean}."""
    by = collections.defaultdict(list)
    for c, s in zip(cases, scores):
        by[c.category].append((c, s))
    out = {cat: aggregate(pairs) for cat, pairs in by.items()}
    out["all"] = aggregate(list(zip(cases, scores)))
    per_cat = [out[cat]["ast_accuracy"] for cat in by]
    out["all"]["category_mean"] = round(sum(per_cat) / len(per_cat), 4) if per_cat else None
    return out


def table(summary: dict) -> str:
    """Markdown: metrics as rows, categories (then all) as columns; '-' where a metric does not apply."""
    cols = [c for c in summary if c != "all"] + ["all"]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols),
             "| cases | " + " | ".join(str(summary[c]["cases"]) for c in cols) + " |"]
    for m in METRICS + ["category_mean"]:
        cells = ["-" if summary[c].get(m) is None else f"{summary[c][m]:.3f}" for c in cols]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(backend, cases: list) -> tuple:
    """One batched round of replies (no tool results: BFCL scores the first reply); (records, summary)."""
    replies = backend.replies([(c.messages, [to_tool(f) for f in c.functions]) for c in cases])
    records, scores = [], []
    for case, reply in zip(cases, replies):
        s = score(case, reply.calls, reply.invalid_blocks)
        scores.append(s)
        record = {"id": case.id, "category": case.category,
                  "question": " ".join(m["content"] for m in case.messages if m["role"] == "user"),
                  "functions": [f["name"] for f in case.functions], "ground_truth": case.ground_truth,
                  "content": reply.content, "calls": reply.calls, "invalid_blocks": reply.invalid_blocks,
                  "seconds": round(reply.seconds, 4), "score": s}
        if reply.error:
            record["error"] = reply.error
        records.append(record)
    return records, summarise(cases, scores)
