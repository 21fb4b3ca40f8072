"""Train the 6400-token byte-level BPE tokenizer and write it to model/.

训练 6400 词表的字节级 BPE 分词器，并保存到 model/。

    python scripts/build_corpus.py          # makes dataset/build/tokenizer_corpus.jsonl + heldout/
    python trainer/train_tokenizer.py       # writes model/tokenizer.json + tokenizer_config.json

The result is MiniMind-compatible: ids 0/1/2 are <|endoftext|> (pad, unk), <|im_start|> (bos) and
<|im_end|> (eos); ids 3..10 are the reasoning and tool tags, kept as ordinary (non-special) added
tokens so they survive decode(skip_special_tokens=True). tokenizer(text) adds no BOS/EOS.
After training it prints one JSON line per held-out domain with chars/token, then a summary line.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT / "dataset" / "build" / "tokenizer_corpus.jsonl"
DEFAULT_HELDOUT = REPO_ROOT / "dataset" / "build" / "heldout"
DEFAULT_OUT = REPO_ROOT / "model"

# Ids 0..2 are control tokens (skipped when decoding with skip_special_tokens=True).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Ids 3..10: one id each wherever they occur, but visible in decoded text, because the reasoning
# and tool-calling parsers read them from the model's decoded output.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>",
              "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

DEFAULT_SYSTEM = "You are a helpful assistant"

# ChatML template (Jinja). Rendered strings, exactly ("\n" is a newline):
#
# [{"role": "user", "content": "你好"}], add_generation_prompt=True
#   <|im_start|>system\nYou are a helpful assistant<|im_end|>\n
#   <|im_start|>user\n你好<|im_end|>\n
#   <|im_start|>assistant\n
# ...same with enable_thinking=False: the prompt ends <|im_start|>assistant\n<think>\n\n</think>\n\n
# A first system message replaces the default system text.
#
# tools=[{"type": "function", "function": F}] (or bare F), or a first system message
# {"role": "system", "content": S, "functions": [F, ...]}; both lists are joined, tools= first:
#   <|im_start|>system\nS\n\n
#   You can call these functions, described one JSON object per line:\n
#   <tools>\n{F1 as JSON}\n{F2 as JSON}\n</tools>\n\n
#   To call one, answer with a JSON object inside tool_call tags:\n
#   <tool_call>\n{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call><|im_end|>\n
#
# {"role": "assistant", "content": C, "reasoning_content": R,
#  "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}, ...]}
#   <|im_start|>assistant\n<think>\nR\n</think>\nC\n
#   <tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n...\n</tool_call><|im_end|>\n
# (no think block without reasoning_content; no "\n" after C when C is empty; string arguments
#  are inserted verbatim, anything else through tojson)
#
# consecutive {"role": "tool", "content": T1}, {"role": "tool", "content": T2}
#   <|im_start|>user\n<tool_response>\nT1\n</tool_response>\n<tool_response>\nT2\n</tool_response><|im_end|>\n
#
# Any other role raises an error naming the role.
CHAT_TEMPLATE = r"""
{%- set ns = namespace(system='You are a helpful assistant', tools=[], start=0) -%}
{%- if tools is defined and tools -%}
    {%- set ns.tools = ns.tools + tools -%}
{%- endif -%}
{%- if messages and messages[0].role == 'system' -%}
    {%- set ns.system = messages[0].content if messages[0].content is string else '' -%}
    {%- set ns.start = 1 -%}
    {%- if messages[0].functions is defined and messages[0].functions -%}
        {%- set fs = [messages[0].functions] if messages[0].functions is string else messages[0].functions -%}
        {%- set ns.tools = ns.tools + fs -%}
    {%- endif -%}
{%- endif -%}
{{- '<|im_start|>system\n' + ns.system -}}
{%- if ns.tools -%}
    {%- if ns.system -%}{{- '\n\n' -}}{%- endif -%}
    {{- 'You can call these functions, described one JSON object per line:\n<tools>' -}}
    {%- for tool in ns.tools -%}
        {{- '\n' -}}
        {%- if tool is string -%}{{- tool -}}
        {%- elif tool.function is defined -%}{{- tool.function | tojson -}}
        {%- else -%}{{- tool | tojson -}}
        {%- endif -%}
    {%- endfor -%}
    {{- '\n</tools>\n\nTo call one, answer with a JSON object inside tool_call tags:\n' -}}
    {{- '<tool_call>\n{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- for message in messages[ns.start:] -%}
    {%- if message.content is string -%}
        {%- set content = message.content -%}
    {%- elif message.content is not defined or message.content is none -%}
        {%- set content = '' -%}
    {%- else -%}
        {%- set content = message.content | tojson -%}
    {%- endif -%}
    {%- if message.role == 'user' or message.role == 'system' -%}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' -}}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_start|>assistant\n' -}}
        {%- if message.reasoning_content is defined and message.reasoning_content -%}
            {{- '<think>\n' + message.reasoning_content + '\n</think>\n' -}}
        {%- endif -%}
        {{- content -}}
        {%- if message.tool_calls is defined and message.tool_calls -%}
            {%- for call in message.tool_calls -%}
                {%- set fn = call.function if call.function is defined else call -%}
                {%- set args = fn.arguments if fn.arguments is defined else {} -%}
                {%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
                {{- '<tool_call>\n{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
                {{- args if args is string else (args | tojson) -}}
                {{- '}\n</tool_call>' -}}
            {%- endfor -%}
        {%- endif -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or loop.previtem.role != 'tool' -%}
            {{- '<|im_start|>user\n' -}}
        {%- else -%}
            {{- '\n' -}}
        {%- endif -%}
        {{- '<tool_response>\n' + content + '\n</tool_response>' -}}
        {%- if loop.last or loop.nextitem.role != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- else -%}
        {{- raise_exception('Unknown role "' + (message.role | string) + '": this chat template accepts system, user, assistant and tool messages.') -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if enable_thinking is defined and enable_thinking is false -%}
        {{- '<think>\n\n</think>\n\n' -}}
    {%- endif -%}
{%- endif -%}
""".strip()


def fail(message: str) -> None:
    """Print a user-facing error and exit non-zero (no traceback for things the user can fix)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def iter_texts(paths: list[Path], max_chars: int):
    """Yield training texts from JSONL ("text" field) or plain-text files, stopping after max_chars.

    Streams line by line so a corpus larger than memory is fine; .txt files are yielded in chunks of
    about 4000 chars so their newlines take part in the merges, as they do inside JSONL texts.
    """
    seen = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            if path.suffix == ".jsonl":
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        fail(f"{path}:{line_no} is not a JSON object with a \"text\" field; fix or drop that line.")
                    if not isinstance(text, str):
                        fail(f"{path}:{line_no}: \"text\" must be a string, got {type(text).__name__}.")
                    seen += len(text)
                    yield text
                    if max_chars and seen >= max_chars:
                        return
            else:
                chunk = []
                size = 0
                for line in f:
                    chunk.append(line)
                    size += len(line)
                    if size >= 4000:
                        seen += size
                        yield "".join(chunk)
                        chunk, size = [], 0
                        if max_chars and seen >= max_chars:
                            return
                if chunk:
                    seen += size
                    yield "".join(chunk)
                    if max_chars and seen >= max_chars:
                        return


def build_tokenizer(texts, vocab_size: int) -> Tokenizer:
    """Train byte-level BPE on the text iterator; ids 0..10 are the special and tag tokens."""
    tok = Tokenizer(models.BPE())
    # No normalizer: NFKC would turn full-width Chinese punctuation (，：！) into ASCII and break
    # the lossless round trip. add_prefix_space=False keeps "你好" and " 你好" distinct, as MiniMind does.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + TAG_TOKENS,  # listed first, so they get ids 0..10
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever <unk>
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer registers every token in special_tokens as special; the tags must stay visible
    # in decoded text, so flip them to ordinary added tokens (still matched whole, never split).
    spec = json.loads(tok.to_str())
    for added in spec["added_tokens"]:
        if added["content"] in TAG_TOKENS:
            added["special"] = False
            added["normalized"] = False
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> list[str]:
    """Save as a transformers tokenizer; files are written to a temp dir, then renamed into place."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,  # True would turn "a ." into "a." and break round trips
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    # The temp dir sits inside out_dir so os.replace is a same-filesystem atomic rename: an
    # interrupted run leaves either the old or the new version of each file, never half a file.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tokenizer-tmp-") as tmp:
        # save_jinja_files=False keeps the template inside tokenizer_config.json (MiniMind's layout,
        # and what transformers 4.x, vLLM and llama.cpp converters read).
        fast.save_pretrained(tmp, save_jinja_files=False)
        config_path = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config.update(
            tokenizer_class="PreTrainedTokenizerFast",  # loadable by transformers 4.x and 5.x
            add_bos_token=False,
            add_eos_token=False,
            model_max_length=32768,
            chat_template=CHAT_TEMPLATE,
        )
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        names = sorted(os.listdir(tmp))
        for name in names:
            os.replace(Path(tmp) / name, out_dir / name)
    # A chat_template.jinja left by an older save would take precedence over the config's template.
    stale = out_dir / "chat_template.jinja"
    if stale.exists() and "chat_template.jinja" not in names:
        stale.unlink()
    return names


def heldout_files(paths: list[Path]) -> list[Path]:
    """Expand directories to their *.jsonl files (one file per domain, named by domain)."""
    files = []
    for path in paths:
        files += sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return files


def measure(tok: Tokenizer, path: Path) -> dict:
    """Chars per token on one held-out file (no special tokens added)."""
    chars = tokens = 0
    batch = []
    for text in iter_texts([path], max_chars=0):
        batch.append(text)
        if len(batch) == 1000:
            chars += sum(map(len, batch))
            tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
            batch = []
    if batch:
        chars += sum(map(len, batch))
        tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
    return {"domain": path.stem, "chars": chars, "tokens": tokens,
            "chars_per_token": round(chars / max(tokens, 1), 3)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train the byte-level BPE tokenizer (MiniMind-compatible, vocab 6400). "
                    "训练字节级 BPE 分词器（兼容 MiniMind，词表 6400）。")
    p.add_argument("--corpus", nargs="+", type=Path, default=[DEFAULT_CORPUS],
                   help="JSONL files with a \"text\" field, or .txt files (default: "
                        "dataset/build/tokenizer_corpus.jsonl, made by scripts/build_corpus.py). "
                        "训练语料：含 text 字段的 JSONL 或 .txt 文件。")
    p.add_argument("--heldout", nargs="+", type=Path, default=[DEFAULT_HELDOUT],
                   help="held-out JSONL files, or directories of {domain}.jsonl, for the chars/token "
                        "report (default: dataset/build/heldout/). 留出集：按领域命名的 JSONL 文件或目录。")
    p.add_argument("--vocab_size", type=int, default=6400,
                   help="total vocabulary including the 11 special/tag tokens (default 6400). "
                        "词表大小（含 11 个特殊 token）。")
    p.add_argument("--out_dir", type=Path, default=DEFAULT_OUT,
                   help="where tokenizer.json and tokenizer_config.json go (default: model/). 输出目录。")
    # The built corpus (24.3M chars) trains in ~90 s on 2 cores with 3.3 GB peak RAM; memory grows
    # about linearly with the text read, so the 50M cap keeps a careless --corpus under ~7 GB.
    p.add_argument("--max_chars", type=int, default=50_000_000,
                   help="stop reading the corpus after this many characters; 0 = no cap (default 50M, "
                        "about 2x the built corpus). 最多读取的字符数，0 表示不限。")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for path in args.corpus:
        if not path.is_file():
            fail(f"corpus file {path} not found. Build it first with: python scripts/build_corpus.py "
                 "(or pass --corpus FILE.jsonl|FILE.txt).")
    min_vocab = 256 + len(SPECIAL_TOKENS) + len(TAG_TOKENS)
    if args.vocab_size <= min_vocab:
        fail(f"--vocab_size must exceed {min_vocab} (256 byte symbols + 11 special/tag tokens).")
    if args.heldout == [DEFAULT_HELDOUT] and not DEFAULT_HELDOUT.exists():
        print(f"note: {DEFAULT_HELDOUT} not found, skipping the chars/token report "
              "(python scripts/build_corpus.py makes it).", file=sys.stderr)
        args.heldout = []
    for path in args.heldout:
        if not path.exists():
            fail(f"held-out path {path} not found; pass JSONL files or a directory of {{domain}}.jsonl.")

    start = time.time()
    tok = build_tokenizer(iter_texts(args.corpus, args.max_chars), args.vocab_size)
    train_seconds = time.time() - start
    if tok.get_vocab_size() != args.vocab_size:
        fail(f"the corpus only supports {tok.get_vocab_size()} tokens, not {args.vocab_size}: "
             "add more text or lower --vocab_size. Nothing was saved.")
    for i, token in enumerate(SPECIAL_TOKENS + TAG_TOKENS):
        assert tok.token_to_id(token) == i, f"{token} got id {tok.token_to_id(token)}, expected {i}"

    saved = save_tokenizer(tok, args.out_dir)
    for path in heldout_files(args.heldout):
        print(json.dumps(measure(tok, path), ensure_ascii=False), flush=True)
    print(json.dumps({"summary": "tokenizer", "train_seconds": round(train_seconds, 1),
                      "vocab_size": tok.get_vocab_size(), "out_dir": str(args.out_dir),
                      "files": saved}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
