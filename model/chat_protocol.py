"""What the API server, the terminal client, the web demo and the evaluations share: how a MiniMind reply splits
into reasoning, answer and tool calls, how long a context the model takes, and how a prompt is built (ChatML, or
bos + raw text for a pretrain model), with the fixed prompt sets of `eval_llm.py auto` and scripts/eval_bench.py.

A reply is plain text with tag tokens in it (the tokenizer has `<think>`, `</think>`, `<answer>`, `</answer>`,
`<tool_call>`, `</tool_call>` as single tokens):

    <think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>              reasoning model (train_reason.py)
    <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   tool-calling model (tool_sft)

`ReplyParser` turns the text, fed piece by piece as it is generated, into events: ("reasoning", text),
("content", text) and ("tool_call", name, arguments_json). Feeding the whole reply at once gives the same events
joined, so a streamed answer always reassembles to the non-streamed one. Whitespace next to a tag is dropped
(the template's own newlines), so `reasoning_content` and `content` carry no stray "\\n".
"""
import json
import sys
import uuid
from typing import List, Optional, Sequence, Tuple

# Chat prompts of `eval_llm.py auto` and eval_bench's generation samples: general knowledge, code, English, and
# a small word problem that a `reason` model answers in its <think>/<answer> format.
CHAT_PROMPTS = [
    "请介绍一下你自己。",
    "为什么海水是咸的？",
    "用Python写一个判断素数的函数。",
    "简单解释一下光合作用的过程。",
    "给第一次去北京旅游的人一些建议。",
    "What is the capital of France, and what is it known for?",
    "Explain in two sentences what a neural network is.",
    "小明有12颗糖，分给3个朋友每人3颗，他还剩几颗？",
]
# A pretrain model has never seen the chat template; it continues raw text (bos + prompt), as in MiniMind.
PRETRAIN_PROMPTS = [
    "中国的首都是",
    "水在一个标准大气压下的沸点是",
    "长城是中国古代",
    "秋天到了，树叶",
    "人工智能的发展",
    "学习一门新语言最好的方法是",
    "The sun rises in the",
    "Python is a programming language that",
]

THINK, END_THINK = "<think>", "</think>"
ANSWER, END_ANSWER = "<answer>", "</answer>"
TOOL_CALL, END_TOOL_CALL = "<tool_call>", "</tool_call>"


