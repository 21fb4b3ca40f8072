"""Measure what a model learned: held-out bits per character, multiple choice by log-likelihood, generation checks.

    python scripts/eval_bench.py --save_dir out/demo --weight full_sft        # one weight, every task
    python scripts/eval_bench.py --save_dir out/demo --compare untrained pretrain full_sft
    python scripts/eval_bench.py --load_from out/minimind-hf --tasks heldout mc # a transformers folder
    python scripts/eval_bench.py --weight full_sft --lora_weight lora_identity  # adapter merged in
    python scripts/eval_bench.py --weight full_sft --lm_eval_tasks ceval-valid,cmmlu   # through lm-eval (hub data)
    python scripts/eval_bench.py --weight full_sft --data_dir data/ceval-exam          # C-Eval / CMMLU on disk

Tasks (`--tasks`, default all):
- heldout: bits per character per domain of dataset/demo/eval_heldout.jsonl (or a folder of {domain}.jsonl such as
  dataset/build/heldout/): summed negative log-likelihood of every text token given bos (texts longer than
  --window tokens are scored in consecutive windows), in bits, over the characters of the text. Characters, not
  tokens, so two tokenizers compare.
- mc: the idiom-meaning and poem next-line sets by log-likelihood of each choice after the question (lm-eval's
  `multiple_choice` rules: the choice is scored as the continuation of question+choice, ties go to the first).
  `acc` picks the highest summed log-prob, `acc_norm` the highest log-prob per character of the choice; acc_norm
  is the primary number (the idiom choices differ in length, and the sum favours short ones). Chance is the mean
  of 1/len(choices); the 95% interval is Wilson's.
- gen: greedy answers through model.engine.Engine: the rule-checkable items of dataset/demo/rlaif_demo.jsonl scored
  with trainer/rl_rewards.is_correct (accuracy), and the fixed prompts of `eval_llm.py auto`
  (model.chat_protocol.CHAT_PROMPTS / PRETRAIN_PROMPTS: share of answers that end with <|im_end|> before
  --max_new_tokens, plus the answers themselves as samples).
- exam (--data_dir): C-Eval (val) or CMMLU (test) from a local folder (layouts in scripts/evals/mcq.py), 0-shot
  and k-shot (--shots, examples from the dev split of the same subject): the letter A-D with the highest
  log-probability after the prompt, the same lm-eval multiple_choice rule as `mc` with the letters as choices.
  One row per subject (95% Wilson interval), "all" (every question pooled, Wilson; the primary number) and
  "subject_mean" (unweighted mean over subjects, C-Eval's "Average", with a bootstrap interval).

Output: one JSON object per metric in --output (default {save_dir}/eval_bench.jsonl, which scripts/report.py
reads) and a Markdown table on stdout; with --compare, one column per model. scripts/eval_bench.py is the command.
"""
import argparse
import copy
import gc
import json
import math
import random
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoConfig

from model.checkpoint import (
    WEIGHT_NAME,
    add_model_args,
    atomic_write_text,
    info,
    is_native,
    load_model,
    load_tokenizer,
    resolve_weight,
    weights_tokenizer,
)
from model.chat_protocol import CHAT_PROMPTS, PRETRAIN_PROMPTS, build_prompt, trained_context_len
from model.engine import Engine, SamplingParams
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM, count_parameters
from model.runtime import (
    UserError,
    display_path,
    init_distributed_mode,
    repo_path,
)
from scripts.evals import mcq
from trainer.rl_rewards import final_answer, is_correct

HELDOUT = "dataset/demo/eval_heldout.jsonl"
MC_SETS = ["idiom=dataset/demo/eval_idiom_mc.jsonl", "poem=dataset/demo/eval_poem_nextline_mc.jsonl"]
RL_SET = "dataset/demo/rlaif_demo.jsonl"
TASKS = ("heldout", "mc", "gen", "exam")
DEFAULT_TASKS = ["heldout", "mc", "gen"]  # exam needs --data_dir; with it, exam alone is the default
LETTERS = "ABCDEFGHIJ"
Z95 = 1.959964  # standard normal quantile at 97.5%: the half-width factor of a two-sided 95% interval


