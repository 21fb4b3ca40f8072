"""Constrained-decoding benchmark: one JSON line per result, never a pass/fail test.

  * `decode` lines: per-token time of the shared Engine at batch 1 (or --batch) on a random-weight preset, free and
    under each constraint (a response_format JSON schema, a tool call forced by tool_choice "required", and
    tool_choice "auto", which decodes freely until the model opens a call), greedy, a fixed number of new tokens
    (no stop id), with the overhead against free decoding; `masked_fraction` is the share of steps whose grammar
    restricted the token (a random model may finish its JSON early and go on freely). On CUDA the engine runs as
    it serves: CUDA graphs, and MINIMIND_DECODE=compile when set.
  * `library` lines (--libraries): the time to compute one token mask and advance by one token, per library
    (llguidance, xgrammar, outlines-core: those installed), over the tokens of a tool call in this tokenizer.

scripts/bench_constrain.py is the command.
"""
import argparse
import json
import time
from importlib.metadata import version

import torch

from model import constrain
from model.engine import BatchDecoder, Engine, SamplingParams, unpack_token_bitmask
from model.model_minimind import PRESETS, MiniMindConfig, MiniMindForCausalLM
from trainer.trainer_utils import load_tokenizer

# what the benchmark constrains to: a tool with an enum, a number, a nested object and an array
TOOL = {"type": "function", "function": {"name": "plan_trip", "parameters": {
    "type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"},
        "mode": {"enum": ["train", "plane", "car"]},
        "budget": {"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
                   "required": ["amount"]},
        "sights": {"type": "array", "items": {"type": "string"}}},
    "required": ["city", "days", "mode", "budget", "sights"]}}}
CALL_TEXT = ('{"name": "plan_trip", "arguments": {"city": "杭州", "days": 3, "mode": "train", '
             '"budget": {"amount": 2500.5, "currency": "CNY"}, "sights": ["西湖", "灵隐寺", "千岛湖"]}}')


def emit(**row):
    print(json.dumps(row, ensure_ascii=False), flush=True)


class Counting:
    """A constraint wrapper that counts the steps whose grammar restricted the token."""

    def __init__(self, inner):
        self.inner, self.masked = inner, 0

    def start(self):
        outer, state = self, self.inner.start()

        class State:
            def needs_mask(self):
                return state.needs_mask()

            def fill(self, bits, index):
                outer.masked += 1
                state.fill(bits, index)

            def consume(self, token):
                state.consume(token)
        return State()


class ConstraintClock:
    """Seconds spent in the engine's constraint code (masks, token feeding), measured inside the same runs as the
    total: on a shared machine the load changes between runs, but a share of one run's time stays meaningful."""
    NAMES = ("_constraint_masks", "_send_to_constraints", "_fed_tokens", "_feed_constraints")

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self.saved = {n: getattr(BatchDecoder, n) for n in self.NAMES}
        for name, fn in self.saved.items():
            setattr(BatchDecoder, name, self._timed(fn))
        return self

    def _timed(self, fn):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds += time.perf_counter() - t0
        return wrapper

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(BatchDecoder, name, fn)


def constraints(tokenizer) -> dict:
    vocab = constrain.vocabulary(tokenizer)
    return {"json_schema": constrain.json_constraint(vocab, TOOL["function"]["parameters"]),
            "tool_required": constrain.tool_call_constraint(vocab, tokenizer, [TOOL], "required"),
            "tool_auto": constrain.tool_call_constraint(vocab, tokenizer, [TOOL], "auto")}


