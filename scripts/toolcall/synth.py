"""Tool-calling dialogues generated from the real tool library (scripts/toolcall/library): the `local` source of
scripts/data_prepare_toolcall.py.

Every call in a row was made by running the tool: the arguments come from the tool's generators, the request
text carries them, the tool turn holds what the function returned and the final answer is built from that
result. Five kinds of rows (KIND_MIX gives their shares):

    single       one tool offered, the user asks for it: the assistant's call (the row ends there)
    multiple     tools of different families offered, exactly one fits: its call. 3-5 are aimed for, as many
                 as --max_length leaves room for, at least 2 (a schema costs 90-270 tokens with the project
                 tokenizer and the template's tool preamble ~100: at 512, 5 of 6 rows offer 2, the rest 3)
    parallel     two or three requests in one message, all calls in one assistant turn: the same tool with other
                 arguments (then every result and one answer that uses them all), or two different tools (the
                 calls only: two schemas with results and answers rarely fit in 512 tokens)
    irrelevance  tools offered, none fits: a real answer of the bundled SFT/identity sets, or (for a request
                 that needs a tool not offered) a plain reply saying that no offered tool does it; no call
    multi_round  call -> real result -> answer, and in 40% a second request in the same dialogue

Tool schemas are in Chinese or English (30% not the request's language) and 30% leave out the parameters'
descriptions, as users' tools do both. The held-out tools (library.HELDOUT, whole families) appear only in the
held-out file; the training file is built from library.TRAIN alone. The held-out set is written twice: as SFT
rows (the layout scripts/eval_tool_call.py --data_path reads, one "kind" key added per row) and in the BFCL v3 layout
(write_bfcl: BFCL_v3_<category>.json + possible_answer/), categories simple, multiple, parallel,
parallel_multiple and irrelevance (multi_round rows have no BFCL category and are left out of that folder).
"""
import collections
import json
import random
import sys
import time
from pathlib import Path

from model.checkpoint import atomic_write_text, load_tokenizer
from model.runtime import UserError, repo_path
from scripts.toolcall import library
from scripts.toolcall.data import Malformed, build_record, count_tokens
from scripts.toolcall.library import pools

KIND_MIX = {"single": 0.25, "multiple": 0.2, "parallel": 0.15, "irrelevance": 0.15, "multi_round": 0.25}
# Why these shares: a call is learnt from single + multiple + parallel + multi_round (85%); irrelevance at 15%
# keeps "no call" a real option without making the model shy (the target is >= 0.8 on both).
SYSTEMS = {"zh": "你可以调用工具：有合适的工具就调用，并根据工具结果回答；没有合适的就直接回答。",
           "en": "You can call tools. Use a fitting tool and answer from its result; if none fits, answer directly.",
           # the chat template's own default, which a client that sends tools but no system message gets
           "default": "You are a helpful assistant"}
JOIN = {"zh": "另外，", "en": " Also, "}
TRIES = 8  # draws per row before it is left out ("gave_up"): at 512 tokens ~1/3 of draws are too long
BFCL_TYPES = {"object": "dict", "number": "float"}


def _lang(rng) -> str:
    return "zh" if rng.random() < 0.5 else "en"


def _ends(text: str) -> str:
    return text if text[-1:] in "。？！?.!；" else text + ("。" if not text.isascii() else ".")


def _call_turns(calls, results, answer):
    turns = [{"role": "assistant", "content": "", "calls": calls}]
    turns += [{"role": "tool", "content": json.dumps(r, ensure_ascii=False)} for r in results]
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return turns


class Spec:
    """A dialogue before its tools are chosen: the turns, the tools it calls, how many other tools to offer (from
    families other than `avoid`, so exactly the intended tool fits)."""

    def __init__(self, lang, turns, called, extra=(0, 0), avoid=(), least=None):
        self.lang, self.turns, self.called, self.extra = lang, turns, called, extra
        self.least = extra[0] if least is None else least  # fewer extra tools than this: the row does not fit
        self.avoid = set(avoid) | {t.family for t in called}


def spec_single(rng, pool, _requests):
    tool, lang = rng.choice(pool), _lang(rng)
    q, args, _, _ = tool.sample(rng, lang)
    return Spec(lang, [{"role": "user", "content": q}, {"role": "assistant", "content": "",
                                                        "calls": [{"name": tool.name, "arguments": args}]}], [tool])


def spec_multiple(rng, pool, requests):
    spec = spec_single(rng, pool, requests)
    # aim for 3-5 offered tools; accept 2 when the budget has no room for a third (BFCL's "multiple" has 2-4)
    spec.extra, spec.least = (2, 4), 1
    return spec