# ------------------------------------------------------------------------------------------------------ reading data

def _jsonl_rows(path: Path):
    """(line number, object) of every non-empty line; a broken line is a UserError naming file and line."""
    if not path.is_file():
        raise UserError(f"eval file not found: {path} (the bundled sets are in dataset/demo/; "
                        f"python scripts/build_corpus.py build writes dataset/build/)")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        yield n, row


def read_heldout(path: Path, max_chars: int = 0) -> list:
    """[(domain, text)] from a JSONL file with 'text' (and 'domain', default 'all'), or from a folder of
    {domain}.jsonl files (dataset/build/heldout/). max_chars > 0 cuts each text to that many characters."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise UserError(f"held-out folder {path} has no .jsonl files")
    rows = []
    for f in files:
        for n, row in _jsonl_rows(f):
            text = row.get("text")
            if not isinstance(text, str):
                raise UserError(f"{f}:{n}: expected a 'text' string field")
            domain = str(row.get("domain", f.stem if path.is_dir() else "all"))
            text = text[:max_chars] if max_chars > 0 else text
            if text:
                rows.append((domain, text))
    if not rows:
        raise UserError(f"{path}: no texts to score")
    return rows


def read_mc(path: Path) -> list:
    """[{"question", "choices", "answer" (index)}] from {"question": str, "choices": [str, ...], "answer": "B" or 1}."""
    items = []
    for n, row in _jsonl_rows(Path(path)):
        q, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(q, str) or not q:
            raise UserError(f"{path}:{n}: expected a non-empty 'question' string")
        if (not isinstance(choices, list) or len(choices) < 2
                or not all(isinstance(c, str) and c for c in choices)):
            raise UserError(f"{path}:{n}: 'choices' must be a list of at least 2 non-empty strings")
        if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
            index = LETTERS.index(answer.strip().upper())
        elif isinstance(answer, int) and not isinstance(answer, bool):
            index = answer
        else:
            raise UserError(f"{path}:{n}: 'answer' must be a letter (A, B, ...) or a 0-based index, got {answer!r}")
        if not 0 <= index < len(choices):
            raise UserError(f"{path}:{n}: answer {answer!r} is outside the {len(choices)} choices")
        items.append({"question": q, "choices": choices, "answer": index})
    if not items:
        raise UserError(f"{path}: no questions")
    return items


def read_rl_items(path: Path) -> list:
    """[{"messages", "answer", "answer_type"}] of the rows with a reference answer (the last assistant message)."""
    items = []
    for n, row in _jsonl_rows(Path(path)):
        conv = row.get("conversations")
        if not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(m, dict) for m in conv):
            raise UserError(f"{path}:{n}: expected 'conversations' with a prompt and a reference answer")
        if conv[-1].get("role") != "assistant" or not str(conv[-1].get("content", "")).strip():
            continue
        items.append({"messages": conv[:-1], "answer": str(conv[-1]["content"]),
                      "answer_type": str(row.get("answer_type", "exact"))})
    if not items:
        raise UserError(f"{path}: no rows with a reference answer (a last assistant message)")
    return items


def subsample(items: list, limit: int, seed: int = 0) -> list:
    """A fixed random subset of `limit` items in file order (all when limit is 0 or larger than the set)."""
    if not limit or limit >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


# ------------------------------------------------------------------------------------------------------- scoring

def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def sequence_logprobs(model, sequences: list, batch_size: int = 16) -> list:
    """Summed log-prob of the scored tokens of each (ids, n_scored): the last n_scored tokens of ids, each given
    what precedes it. Batched by length (right padding, pads and context labelled -100), through the model's
    forward `labels=` token_logprobs, the same numbers the training loss is made of."""
    # sorted by length so each batch pads to its own longest row: the demo MC pieces are 15-129 tokens (median 33)
    # and held-out windows up to --window (512); one long row among short ones would pad them all to its length
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    out = [0.0] * len(sequences)
    device = model_device(model)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        longest = max(len(sequences[i][0]) for i in chunk)
        ids = torch.zeros((len(chunk), longest), dtype=torch.long)
        labels = torch.full((len(chunk), longest), -100, dtype=torch.long)
        for r, i in enumerate(chunk):
            row, scored = sequences[i]
            ids[r, :len(row)] = torch.tensor(row)
            labels[r, len(row) - scored:len(row)] = torch.tensor(row[len(row) - scored:])
        # right padding needs no attention mask: causal attention never lets a real token see the pads after it
        logp = model(ids.to(device), labels=labels.to(device)).token_logprobs.float().sum(-1).tolist()
        for r, i in enumerate(chunk):
            out[i] = logp[r]
    return out


def heldout_windows(tokenizer, text: str, window: int) -> list:
    """(ids, n_scored) pieces of a text: bos + up to window-1 tokens each, every text token scored once."""
    ids = tokenizer(text)["input_ids"]
    step = max(1, window - 1)
    return [([tokenizer.bos_token_id] + ids[i:i + step], len(ids[i:i + step])) for i in range(0, len(ids), step)]


def heldout_stats(model, tokenizer, texts: list, batch_size: int = 16, window: int = 512) -> dict:
    """{domain: {"bits_per_char", "nll_bits", "chars", "tokens", "texts"}}, plus "all" over every text."""
    pieces, owner = [], []
    for t, (_, text) in enumerate(texts):
        for piece in heldout_windows(tokenizer, text, window):
            pieces.append(piece)
            owner.append(t)
    logp = sequence_logprobs(model, pieces, batch_size)
    stats = defaultdict(lambda: {"nll_bits": 0.0, "chars": 0, "tokens": 0, "texts": 0})
    for t, (domain, text) in enumerate(texts):
        for key in (domain, "all"):
            stats[key]["chars"] += len(text)
            stats[key]["texts"] += 1
    for (_, scored), t, lp in zip(pieces, owner, logp):
        for key in (texts[t][0], "all"):
            stats[key]["nll_bits"] -= lp / math.log(2)
            stats[key]["tokens"] += scored
    for s in stats.values():
        s["bits_per_char"] = s["nll_bits"] / s["chars"]
    return dict(stats)


def bits_per_char(model, tokenizer, texts: list, batch_size: int = 16, window: int = 512) -> dict:
    """{domain: bits per character} plus 'all' (see heldout_stats)."""
    return {k: v["bits_per_char"] for k, v in heldout_stats(model, tokenizer, texts, batch_size, window).items()}


def choice_pieces(tokenizer, context: str, choice: str, bos: bool = True) -> tuple:
    """(ids, n_scored) of one choice, built as lm-eval builds it: the context's own tokens, then the tokens of
    context+choice after the first len(context tokens) of them. When BPE merges across the boundary (是 + 一 ->
    是一) this drops a merged piece rather than scoring context text twice; matching lm-eval exactly is what makes
    our numbers comparable with the field's (tests/test_eval_bench.py checks it item by item)."""
    context_ids = tokenizer(context)["input_ids"]
    continuation = tokenizer(context + choice)["input_ids"][len(context_ids):]
    prefix = [tokenizer.bos_token_id] if bos else []
    return prefix + context_ids + continuation, len(continuation)