def bench_decode(model, tokenizer, device, batch: int, new_tokens: int, repeats: int) -> None:
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "帮我规划三天的杭州行程"}], tools=[TOOL],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt)["input_ids"]
    modes = {"free": None, **constraints(tokenizer)}

    def run(constraint):
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0, stop_ids=[], constraint=constraint)
        if device.type == "cuda":
            torch.cuda.synchronize()
        with ConstraintClock() as clock:
            start = time.perf_counter()
            out = engine.generate([ids] * batch, params)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        return seconds, clock.seconds, out

    for mode in modes:  # warm-up: graph capture, allocator, the grammar's first masks
        run(modes[mode])
    times = {m: [] for m in modes}
    masked, share = {}, {m: [] for m in modes}
    for _ in range(repeats):  # interleaved, so a load change on a shared machine hits every mode alike
        for mode, c in modes.items():
            counted = Counting(c) if c is not None else None
            seconds, in_constraints, out = run(counted)
            times[mode].append(seconds)
            share[mode].append(in_constraints / seconds)
            masked[mode] = counted.masked / (batch * new_tokens) if counted else 0.0
    free = min(times["free"]) / new_tokens
    for mode in modes:
        per_token = min(times[mode]) / new_tokens
        # overhead: fastest constrained run against the fastest free run (noisy on a loaded machine);
        # constraint_share: the median share of a run's time spent in the constraint code itself
        emit(bench="constrained_decode", mode=mode, device=str(device), dtype=str(next(model.parameters()).dtype),
             batch=batch, new_tokens=new_tokens, repeats=repeats, per_token_ms=round(per_token * 1e3, 4),
             overhead=round(per_token / free - 1, 4), constraint_share=round(sorted(share[mode])[len(share[mode]) // 2], 4),
             masked_fraction=round(masked[mode], 3), cuda_graphs=engine.cuda_graphs, compiled=engine.compiled)


def check_outputs(model, tokenizer, device) -> None:
    """On this device's decode path (CUDA graphs, sync_every 8 on CUDA): sampled rows under the tool-call and
    JSON-schema constraints end in valid output; one `check` line with the counts."""
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id)
    # bounded strings and numbers: an untrained model would otherwise write one string until the budget ends
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 4},
                                               "days": {"type": "integer", "minimum": 1, "maximum": 9},
                                               "mode": TOOL["function"]["parameters"]["properties"]["mode"]},
              "required": ["city", "days", "mode"]}
    tool = {"type": "function", "function": {"name": "plan_trip", "parameters": schema}}
    vocab = constrain.vocabulary(tokenizer)
    found = {"json_schema": constrain.json_constraint(vocab, schema),
             "tool_required": constrain.tool_call_constraint(vocab, tokenizer, [tool], "required", parallel=False)}
    prompt = tokenizer("<|im_start|>user\n杭州<|im_end|>\n<|im_start|>assistant\n<tool_call>\n")["input_ids"]
    params = [SamplingParams(max_new_tokens=256, temperature=1.0, seed=s, constraint=found[m])
              for m in ("json_schema", "tool_required") for s in range(4)]
    valid = stopped = 0
    for i, c in enumerate(engine.generate([prompt] * len(params), params)):
        if c.finish_reason != "stop":
            continue  # an untrained model may write a JSON number's digits until the budget ends
        stopped += 1
        text = tokenizer.decode(c.token_ids)
        try:
            value = json.loads(text if i < 4 else text.split("</tool_call>")[0])
            valid += (value["name"] == "plan_trip") if i >= 4 else isinstance(value, dict) and set(
                schema["required"]) <= set(value)
        except (ValueError, KeyError, TypeError):
            pass
    emit(check="constrained_outputs_valid", device=str(device), rows=len(params), stopped=stopped, valid=valid,
         cuda_graphs=engine.cuda_graphs, compiled=engine.compiled)