def spec_parallel(rng, pool, _requests):
    lang, same = _lang(rng), rng.random() < 0.5
    if same:  # the same tool with other arguments: calls, every result, one answer that uses them all
        tools = [rng.choice(pool)] * (2 if rng.random() < 0.75 else 3)
    else:  # two different tools: the calls only (two schemas plus results and answers rarely fit in 512 tokens)
        tools = [pool[i] for i in rng.sample(range(len(pool)), 2)]
    draws = [t.sample(rng, lang) for t in tools]
    if len({json.dumps([t.name, d[1]], sort_keys=True) for t, d in zip(tools, draws)}) < len(tools):
        raise Malformed("duplicate", "two parallel calls came out identical")
    question = JOIN[lang].join(_ends(d[0]) for d in draws)
    calls = [{"name": t.name, "arguments": d[1]} for t, d in zip(tools, draws)]
    answer = "\n".join(f"{i}. {d[3]}" for i, d in enumerate(draws, 1))
    turns = [{"role": "user", "content": question}] + (_call_turns(calls, [d[2] for d in draws], answer) if same
                                                       else _call_turns(calls, [], None))
    return Spec(lang, turns, list({t.name: t for t in tools}.values()), (0, 1) if same else (0, 0))


def refusal(lang: str, offered: list, wanted) -> str:
    names = ("、" if lang == "zh" else ", ").join(t.name for t in offered)
    if lang == "zh":
        return f"我能用的工具（{names}）都做不了这件事（它需要：{wanted.zh}），所以没法用工具回答。你可以提供相应的工具。"
    need = wanted.en[0].lower() + wanted.en[1:]
    return f"None of my tools ({names}) can do this (it needs: {need}), so I cannot answer it with a tool call."


def spec_irrelevance(rng, pool, requests):
    """Tools offered that do not fit: a real SFT/identity answer, or a refusal for a request of another tool."""
    if rng.random() < 0.5:
        q, a = rng.choice(pools.no_call_pairs())
        return Spec("en" if q.isascii() else "zh", [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}], [], (1, 3))
    wanted, lang = rng.choice(requests), _lang(rng)
    q, _, _, _ = wanted.sample(rng, lang)
    # the refusal names the offered tools: filled in by assemble() once they are chosen
    return Spec(lang, [{"role": "user", "content": q}, {"role": "assistant", "content": wanted}], [], (1, 3),
                avoid={wanted.family})


def spec_multi_round(rng, pool, _requests):
    lang = _lang(rng)
    tools = [rng.choice(pool)] + ([rng.choice(pool)] if rng.random() < 0.4 else [])
    turns = []
    for t in tools:
        q, args, result, answer = t.sample(rng, lang)
        turns += [{"role": "user", "content": q}] + _call_turns([{"name": t.name, "arguments": args}], [result], answer)
    return Spec(lang, turns, list({t.name: t for t in tools}.values()), (0, 1))


SPECS = {"single": spec_single, "multiple": spec_multiple, "parallel": spec_parallel,
         "irrelevance": spec_irrelevance, "multi_round": spec_multi_round}