def mc_scores(model, tokenizer, items: list, batch_size: int = 16) -> list:
    """Per item: [(summed log-prob, characters) per choice]."""
    pieces, where = [], []
    for i, item in enumerate(items):
        for c, choice in enumerate(item["choices"]):
            ids, scored = choice_pieces(tokenizer, item["question"], choice)
            if scored < 1:
                raise UserError(f"question {i + 1}: choice {choice!r} adds no token after the question")
            pieces.append((ids, scored))
            where.append((i, c))
    logp = sequence_logprobs(model, pieces, batch_size)
    scores = [[None] * len(item["choices"]) for item in items]
    for (i, c), lp in zip(where, logp):
        scores[i][c] = (lp, len(items[i]["choices"][c]))
    return scores


@torch.inference_mode()
def letter_logprobs(model, tokenizer, prompts: list, letters=tuple("ABCD"), batch_size: int = 16) -> tuple:
    """([log p(letter | prompt) per letter] per prompt, prompt lengths in tokens with bos). Each letter is cut off
    the prompt as choice_pieces cuts a choice (lm-eval's rule). When every letter is one token after the prompt's
    own tokens (so far always: "答案：" then A-D), one forward per prompt reads all of them at its last position, a
    quarter of the work of scoring four sequences; otherwise the prompt's letters go through sequence_logprobs."""
    out, lengths, shared, fallback = [None] * len(prompts), [0] * len(prompts), [], []
    for i, prompt in enumerate(prompts):
        pieces = [choice_pieces(tokenizer, prompt, letter) for letter in letters]
        lengths[i] = len(pieces[0][0]) - pieces[0][1]
        if all(n == 1 for _, n in pieces):  # choice_pieces keeps the prompt's own tokens in front of each letter
            shared.append((i, pieces[0][0][:-1], [ids[-1] for ids, _ in pieces]))
        else:
            fallback.append((i, pieces))
    device = model_device(model)
    shared.sort(key=lambda row: len(row[1]))  # each batch pads to its own longest prompt
    for start in range(0, len(shared), batch_size):
        chunk = shared[start:start + batch_size]
        ids = torch.zeros((len(chunk), len(chunk[-1][1])), dtype=torch.long)
        for r, (_, context, _) in enumerate(chunk):
            ids[r, :len(context)] = torch.tensor(context)
        # logits only at the rows' last positions (<= batch_size distinct ones), not at every position: a 2,000-token
        # 5-shot prompt would otherwise make a 16 x 2000 x 6400 float tensor (820 MB) per batch
        ends = sorted({len(context) - 1 for _, context, _ in chunk})
        column = {e: k for k, e in enumerate(ends)}
        logits = model(ids.to(device), logits_to_keep=torch.tensor(ends, device=device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for r, (i, context, targets) in enumerate(chunk):
            out[i] = logp[r, column[len(context) - 1], targets].tolist()
    if fallback:
        flat = sequence_logprobs(model, [p for _, pieces in fallback for p in pieces], batch_size)
        for k, (i, _) in enumerate(fallback):
            out[i] = flat[k * len(letters):(k + 1) * len(letters)]
    return out, lengths


def argmax_first(values: list) -> int:
    """Index of the largest value, the first one on ties (numpy's argmax, which lm-eval uses)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple:
    """95% Wilson score interval of a proportion (stays inside [0, 1], sensible at 0 or n)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def chance_level(items: list) -> float:
    """Expected accuracy of a uniform random pick: mean of 1/len(choices)."""
    return sum(1 / len(item["choices"]) for item in items) / len(items)


def mc_accuracy(items: list, scores: list) -> dict:
    """{"acc": ..., "acc_norm": ..., "correct", "correct_norm", "n", "chance"} from mc_scores."""
    correct = sum(argmax_first([lp for lp, _ in s]) == item["answer"] for item, s in zip(items, scores))
    correct_norm = sum(argmax_first([lp / max(1, chars) for lp, chars in s]) == item["answer"]
                       for item, s in zip(items, scores))
    n = len(items)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "correct": correct, "correct_norm": correct_norm,
            "n": n, "chance": chance_level(items)}


# ---------------------------------------------------------------------------------------------------- generation

def generate_answers(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int) -> list:
    """Greedy answers [(text, finish reason)] through the shared Engine, batch_size prompts at a time."""
    engine = Engine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id or 0)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    out = []
    for start in range(0, len(prompts), batch_size):
        for c in engine.generate(prompts[start:start + batch_size], params):
            out.append((tokenizer.decode(c.token_ids, skip_special_tokens=True).rstrip("\ufffd"), c.finish_reason))
    return out