def _held_prefix(text: str, words: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `words` (it may still become one)."""
    longest = 0
    for w in words:
        for k in range(min(len(w) - 1, len(text)), longest, -1):
            if text.endswith(w[:k]):
                longest = k
                break
    return longest


def parse_tool_call(block: str) -> Optional[Tuple[str, str]]:
    """(name, arguments as a JSON string) from the inside of a <tool_call> block, or None when it is not one.

    Accepted: {"name": str, "arguments": object or JSON-object string}; a missing "arguments" means {}.
    """
    try:
        call = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        return None
    args = call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return call["name"], json.dumps(args, ensure_ascii=False)


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class ReplyParser:
    """Incremental splitter of one reply into reasoning / content / tool-call events (see the module docstring).

    parse_tools=False leaves `<tool_call>` blocks in the content as text (no tools were offered).
    A block whose JSON does not parse, or that never closes, is returned as content, verbatim.
    """

    def __init__(self, parse_tools: bool = True):
        self.parse_tools = parse_tools
        self.mode = "content"  # "content", "reasoning" or "tool" (inside an open <tool_call>)
        self.buf = ""  # text not yet released: a possible tag prefix, trailing whitespace, or an open block
        self.strip_leading = True  # drop whitespace at the start of the reply and after each tag

    def _tags(self) -> List[str]:
        if self.mode == "tool":
            return [END_TOOL_CALL]
        tags = [THINK, END_THINK, ANSWER, END_ANSWER]
        if self.parse_tools and self.mode == "content":
            tags.append(TOOL_CALL)
        return tags

    def _text_event(self, text: str, events: list) -> None:
        if self.strip_leading:
            text = text.lstrip()
        if not text:
            return
        self.strip_leading = False
        kind = "reasoning" if self.mode == "reasoning" else "content"
        if events and events[-1][0] == kind:
            events[-1] = (kind, events[-1][1] + text)
        else:
            events.append((kind, text))

    def feed(self, text: str) -> list:
        """Events released by this piece of text (possibly none: a tag might be starting)."""
        self.buf += text
        events: list = []
        while True:
            tags = self._tags()
            hits = [(self.buf.find(t), t) for t in tags if t in self.buf]
            if not hits:
                break
            pos, tag = min(hits)
            before, self.buf = self.buf[:pos], self.buf[pos + len(tag):]
            if self.mode == "tool":  # the block is complete
                call = parse_tool_call(before.strip())
                if call is None:
                    self.mode = "content"
                    self.strip_leading = False
                    self._text_event(TOOL_CALL + before + END_TOOL_CALL, events)
                else:
                    events.append(("tool_call",) + call)
                    self.mode = "content"
            else:
                self._text_event(before.rstrip(), events)
                if tag == THINK:
                    self.mode = "reasoning"
                elif tag == END_THINK:
                    self.mode = "content"
                elif tag == TOOL_CALL:
                    self.mode = "tool"
            self.strip_leading = True
        if self.mode != "tool":
            held = _held_prefix(self.buf, tags)
            ready = self.buf[:len(self.buf) - held]
            body = ready.rstrip()  # trailing whitespace waits: a tag may follow and then it is dropped
            if body:
                self._text_event(body, events)
                self.buf = self.buf[len(body):]
        return events

    def finish(self) -> list:
        """Events for whatever is held back at the end of the reply."""
        events: list = []
        if self.mode == "tool":  # never closed: the model stopped (or was cut) inside the block
            self.mode, self.strip_leading = "content", False
            self._text_event(TOOL_CALL + self.buf, events)
        elif self.buf:
            self._text_event(self.buf, events)
        self.buf = ""
        return events


class StopMatcher:
    """Cuts a stream of text at the first of the request's `stop` strings, holding back a possible partial match."""

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self.held = ""

    def push(self, text: str) -> Tuple[str, bool]:
        """(text safe to release, whether a stop string was reached; then the text ends before it)."""
        if not self.stops:
            return text, False
        text, self.held = self.held + text, ""
        hits = [text.find(s) for s in self.stops if s in text]
        if hits:
            return text[:min(hits)], True
        keep = _held_prefix(text, self.stops)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def split_reply(text: str, parse_tools: bool = True) -> dict:
    """A whole reply as {"reasoning": str, "content": str, "tool_calls": [(name, arguments_json), ...]}."""
    parser = ReplyParser(parse_tools)
    out = {"reasoning": "", "content": "", "tool_calls": []}
    for event in parser.feed(text) + parser.finish():
        if event[0] == "tool_call":
            out["tool_calls"].append(event[1:])
        else:
            out[event[0]] += event[1]
    return out


def build_prompt(tokenizer, messages: list, raw: bool) -> list:
    """Token ids for the model: ChatML with the generation prompt, or bos + the last message's text for a pretrain
    model (`raw`), which has never seen the template."""
    if raw:
        return [tokenizer.bos_token_id] + tokenizer(messages[-1]["content"])["input_ids"]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text)["input_ids"]


def trained_context_len(config) -> int:
    """Prompt + reply tokens a model handles: MiniMind trains at <= 2048 positions; YaRN (inference_rope_scaling)
    stretches them 16x, up to max_position_embeddings."""
    limit = getattr(config, "max_position_embeddings", None) or 2048
    if getattr(config, "inference_rope_scaling", False):
        return limit
    # deferred: model_minimind pulls in torch and transformers (~3 s), and the terminal client imports this module
    # on machines with only `openai` installed; only a config without YaRN gets here
    from model.model_minimind import YARN_DEFAULTS
    return min(limit, YARN_DEFAULTS["original_max_position_embeddings"])


def read_questions(on_clear, prompt: str = "💬: "):
    """What the user types at a terminal chat (eval_llm.py chat, chat_openai_api.py), one stripped line at a time.

    Empty lines are skipped; `/clear` calls on_clear(); `/exit`, Ctrl-D and Ctrl-C end the chat. Piped input is
    echoed, since no terminal shows it.
    """
    echo = not sys.stdin.isatty()
    while True:
        try:
            line = input(prompt)
        except (EOFError, KeyboardInterrupt):
            print(flush=True)
            return
        question = line.strip()
        if echo:
            print(question, flush=True)
        if question == "/exit":
            return
        if question == "/clear":
            on_clear()
            print("(history cleared / 历史已清空)", flush=True)
        elif question:
            yield question


class IncrementalDecoder:
    """Text of a growing list of ids, released only in whole characters.

    A Chinese character is 3 UTF-8 bytes and an emoji 4, and byte-level BPE can split them across tokens; a
    partial character decodes to U+FFFD. So each step decodes the whole list and returns only the new suffix,
    holding everything back while the text ends in U+FFFD.
    """

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.emitted = tokenizer, [], ""

    def _text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._text()
        if text.endswith("\ufffd"):
            return ""
        new, self.emitted = text[len(self.emitted):], text
        return new

    def flush(self) -> str:
        """Whatever is held back (at the end of a reply, invalid bytes are shown as U+FFFD)."""
        text = self._text()
        new, self.emitted = text[len(self.emitted):], text
        return new