def bench_libraries(tokenizer, repeats: int) -> None:
    """Mask + advance per token for each installed library, over CALL_TEXT's tokens under the call's schema."""
    schema = constrain.call_schema([TOOL])
    tokens = tokenizer(CALL_TEXT)["input_ids"]
    vocab_size = len(tokenizer)

    def timed(name, start_fn, bits):
        """Best of `repeats` runs of mask + advance over the tokens, then one checked run: every token of the call
        accepted, and the mean number of allowed tokens per step (the libraries should agree on it)."""
        best = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            state, fill, advance = start_fn()
            setup = time.perf_counter() - t0
            t0 = time.perf_counter()
            for t in tokens:
                fill(state)
                advance(state, t)
            per = (time.perf_counter() - t0) / len(tokens)
            best = per if best is None else min(best, per)
        state, fill, advance = start_fn()
        accepted, allowed = 0, 0
        for t in tokens:
            bits.zero_()
            fill(state)
            allowed += int(unpack_token_bitmask(bits, vocab_size).sum())
            accepted += advance(state, t) is not False
        emit(bench="constraint_library", library=name, tokens=len(tokens), mask_and_advance_us=round(best * 1e6, 1),
             matcher_setup_ms=round(setup * 1e3, 3), tokens_accepted=accepted,
             allowed_per_step=round(allowed / len(tokens), 1))

    if constrain.available():
        import llguidance
        import llguidance.torch
        vocab = constrain.vocabulary(tokenizer)
        t0 = time.perf_counter()
        grammar = constrain.Grammar(vocab, "start: " + constrain._json_rule(schema) + "\n")
        emit(bench="constraint_library", library="llguidance", version=version("llguidance"),
             compile_ms=round((time.perf_counter() - t0) * 1e3, 2))
        bits = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)
        timed("llguidance", lambda: (grammar.matcher(), lambda m: llguidance.torch.fill_next_token_bitmask(m, bits, 0),
                                     lambda m, t: m.consume_token(t)), bits)
    try:
        import xgrammar
    except ImportError:
        emit(bench="constraint_library", library="xgrammar", error="not installed")
    else:
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        t0 = time.perf_counter()
        compiled = xgrammar.GrammarCompiler(info).compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(", ", ": "))
        emit(bench="constraint_library", library="xgrammar", version=version("xgrammar"),
             compile_ms=round((time.perf_counter() - t0) * 1e3, 2))
        bits = xgrammar.allocate_token_bitmask(1, vocab_size)
        timed("xgrammar", lambda: (xgrammar.GrammarMatcher(compiled), lambda m: m.fill_next_token_bitmask(bits, 0),
                                   lambda m, t: m.accept_token(t)), bits)
    try:
        import outlines_core
    except ImportError:
        emit(bench="constraint_library", library="outlines-core", error="not installed")
    else:
        t0 = time.perf_counter()
        regex = outlines_core.json_schema.build_regex_from_schema(json.dumps(schema), r" ?")  # ", " / ": " spacing
        index = outlines_core.Index(regex, outlines_core.Vocabulary.from_pretrained_tokenizer(tokenizer)
                                    if hasattr(outlines_core.Vocabulary, "from_pretrained_tokenizer") else
                                    _outlines_vocabulary(outlines_core, tokenizer))
        emit(bench="constraint_library", library="outlines-core", version=version("outlines-core"),
             compile_ms=round((time.perf_counter() - t0) * 1e3, 2))
        bits = torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)
        timed("outlines-core", lambda: (outlines_core.Guide(index),
                                        lambda g: g.write_mask_into(bits.data_ptr(), bits.numel(), 4),
                                        lambda g, t: g.advance(t, return_tokens=False)), bits)


def _outlines_vocabulary(outlines_core, tokenizer):
    """outlines-core's Vocabulary from token bytes (byte-level BPE: the GPT-2 byte alphabet undone)."""
    table = {c: b for b, c in _byte_alphabet().items()}
    tokens = {}
    for token, i in tokenizer.get_vocab().items():
        if i == tokenizer.eos_token_id:
            continue
        raw = bytes(table[c] for c in token) if all(c in table for c in token) else token.encode()
        tokens.setdefault(raw, []).append(i)
    return outlines_core.Vocabulary(tokenizer.eos_token_id, tokens)


def _byte_alphabet() -> dict:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="random-weight model size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1, help="rows decoded together, all under the same constraint")
    p.add_argument("--new_tokens", type=int, default=128, help="tokens per row (no stop id: always this many)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per mode, interleaved; the fastest counts")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--libraries", action="store_true", help="also time mask + advance per library")
    p.add_argument("--skip_decode", action="store_true", help="only the --libraries lines")
    return p


def run(args) -> None:
    constrain.require("the constrained-decoding benchmark")
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer()
    if args.libraries:
        bench_libraries(tokenizer, args.repeats)
    if args.skip_decode:
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(**PRESETS[args.preset])).to(device).eval()
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    check_outputs(model, tokenizer, device)
    bench_decode(model, tokenizer, device, args.batch, args.new_tokens, args.repeats)