def chat_ids(tokenizer, messages: list) -> list:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text)["input_ids"]


def rl_accuracy(model, tokenizer, items: list, max_new_tokens: int, batch_size: int) -> dict:
    """{answer_type: (correct, n)} plus "all", answers checked with the RL rule reward's is_correct."""
    answers = generate_answers(model, tokenizer, [chat_ids(tokenizer, it["messages"]) for it in items],
                               max_new_tokens, batch_size)
    counts = defaultdict(lambda: [0, 0])
    for item, (text, _) in zip(items, answers):
        ok = is_correct(final_answer(text, "<think>" in text), item["answer"], item["answer_type"])
        for key in (item["answer_type"], "all"):
            counts[key][0] += int(ok)
            counts[key][1] += 1
    return {k: tuple(v) for k, v in counts.items()}


def auto_answers(model, tokenizer, raw: bool, max_new_tokens: int, batch_size: int) -> list:
    """The fixed prompts of `eval_llm.py auto` answered greedily: [{"prompt", "answer", "finish"}]."""
    prompts = PRETRAIN_PROMPTS if raw else CHAT_PROMPTS
    ids = [build_prompt(tokenizer, [{"role": "user", "content": p}], raw) for p in prompts]
    return [{"prompt": p, "answer": a, "finish": f}
            for p, (a, f) in zip(prompts, generate_answers(model, tokenizer, ids, max_new_tokens, batch_size))]