class Assembler:
    """Turns a Spec into an SFT row under --max_length: schemas in a language drawn per row (30% not the
    request's), 30% of them without parameter descriptions, and as many extra tools as the token budget allows
    (a schema costs 90-270 tokens with the project tokenizer, the template's tool preamble ~100)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length, self.costs = tokenizer, max_length, {}

    def cost(self, schema: dict) -> int:
        key = json.dumps(schema, ensure_ascii=False)
        if key not in self.costs:
            self.costs[key] = len(self.tokenizer(json.dumps(schema["function"],
                                                            ensure_ascii=False) + "\n")["input_ids"])
        return self.costs[key]

    def row(self, rng, spec: Spec, pool: list) -> tuple:
        sl = spec.lang if rng.random() < 0.7 else ("en" if spec.lang == "zh" else "zh")
        brief = rng.random() < 0.3
        system = SYSTEMS[spec.lang] if rng.random() < 0.5 else SYSTEMS["default"]
        offered = list(spec.called)
        schemas = {t.name: t.schema(sl, brief) for t in offered}
        fams = collections.defaultdict(list)
        for t in pool:
            if t.family not in spec.avoid:
                fams[t.family].append(t)
        want = rng.randint(*spec.extra)
        base = self.count(system, [schemas[t.name] for t in offered], self.turns(spec, offered))
        budget = self.max_length - base
        if not spec.called:  # the base had no tools: the template's tool preamble (~100 tokens) is still to come,
            budget -= 110 + 30  # and a refusal grows by the names it lists
        for fam in rng.sample(sorted(fams), len(fams)):
            if want == 0:
                break
            t = rng.choice(fams[fam])
            schema = t.schema(sl, brief or rng.random() < 0.8)  # extra tools mostly brief: more of them fit
            if self.cost(schema) <= budget:
                offered.append(t)
                schemas[t.name] = schema
                budget -= self.cost(schema)
                want -= 1
        if len(offered) - len(spec.called) < spec.least:
            raise Malformed("too_long", f"no room for {spec.least} more tools under --max_length")
        rng.shuffle(offered)
        turns = self.turns(spec, offered)
        row = build_record(system, [schemas[t.name] for t in offered], turns)
        n = count_tokens(row, self.tokenizer)
        if n > self.max_length:
            raise Malformed("too_long", f"{n} tokens > --max_length {self.max_length}")
        return row, offered, n

    @staticmethod
    def turns(spec, offered):
        out = []
        for t in spec.turns:
            if t["role"] == "assistant" and isinstance(t["content"], library.Tool):  # a refusal names the offered
                t = {"role": "assistant", "content": refusal(spec.lang, offered, t["content"])}
            out.append(t)
        return out

    def count(self, system, schemas, turns) -> int:
        return count_tokens(build_record(system, schemas, turns), self.tokenizer)


def _calls_of(row) -> list:
    """[{"name", "arguments"}] of every assistant call of a row, in order."""
    out = []
    for m in row["conversations"]:
        if m["role"] == "assistant":
            for block in m["content"].split("<tool_call>\n")[1:]:
                out.append(json.loads(block.split("\n</tool_call>")[0]))
    return out


def generate(n: int, pool: list, requests: list, rng: random.Random, assembler: Assembler, stats: dict):
    """n rows in the KIND_MIX shares (a draw that does not fit is replaced, up to TRIES), each with its kind."""
    kinds = list(KIND_MIX)
    quota = {k: round(n * KIND_MIX[k]) for k in kinds}
    quota[kinds[0]] += n - sum(quota.values())
    order = [k for k in kinds for _ in range(quota[k])]
    rng.shuffle(order)
    rows, seen = [], set()
    for kind in order:
        for _attempt in range(TRIES):
            try:
                spec = SPECS[kind](rng, pool, requests)
                row, offered, tokens = assembler.row(rng, spec, pool)
            except Malformed as e:
                stats["dropped"][e.reason] += 1
                continue
            key = json.dumps(row, ensure_ascii=False, sort_keys=True)
            if key in seen:
                stats["dropped"]["duplicate"] += 1
                continue
            seen.add(key)
            row["kind"] = kind
            stats["tokens"].append(tokens)
            stats["offered"][kind].append(len(offered))
            rows.append(row)
            break
        else:
            stats["dropped"]["gave_up"] += 1
    return rows


def percentiles(values: list) -> dict:
    if not values:
        return {}
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"min": v[0], "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": v[-1],
            "mean": round(sum(v) / len(v), 1)}


# ------------------------------------------------------------------------------------------------- BFCL layout

def bfcl_schema(schema: dict) -> dict:
    """An OpenAI tool schema in BFCL's spelling: "dict" for objects, "float" for numbers (nested too)."""
    def convert(node):
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items()}
            if isinstance(out.get("type"), str):
                out["type"] = BFCL_TYPES.get(out["type"], out["type"])
            return out
        if isinstance(node, list):
            return [convert(x) for x in node]
        return node
    fn = schema["function"]
    return {"name": fn["name"], "description": fn["description"], "parameters": convert(fn["parameters"])}


def ground_truth(call: dict) -> dict:
    """{name: {param: [accepted values]}}: the value given, plus "" (may be omitted) and the default for an
    optional parameter the request did not name or named with its default value."""
    tool = library.TOOLS[call["name"]]
    accepted = {}
    for name, p in tool.params.items():
        if name in call["arguments"]:
            value = call["arguments"][name]
            accepted[name] = [value] + (["" ] if not p.required and value == p.default else [])
        elif not p.required:
            accepted[name] = ([p.default] if p.default is not None else []) + [""]
    return {call["name"]: accepted}


def bfcl_category(row) -> str:
    calls = _calls_of(row)
    if row["kind"] == "irrelevance":
        return "irrelevance"
    if row["kind"] == "parallel":
        return "parallel" if len({c["name"] for c in calls}) == 1 else "parallel_multiple"
    return {"single": "simple", "multiple": "multiple"}.get(row["kind"], "")