# --------------------------------------------------------------------------------------------------------- models

def spec_args(args, spec: str) -> argparse.Namespace:
    """Model flags for one --compare entry: 'untrained', a stage name in --save_dir, a .pth path, a transformers
    folder, each optionally '+LORA' (an adapter merged in)."""
    a = copy.copy(args)
    a.untrained = spec == "untrained"
    if a.untrained:
        return a
    name, _, lora = spec.partition("+")
    a.lora_weight = lora or None
    path = repo_path(name)
    if path.is_dir() and (path / "config.json").is_file():
        a.load_from = name
    elif name.endswith(".pth"):
        m = WEIGHT_NAME.match(path.name)
        if not m:
            raise UserError(f"--compare {spec}: a .pth is named {{stage}}_{{hidden}}[_moe].pth, e.g. full_sft_512.pth")
        a.load_from, a.save_dir, a.weight = None, str(path.parent), m.group("stage")
        a.hidden_size, a.use_moe = int(m.group("hidden")), int(bool(m.group("moe")))
    else:
        a.load_from, a.weight = None, name
    return a


def load_untrained(args):
    """A randomly initialised model (seeded) with the sizes and tokenizer of --weight: the 'before' column."""
    if not is_native(args):
        cfg = AutoConfig.from_pretrained(str(repo_path(args.load_from))).to_dict()
        cfg = {k: v for k, v in cfg.items() if k in MiniMindConfig().to_dict()}
        tokenizer_dir = repo_path(args.tokenizer_path) if args.tokenizer_path else repo_path(args.load_from)
    else:
        path, cfg, _ = resolve_weight(args)
        tokenizer_dir = weights_tokenizer(path, args.tokenizer_path) if path.is_file() else (
            repo_path(args.tokenizer_path) if args.tokenizer_path else repo_path("model"))
    torch.manual_seed(args.seed)
    model = MiniMindForCausalLM(MiniMindConfig(**cfg))
    ctx = init_distributed_mode(args.device)
    info(f"model: untrained (random init, seed {args.seed}), {count_parameters(model) / 1e6:.2f}M parameters")
    return model.to(ctx.device, ctx.dtype).eval(), load_tokenizer(tokenizer_dir)


def load_for_eval(args):
    return load_untrained(args) if getattr(args, "untrained", False) else load_model(args)


def describe_source(args) -> str:
    if getattr(args, "untrained", False):
        return f"random init (seed {args.seed}), sizes of {args.weight}"
    if not is_native(args):
        return display_path(repo_path(args.load_from))
    path, _, _ = resolve_weight(args)
    return display_path(path) + (f" + {args.lora_weight}" if args.lora_weight else "")


# ---------------------------------------------------------------------------------------------------- evaluating

def metric(label: str, source: str, task: str, subset: str, name: str, value, **extra) -> dict:
    return {"model": label, "source": source, "task": task, "subset": subset, "metric": name, "value": value,
            **extra}


def evaluate(args, label: str, model, tokenizer, source: str) -> list:
    """Every requested task on one model: a list of metric dicts (the JSON lines)."""
    rows = []
    if "heldout" in args.tasks:
        texts = subsample(read_heldout(repo_path(args.heldout_path), args.max_chars), args.limit, args.seed)
        for domain, s in sorted(heldout_stats(model, tokenizer, texts, args.batch_size, args.window).items(),
                                key=lambda kv: (kv[0] == "all", kv[0])):
            rows.append(metric(label, source, "heldout", domain, "bits_per_char", s["bits_per_char"],
                               chars=s["chars"], tokens=s["tokens"], n=s["texts"], primary=True))
    if "mc" in args.tasks:
        for name, path in parse_mc_sets(args.mc_sets):
            items = subsample(read_mc(path), args.limit, args.seed)
            acc = mc_accuracy(items, mc_scores(model, tokenizer, items, args.batch_size))
            for key, correct, primary in (("acc_norm", acc["correct_norm"], True), ("acc", acc["correct"], False)):
                rows.append(metric(label, source, f"{name}_mc", "all", key, acc[key], n=acc["n"], correct=correct,
                                   chance=acc["chance"], ci95=list(wilson_interval(correct, acc["n"])),
                                   primary=primary))
    if "gen" in args.tasks:
        items = subsample(read_rl_items(repo_path(args.rl_path)), args.gen_limit, args.seed)
        counts = rl_accuracy(model, tokenizer, items, args.max_new_tokens, args.batch_size)
        for key, (correct, n) in sorted(counts.items(), key=lambda kv: (kv[0] == "all", kv[0])):
            rows.append(metric(label, source, "rl_answers", key, "accuracy", correct / n, n=n, correct=correct,
                               ci95=list(wilson_interval(correct, n)), primary=key == "all"))
        raw = getattr(args, "untrained", False) or (args.weight == "pretrain" and is_native(args))
        samples = auto_answers(model, tokenizer, raw, args.max_new_tokens, args.batch_size)
        stopped = sum(s["finish"] == "stop" for s in samples)
        rows.append(metric(label, source, "auto_prompts", "all", "stop_rate", stopped / len(samples),
                           n=len(samples), correct=stopped, ci95=list(wilson_interval(stopped, len(samples))),
                           samples=samples, primary=False))
    if "exam" in args.tasks:
        rows += exam_metrics(args, label, model, tokenizer, source)
    if args.lm_eval_tasks:
        rows += lm_eval_metrics(label, source, model, tokenizer, args)
    return rows