def write_bfcl(rows: list, folder: Path) -> dict:
    """BFCL_v3_<category>.json and possible_answer/BFCL_v3_<category>.json (JSON Lines) for the held-out rows;
    returns {category: cases}."""
    cases = collections.defaultdict(list)
    for row in rows:
        cat = bfcl_category(row)
        if cat:
            cases[cat].append(row)
    (folder / "possible_answer").mkdir(parents=True, exist_ok=True)
    counts = {}
    for cat in ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance"):
        questions, answers = [], []
        for i, row in enumerate(cases.get(cat, [])):
            conv = row["conversations"]
            cid = f"{cat}_{i}"
            user = next(m["content"] for m in conv if m["role"] == "user")
            questions.append({"id": cid, "question": [[{"role": "user", "content": user}]],
                              "function": [bfcl_schema(t) for t in conv[0].get("functions", [])]})
            if cat != "irrelevance":
                first = next(m for m in conv if m["role"] == "assistant")
                answers.append({"id": cid, "ground_truth": [ground_truth(c) for c in _calls_of(
                    {"conversations": [first]})]})
        lines = lambda objs: "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs)  # noqa: E731
        atomic_write_text(lines(questions), folder / f"BFCL_v3_{cat}.json")
        if cat != "irrelevance":
            atomic_write_text(lines(answers), folder / "possible_answer" / f"BFCL_v3_{cat}.json")
        counts[cat] = len(questions)
    return counts


# ------------------------------------------------------------------------------------------------------ main

def check_args(args) -> None:
    if args.input:
        raise UserError("--source local generates its dialogues from the tool library and reads no --input; "
                        "use --source corpus --input FILE for recorded corpus dialogues")
    if not 0 < args.heldout_ratio < 1:
        raise UserError(f"--heldout_ratio {args.heldout_ratio}: --source local needs a share in (0, 1) for the "
                        f"held-out tools' evaluation set, e.g. 0.1")
    if args.max_samples < 10:
        raise UserError(f"--max_samples {args.max_samples}: --source local needs at least 10 (one row per kind "
                        f"and split)")
    if args.max_length < 128:
        raise UserError(f"--max_length {args.max_length}: a tool dialogue with its schema needs at least 128 "
                        f"tokens; MiniMind's tool SFT uses 512")


def prepare(args) -> dict:
    """Generate, length-check, write train / held-out JSONL and the BFCL folder; the summary printed as JSON."""
    check_args(args)
    t0 = time.perf_counter()
    assembler = Assembler(load_tokenizer(repo_path(args.tokenizer_path)), args.max_length)
    train_pool = [library.TOOLS[n] for n in library.TRAIN]
    held_pool = [library.TOOLS[n] for n in library.HELDOUT]
    n_held = max(5, round(args.max_samples * args.heldout_ratio))
    stats = {"dropped": collections.Counter(), "tokens": [], "offered": collections.defaultdict(list)}
    train = generate(args.max_samples - n_held, train_pool, train_pool, random.Random(args.seed), assembler, stats)
    train_tokens, offered = stats["tokens"], stats["offered"]
    stats["tokens"], stats["offered"] = [], collections.defaultdict(list)
    # held-out irrelevance requests come from training tools: the held-out tools are offered, a training tool's
    # request is asked, so "no fitting tool" is tested with tools the model has never seen
    held = generate(n_held, held_pool, train_pool, random.Random(args.seed + 1), assembler, stats)
    out = repo_path(args.output)
    held_path = repo_path(args.heldout_output) if args.heldout_output else out.with_name(out.stem + "_heldout.jsonl")
    bfcl_dir = repo_path(args.bfcl_dir) if args.bfcl_dir else out.with_name(out.stem + "_bfcl")
    for path in (out, held_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    train_text = "".join(json.dumps({"conversations": r["conversations"]}, ensure_ascii=False) + "\n" for r in train)
    atomic_write_text(train_text, out)
    atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held), held_path)
    bfcl = write_bfcl(held, bfcl_dir)
    calls = collections.Counter(c["name"] for r in train for c in _calls_of(r))
    summary = {
        "source": "local", "seed": args.seed, "train": len(train), "heldout": len(held),
        "kinds_train": dict(collections.Counter(r["kind"] for r in train)),
        "kinds_heldout": dict(collections.Counter(r["kind"] for r in held)),
        "tools": len(library.TOOLS), "tools_train": len(library.TRAIN), "tools_heldout": len(library.HELDOUT),
        "heldout_families": list(library.HELDOUT_FAMILIES), "tools_called_in_train": len(calls),
        "dropped": dict(sorted(stats["dropped"].items())),
        "tokens_train": percentiles(train_tokens), "tokens_heldout": percentiles(stats["tokens"]),
        "tools_offered_train": {k: dict(sorted(collections.Counter(v).items())) for k, v in sorted(offered.items())},
        "bfcl": bfcl, "seconds": round(time.perf_counter() - t0, 1),
        "output": str(out), "heldout_output": str(held_path), "bfcl_dir": str(bfcl_dir)}
    if stats["dropped"]:
        print(f"draws replaced while generating: {dict(stats['dropped'])} (a draw that is too long or repeats an "
              f"earlier row is drawn again, up to {TRIES} tries; gave_up = rows left out after {TRIES})",
              file=sys.stderr)
    return summary