def exam_metrics(args, label: str, model, tokenizer, source: str) -> list:
    """C-Eval / CMMLU of --data_dir at each --shots: a row per subject, then "all" and "subject_mean"."""
    exam = getattr(args, "exam_set", None) or mcq.read_exam_dir(repo_path(args.data_dir), max(args.shots))
    rows = []
    for k in args.shots:
        task = f"{exam.name}_{k}shot"
        questions = [q for qs in exam.questions.values() for q in mcq.subsample(qs, args.limit, args.seed)]
        prompts = [mcq.build_prompt(q, exam.shots[q.subject][:k] if k else []) for q in questions]
        scores, lengths = letter_logprobs(model, tokenizer, prompts, batch_size=args.batch_size)
        handled = trained_context_len(model.config)
        if max(lengths) > handled:
            info(f"note: {task} prompts run up to {max(lengths)} tokens, beyond the {handled} positions this model "
                 f"handles; fewer --shots keep them inside")
        per = defaultdict(lambda: [0, 0])
        for q, s in zip(questions, scores):
            per[q.subject][0] += int(argmax_first(s) == q.answer)
            per[q.subject][1] += 1
        for subject, (correct, n) in per.items():
            rows.append(metric(label, source, task, subject, "acc", correct / n, n=n, correct=correct, chance=0.25,
                               ci95=list(wilson_interval(correct, n)), primary=False, per_subject=True))
        correct, n = sum(c for c, _ in per.values()), sum(n for _, n in per.values())
        extra = {"subjects": len(per), "split": exam.split, "shots": k, "chance": 0.25,
                 "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1), "prompt_tokens_max": max(lengths)}
        rows.append(metric(label, source, task, "all", "acc", correct / n, n=n, correct=correct,
                           ci95=list(wilson_interval(correct, n)), primary=True, **extra))
        mean = sum(c / n_ for c, n_ in per.values()) / len(per)
        rows.append(metric(label, source, task, "subject_mean", "acc", mean, n=n,
                           ci95=list(mcq.subject_mean_interval(list(per.values()), seed=args.seed)),
                           interval="bootstrap", primary=False, **extra))
    return rows


def lm_eval_metrics(label: str, source: str, model, tokenizer, args) -> list:
    """Run EleutherAI lm-eval's tasks (e.g. ceval-valid, cmmlu) on the loaded model itself (HFLM accepts a model
    instance), so native .pth weights need no export; the task data comes from the Hugging Face hub (or its
    cache) as lm-eval arranges."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--lm_eval_tasks needs EleutherAI's lm-eval: pip install -r requirements-eval.txt") from None
    lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=args.batch_size)
    manager = TaskManager(include_path=args.lm_eval_include) if args.lm_eval_include else TaskManager()
    tasks = [t for t in args.lm_eval_tasks.split(",") if t]
    result = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=args.limit or None)
    rows = []
    for task, values in sorted(result["results"].items()):
        for key, value in sorted(values.items()):
            name, _, _ = key.partition(",")
            if isinstance(value, (int, float)) and not name.endswith("_stderr") and name != "alias":
                rows.append(metric(label, source, f"lm_eval:{task}", "all", name, float(value),
                                   stderr=values.get(f"{name}_stderr,none"), primary=name == "acc"))
    return rows


def parse_mc_sets(specs: list) -> list:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--mc_sets {spec}: expected NAME=PATH, e.g. idiom=dataset/demo/eval_idiom_mc.jsonl")
        out.append((name, repo_path(path)))
    return out


# ------------------------------------------------------------------------------------------------------- output

def format_value(row: dict) -> str:
    v = row["value"]
    if row["metric"] == "bits_per_char":
        return f"{v:.3f}"
    if "ci95" in row:
        lo, hi = row["ci95"]
        return f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(rows: list) -> str:
    """Rows = (task, subset, metric), columns = models in the order first seen; '*' marks the primary metric."""
    hidden = {(r["task"], r["subset"]) for r in rows if r.get("per_subject")}
    rows = [r for r in rows if not r.get("per_subject")]  # C-Eval has 52 subjects: their rows stay in the JSON lines
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = list(dict.fromkeys((r["task"], r["subset"], r["metric"]) for r in rows))
    cell = {(r["task"], r["subset"], r["metric"], r["model"]): r for r in rows}
    lines = ["| task | subset | metric | chance | n | " + " | ".join(models) + " |",
             "|---|---|---|---|---|" + "---|" * len(models)]
    for task, subset, name in keys:
        some = next(cell[(task, subset, name, m)] for m in models if (task, subset, name, m) in cell)
        chance = f"{100 * some['chance']:.1f}%" if "chance" in some else ""
        star = "*" if some.get("primary") else ""
        values = [format_value(cell[(task, subset, name, m)]) if (task, subset, name, m) in cell else "-"
                  for m in models]
        lines.append(f"| {task} | {subset} | {name}{star} | {chance} | {some.get('n', '')} | "
                     + " | ".join(values) + " |")
    lines.append("")
    lines.append("bits_per_char: lower is better. MC: accuracy [95% Wilson interval]; * = primary metric "
                 "(acc_norm = log-prob per character of the choice).")
    if hidden:
        lines.append(f"C-Eval/CMMLU: all = every question pooled [Wilson], subject_mean = mean over subjects "
                     f"[bootstrap]; the {len(hidden)} per-subject rows are in the JSON lines.")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiniMind 评测：留出集 bits/字、选择题、生成检查 / evaluation harness: held-out "
                                            "bits per character, multiple choice, generation checks",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    add = p.add_argument_group("evaluation / 评测").add_argument
    add("--compare", nargs="+", default=None, metavar="MODEL",
        help="比较多个模型 / evaluate several models side by side: 'untrained' (random init with --weight's sizes), "
             "stage names in --save_dir, .pth paths or transformers folders, each optionally +LORA_NAME")
    add("--tasks", nargs="+", default=None, choices=TASKS,
        help="要跑的任务，默认 heldout mc gen；给了 --data_dir 时默认只跑 exam / tasks to run (default: heldout mc gen; "
             "exam alone when --data_dir is given)")
    add("--data_dir", default=None,
        help="本地 C-Eval（val/ dev/）或 CMMLU（test/ dev/）目录，自动识别 / a C-Eval or CMMLU folder on disk")
    add("--shots", type=int, nargs="+", default=[0, 5],
        help="exam 的示例题数，取自同科目 dev / solved dev-split examples per prompt, one run per value")
    add("--heldout_path", default=HELDOUT, help="留出集 JSONL（或 {domain}.jsonl 目录）/ held-out texts")
    add("--mc_sets", nargs="+", default=MC_SETS, metavar="NAME=PATH", help="选择题集 / multiple-choice JSONL sets")
    add("--rl_path", default=RL_SET, help="带参考答案的 RL 提示集 / prompts with reference answers (rlaif format)")
    add("--limit", type=int, default=0,
        help="每个任务（exam：每个科目）最多评测条数，0 = 全部 / items per held-out/MC task, per subject for exam (0 = all)")
    add("--gen_limit", type=int, default=100, help="生成检查的条数 / rule-checked generation items (0 = all)")
    add("--max_chars", type=int, default=0, help="每条留出文本的最多字符，0 = 全文 / cut texts to N characters")
    add("--window", type=int, default=512, help="留出集每段 token 数 / tokens per scoring window (bos included)")
    add("--batch_size", type=int, default=16, help="每批序列数 / sequences per forward")
    add("--max_new_tokens", type=int, default=48, help="生成检查的最大新 token / max tokens per generated answer")
    add("--seed", type=int, default=0, help="子集抽样与未训练模型初始化的种子 / seed for subsets and the untrained model")
    add("--output", default=None, help="JSON lines 输出 / where the JSON lines go; default {save_dir}/eval_bench.jsonl")
    add("--lm_eval_tasks", default=None,
        help="用 lm-eval 跑的任务，逗号分隔 / lm-eval task names, e.g. ceval-valid,cmmlu (data from the HF hub)")
    add("--lm_eval_include", default=None, help="lm-eval 额外任务 YAML 目录 / folder of extra lm-eval task YAMLs")
    return p


def check_args(args) -> None:
    for flag in ("batch_size", "window", "max_new_tokens"):
        if getattr(args, flag) < (2 if flag == "window" else 1):
            raise UserError(f"--{flag} {getattr(args, flag)}: must be at least {2 if flag == 'window' else 1}")
    for flag in ("limit", "gen_limit", "max_chars"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} {getattr(args, flag)}: must be 0 or more")
    parse_mc_sets(args.mc_sets)
    if args.tasks is None:
        args.tasks = ["exam"] if args.data_dir else list(DEFAULT_TASKS)
    if "exam" in args.tasks:
        if not args.data_dir:
            raise UserError("--tasks exam needs --data_dir (a C-Eval or CMMLU folder)")
        if any(k < 0 for k in args.shots):
            raise UserError(f"--shots {' '.join(map(str, args.shots))}: must be 0 or more")
        # read (and check) the CSVs once, before any model loads: a bad row should not cost a model load
        args.exam_set = mcq.read_exam_dir(repo_path(args.data_dir), max(args.shots))


def run(args) -> list:
    """Every model of --compare (or the one --weight) on every task; writes the JSON lines, prints the table and
    returns the rows."""
    check_args(args)
    specs = args.compare or [None]
    rows = []
    for spec in specs:
        a = spec_args(args, spec) if spec is not None else copy.copy(args)
        a.untrained = getattr(a, "untrained", False)
        label = spec or (args.load_from if not is_native(args) else args.weight)
        source = describe_source(a)
        model, tokenizer = load_for_eval(a)
        rows += evaluate(a, label, model, tokenizer, source)
        del model
        gc.collect()
    output = repo_path(args.output) if args.output else repo_path(args.save_dir) / "eval_bench.jsonl"
    atomic_write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), output)
    print(markdown_table(rows), end="")
    print(f"(JSON lines / 每项指标一行: {display_path(output)})", flush=True)
    return rows
