"""Torch datasets for every training stage, read straight from MiniMind-format JSONL.

One reader (`JsonlFile`) serves all stages. It indexes the byte offset of every
non-blank line in a single numpy pass and parses a line only when it is asked
for, so a 1 GB file costs 8 bytes per line of memory, not 1 GB of Python
objects. A malformed line raises a ValueError naming file, line and problem
when it is read; with `skip_bad_lines=True` every line is validated up front
instead and bad ones are dropped and counted (`skipped_lines`).

Stages and what `__getitem__` returns:

- `PretrainDataset`   `{"text"}`                      -> (input_ids, labels)
- `SFTDataset`        `{"conversations"}`             -> (input_ids, labels)
- `DPODataset`        `{"chosen", "rejected"}`        -> dict of six tensors
- `RLAIFDataset`      `{"conversations"}` + reference -> dict with prompt text and ids

Labels are NOT shifted: the model shifts them internally, as Hugging Face
causal LMs do. Positions that carry no loss hold -100 (`IGNORE_INDEX`).
Chat rows are rendered with the tokenizer's own chat template, so the text a
model is trained on is byte-for-byte the text it sees at inference.
"""

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.jsonl_index import index_line_starts  # noqa: F401  (re-exported: dataset.lm_dataset.index_line_starts)
from dataset.token_cache import load_or_build, rank_log
from model.runtime import UserError

__all__ = [
    "IGNORE_INDEX",
    "JsonlFile",
    "Chat",
    "index_line_starts",
    "parse_text_record",
    "parse_chat_record",
    "parse_preference_record",
    "build_sft_labels",
    "pack_documents",
    "left_pad_prompts",
    "parse_jsonl_line",
    "ignored_row",
    "ChatFormat",
    "PretrainRows",
    "ChatRows",
    "PretrainDataset",
    "SFTDataset",
    "DPODataset",
    "RLAIFDataset",
]

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")
WHERE_TO_GET_DATA = (
    "Build the corpus with `python scripts/build_corpus.py --bundle`, "
    "or point --data_path at one of the demo files in dataset/demo/."
)


# --------------------------------------------------------------------------
# JSONL reading: a byte-offset index plus parse-on-read
# --------------------------------------------------------------------------

class RecordError(ValueError):
    """A record that parsed as JSON but does not have the fields a stage needs."""


def parse_jsonl_line(raw: bytes, offset: int, parse: Callable[[dict], object]):
    """One JSONL line (bytes starting at file `offset`) -> `parse(record)`; ValueError saying what is wrong."""
    try:
        text = raw.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    return parse(record)


class JsonlFile:
    """Random access to the records of a JSONL file without loading it.

    `parse` turns one decoded JSON object into the sample a stage needs and raises
    `RecordError` when a field is missing or has the wrong type. Construction
    indexes the line offsets (~1 s per GB) and parses every line once (roughly
    10 s per GB), so a broken file fails before training starts, with every bad
    line named (up to 10) instead of the first one a run happens to reach. With
    `skip_bad_lines=True` the bad lines are dropped instead, which keeps indices
    valid; `skipped_lines` holds how many were dropped.

    Safe with DataLoader workers: the file handle is opened per process.
    """

    def __init__(self, path, parse: Callable[[dict], object], skip_bad_lines: bool = False):
        self.path = Path(path)
        self.parse = parse
        self.skipped_lines = 0
        if not self.path.is_file():
            raise FileNotFoundError(f"Data file not found: {self.path}. {WHERE_TO_GET_DATA}")
        self.offsets = index_line_starts(self.path)
        self._check_lines(skip_bad_lines)
        if len(self.offsets) == 0:
            what = "no valid records" if self.skipped_lines else "no records (it is empty or all blank lines)"
            raise UserError(f"{self.path} has {what}. {WHERE_TO_GET_DATA}")
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int):
        offset = int(self.offsets[index])
        try:
            return self._parse_line(self._read_line(offset), offset)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, RecordError
            raise UserError(
                f"{self.path}:{self.line_number(offset)}: {exc}. "
                "Fix or delete that line, or skip malformed lines with --skip_bad_lines 1 "
                "(skip_bad_lines=True in Python)."
            ) from None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = state["_pid"] = None  # reopened lazily in the new process
        return state

    def __del__(self):
        if getattr(self, "_file", None) is not None:
            self._file.close()

    def line_number(self, offset: int) -> int:
        """1-based line number of the line starting at `offset` (counts newlines; error path only)."""
        count, done = 1, 0
        with open(self.path, "rb") as f:
            while done < offset:
                chunk = f.read(min(1 << 24, offset - done))
                count += chunk.count(b"\n")
                done += len(chunk)
        return count

    def _read_line(self, offset: int) -> bytes:
        # a forked DataLoader worker must not share the parent's file position
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.path, "rb")
            self._pid = os.getpid()
        self._file.seek(offset)
        return self._file.readline()

    def _parse_line(self, raw: bytes, offset: int):
        return parse_jsonl_line(raw, offset, self.parse)

    def _check_lines(self, skip: bool) -> None:
        """Parse every line once; with `skip` keep the good ones and warn about the rest, else refuse the file."""
        keep = np.ones(len(self.offsets), dtype=bool)
        first_bad = []
        with open(self.path, "rb") as f:
            offset, i = 0, 0
            for line_no, raw in enumerate(f, start=1):
                if i < len(self.offsets) and offset == self.offsets[i]:
                    try:
                        self._parse_line(raw, offset)
                    except ValueError as exc:
                        keep[i] = False
                        if len(first_bad) < 10:
                            first_bad.append(f"{self.path}:{line_no}: {exc}")
                    i += 1
                offset += len(raw)
        bad = int((~keep).sum())
        if bad and not skip:
            more = f"\n  ... and {bad - len(first_bad)} more" if bad > len(first_bad) else ""
            raise UserError(f"{self.path}: {bad} malformed line(s):\n  " + "\n  ".join(first_bad) + more
                            + "\nFix or delete them, or skip malformed lines with --skip_bad_lines 1 "
                              "(skip_bad_lines=True in Python).")
        self.skipped_lines = bad
        self.offsets = self.offsets[keep]
        if self.skipped_lines:
            warnings.warn(
                f"{self.path}: skipped {self.skipped_lines} bad line(s); first ones: "
                + "; ".join(first_bad),
                stacklevel=3,
            )


# --------------------------------------------------------------------------
# Record parsing: check fields, normalise the tool formats seen in the wild
# --------------------------------------------------------------------------

class Chat(NamedTuple):
    """A conversation ready for `apply_chat_template`."""

    messages: list
    tools: list | None


def parse_text_record(record: dict) -> str:
    """Pretraining row `{"text": str}`."""
    if "text" not in record:
        raise RecordError('missing field "text"')
    text = record["text"]
    if not isinstance(text, str):
        raise RecordError(f'field "text" must be a string, got {type(text).__name__}')
    return text


def _json_list(value, field: str) -> list:
    """Tool schemas and tool calls come as lists or as JSON strings holding a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RecordError(f'field "{field}" is a string but not valid JSON') from None
    if not isinstance(value, list):
        raise RecordError(f'field "{field}" must be a list, got {type(value).__name__}')
    return value


def _normalise_tool_call(call, where: str) -> dict:
    """Accept OpenAI `{"function": {...}}`, flat `{"name", "arguments"}`, and string arguments."""
    fn = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RecordError(f'{where}: each tool call needs a "name" string')
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass  # free-form argument text is rendered as given
    out = {"type": "function", "function": {"name": fn["name"], "arguments": arguments}}
    if "id" in call:
        out["id"] = call["id"]
    return out


def _normalise_message(message, where: str) -> dict:
    if not isinstance(message, dict):
        raise RecordError(f"{where} must be an object, got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise RecordError(f'{where} has role {role!r}; expected one of {", ".join(ROLES)}')
    out = dict(message)
    calls = out.pop("tool_calls", None)
    if calls is not None:
        out["tool_calls"] = [_normalise_tool_call(c, where) for c in _json_list(calls, f"{where}.tool_calls")]
    for key in ("content", "reasoning_content"):
        if out.get(key) is not None and not isinstance(out[key], str):
            raise RecordError(f'{where}: "{key}" must be a string, got {type(out[key]).__name__}')
    if out.get("content") is None:
        # OpenAI leaves content null on pure tool-call turns, and a system message
        # may carry only tool schemas; the template wants a string either way
        carries_something = any(out.get(k) for k in ("tool_calls", "reasoning_content", "functions", "tools"))
        if not carries_something:
            raise RecordError(f'{where} is missing "content"')
        out["content"] = ""
    return out


def _parse_messages(messages, field: str) -> list:
    if not isinstance(messages, list):
        got = "missing" if messages is None else f"a {type(messages).__name__}"
        raise RecordError(f'field "{field}" must be a non-empty list of messages, but it is {got}')
    if not messages:
        raise RecordError(f'field "{field}" is an empty list; it needs at least one message')
    return [_normalise_message(m, f"{field}[{i}]") for i, m in enumerate(messages)]


def _chat_from_messages(messages: list, record_tools, field: str) -> Chat:
    """Pull tool schemas out of a top-level "tools" field or a first system message.

    MiniMind2 keeps them in the system message's "functions" list, later files in
    a "tools" JSON string on the system message; both are passed to the template
    as `tools=` so there is one rendering path.
    """
    tools = None if record_tools is None else _json_list(record_tools, "tools")
    if messages[0]["role"] == "system":
        for key in ("functions", "tools"):
            value = messages[0].pop(key, None)
            if value and tools is None:
                tools = _json_list(value, f"{field}[0].{key}")
    return Chat(messages, tools or None)


def parse_chat_record(record: dict) -> Chat:
    """SFT/RLAIF row `{"conversations": [...], "tools"?: [...]}`."""
    messages = _parse_messages(record.get("conversations"), "conversations")
    return _chat_from_messages(messages, record.get("tools"), "conversations")


def parse_preference_record(record: dict) -> tuple[Chat, Chat]:
    """DPO row `{"chosen": [...], "rejected": [...]}` (two full conversations)."""
    return tuple(
        _chat_from_messages(_parse_messages(record.get(key), key), record.get("tools"), key)
        for key in ("chosen", "rejected")
    )


# --------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------

def pack_documents(token_lists, bos_id: int, eos_id: int, dtype=np.uint16) -> np.ndarray:
    """Concatenate documents as BOS + tokens + EOS into one flat token array."""
    lengths = [len(t) + 2 for t in token_lists]
    stream = np.empty(sum(lengths), dtype=dtype)
    pos = 0
    for tokens, n in zip(token_lists, lengths):
        stream[pos] = bos_id
        stream[pos + 1 : pos + n - 1] = tokens
        stream[pos + n - 1] = eos_id
        pos += n
    return stream


class PretrainRows:
    """Token-cache encoder of pretraining lines: each document becomes BOS + tokens + EOS (dataset/token_cache.py)."""

    has_mask = False

    def __init__(self, tokenizer, skip_bad_lines: bool = False):
        self.tokenizer, self.skip_bad_lines = tokenizer, skip_bad_lines
        self.bos_id, self.eos_id, _ = _special_ids(tokenizer)

    def settings(self) -> dict:
        return {"rows": "pretrain", "bos": self.bos_id, "eos": self.eos_id, "skip_bad_lines": self.skip_bad_lines}

    def parse_line(self, raw: bytes, offset: int) -> str:
        return parse_jsonl_line(raw, offset, parse_text_record)

    def encode(self, texts: list) -> list:
        token_lists = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [([self.bos_id, *tokens, self.eos_id], None) for tokens in token_lists]


def ignored_row(pad_id: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A row that trains nothing (labels all -100): fills a compiled run's last batch to its fixed shape."""
    return (torch.full((max_length,), pad_id, dtype=torch.long),
            torch.full((max_length,), IGNORE_INDEX, dtype=torch.long))


class PretrainDataset(Dataset):
    """Next-token prediction on `{"text": ...}` lines; returns (input_ids, labels) of max_length.

    packing=False: one document per row, BOS + tokens + EOS cut to max_length
    (a cut document loses its EOS, since it did not end there) and right-padded
    with the pad id; labels are -100 on padding. Rows shorter than max_length
    spend the rest of their compute on padding.

    packing=True: all documents are concatenated into one token stream (2 bytes
    per token, ~0.7 GB for 350M tokens), cut into full rows with labels equal
    to input_ids; the tail shorter than max_length is dropped. No compute goes
    to padding, but attention crosses document boundaries: a row can attend from
    one document into the previous one, which the BOS/EOS markers let the model
    learn to ignore (GPT-2/3 and nanoGPT train this way). Rows are deterministic,
    in file order.

    cache_dir: tokenize once into the token cache there (dataset/token_cache.py; all cores, shared by every
    rank and later run) and read rows from its memory-mapped shards. None: without a cache, packing tokenizes
    the whole file here at construction (~0.6M tokens/s on 2 CPU cores, repeated by every process) and
    packing=False tokenizes each row when it is read.
    """

    def __init__(self, data_path, tokenizer, max_length: int = 512, packing: bool = False,
                 skip_bad_lines: bool = False, cache_dir=None, log: Callable = rank_log):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.packing = packing
        self.bos_id, self.eos_id, self.pad_id = _special_ids(tokenizer)
        self.reader = self.stream = self.cache = None
        if cache_dir is not None:
            self.cache = load_or_build(data_path, tokenizer, PretrainRows(tokenizer, skip_bad_lines), cache_dir, log)
        else:
            self.reader = JsonlFile(data_path, parse_text_record, skip_bad_lines)
            self.stream = self._tokenize_all() if packing else None
        if packing and len(self) == 0:
            raise UserError(
                f"{data_path} holds {self.n_tokens} tokens, fewer than one packed row of "
                f"max_length={max_length}. Use more data or packing=False."
            )

    @property
    def skipped_lines(self) -> int:
        return (self.cache or self.reader).skipped_lines

    @property
    def n_tokens(self) -> int:
        """Tokens of the packed stream (documents with their BOS/EOS)."""
        return self.cache.n_tokens if self.cache is not None else len(self.stream)

    def _tokenize_all(self, batch_size: int = 1024) -> np.ndarray:
        dtype = np.uint16 if len(self.tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
        pieces = []
        for start in range(0, len(self.reader), batch_size):
            texts = [self.reader[i] for i in range(start, min(start + batch_size, len(self.reader)))]
            token_lists = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            pieces.append(pack_documents(token_lists, self.bos_id, self.eos_id, dtype))
        return np.concatenate(pieces)

    def __len__(self) -> int:
        if self.packing:
            return self.n_tokens // self.max_length
        return len(self.cache if self.cache is not None else self.reader)

    def __getitem__(self, index: int):
        if self.packing:
            if not 0 <= index < len(self):  # slicing past the end would give a short row
                raise IndexError(f"packed row {index} out of range (0..{len(self) - 1})")
            start = index * self.max_length
            if self.cache is not None:
                row = self.cache.span(start, start + self.max_length)
            else:
                row = self.stream[start : start + self.max_length]
            input_ids = torch.from_numpy(row.astype(np.int64))
            return input_ids, input_ids.clone()
        if self.cache is not None:
            ids = self.cache.row(index)[: self.max_length].tolist()
        else:
            tokens = self.tokenizer(self.reader[index], add_special_tokens=False)["input_ids"]
            ids = ([self.bos_id] + tokens + [self.eos_id])[: self.max_length]
        n_pad = self.max_length - len(ids)
        input_ids = torch.tensor(ids + [self.pad_id] * n_pad, dtype=torch.long)
        labels = torch.tensor(ids + [IGNORE_INDEX] * n_pad, dtype=torch.long)
        return input_ids, labels

    def __getitems__(self, indices: list) -> list:
        """A batch at once (the DataLoader calls this when it exists): packed rows from the cache in one gather."""
        if not (self.packing and self.cache is not None):
            return [self[i] for i in indices]
        if indices and not 0 <= min(indices) <= max(indices) < len(self):
            raise IndexError(f"packed rows {min(indices)}..{max(indices)} out of range (0..{len(self) - 1})")
        starts = np.asarray(indices, dtype=np.int64) * self.max_length
        batch = torch.from_numpy(self.cache.rows_at(starts, self.max_length).astype(np.int64))
        return [(row, row) for row in batch]  # the collate stacks inputs and labels into separate tensors

    def padding_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        return ignored_row(self.pad_id, self.max_length)


# --------------------------------------------------------------------------
# Chat stages: shared rendering and assistant-only labels
# --------------------------------------------------------------------------

def _special_ids(tokenizer) -> tuple[int, int, int]:
    ids = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if None in ids:
        raise UserError("the tokenizer must define bos, eos and pad tokens "
                         "(see model/tokenizer_config.json)")
    return ids


def build_sft_labels(input_ids: list, header_ids: list, newline_id: int, end_id: int) -> list:
    """Labels that train only on what the assistant says.

    A turn starts with `header_ids` (`<|im_start|>` + the tokens of "assistant")
    and its newline; labels cover everything after that up to and including the
    next `end_id` (`<|im_end|>`), so the model learns to stop. The header, the
    newline after `<|im_end|>` and all system/user/tool tokens get -100. If the
    content itself starts with whitespace, BPE may merge the header's newline into
    its first token; that token is then labelled rather than losing the turn.
    A turn cut off by truncation is labelled to the end of the sequence.
    """
    labels = [IGNORE_INDEX] * len(input_ids)
    n, h = len(input_ids), len(header_ids)
    i = 0
    while i < n:
        if input_ids[i : i + h] != header_ids:
            i += 1
            continue
        start = i + h
        if start < n and input_ids[start] == newline_id:
            start += 1
        end = start
        while end < n and input_ids[end] != end_id:
            end += 1
        stop = min(end + 1, n)  # include <|im_end|> when it is inside the sequence
        labels[start:stop] = input_ids[start:stop]
        i = stop
    return labels


class ChatFormat:
    """Renders conversations with the tokenizer's chat template and labels the assistant's tokens."""

    def __init__(self, tokenizer, enable_thinking: bool | None):
        self.tokenizer = tokenizer
        self.enable_thinking = enable_thinking
        self.bos_id, self.eos_id, self.pad_id = _special_ids(tokenizer)
        self.header_ids = [self.bos_id] + self.encode("assistant")
        newline = self.encode("\n")
        if len(newline) != 1:
            raise UserError("the tokenizer must encode '\\n' as a single token")
        self.newline_id = newline[0]

    def settings(self) -> dict:
        """What changes the tokens of a rendered chat (the token-cache key): template, thinking, special ids."""
        return {"template": self.tokenizer.chat_template, "enable_thinking": self.enable_thinking,
                "header": self.header_ids, "newline": self.newline_id, "eos": self.eos_id}

    def encode(self, text: str) -> list:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def render(self, chat: Chat, add_generation_prompt: bool = False) -> str:
        kwargs = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return self.tokenizer.apply_chat_template(
            chat.messages, tools=chat.tools, tokenize=False,
            add_generation_prompt=add_generation_prompt, **kwargs,
        )

    def labels(self, ids: list) -> list:
        return build_sft_labels(ids, self.header_ids, self.newline_id, self.eos_id)


class ChatRows:
    """Token-cache encoder of SFT lines: the rendered chat cut to max_length, and its assistant-token mask."""

    has_mask = True

    def __init__(self, fmt: ChatFormat, max_length: int, skip_bad_lines: bool = False):
        self.fmt, self.max_length, self.skip_bad_lines = fmt, max_length, skip_bad_lines

    def settings(self) -> dict:
        return {"rows": "sft", **self.fmt.settings(), "max_length": self.max_length,
                "skip_bad_lines": self.skip_bad_lines}

    def parse_line(self, raw: bytes, offset: int) -> Chat:
        return parse_jsonl_line(raw, offset, parse_chat_record)

    def encode(self, chats: list) -> list:
        texts = [self.fmt.render(chat) for chat in chats]
        out = []
        for ids in self.fmt.tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids = ids[: self.max_length]
            out.append((ids, [label != IGNORE_INDEX for label in self.fmt.labels(ids)]))
        return out


class _ChatDataset(Dataset):
    """Shared state of the chat stages: reader, template rendering, label builder."""

    def __init__(self, data_path, tokenizer, parse, enable_thinking: bool | None, skip_bad_lines: bool,
                 read_file: bool = True):
        self.tokenizer = tokenizer
        self.enable_thinking = enable_thinking
        self.fmt = ChatFormat(tokenizer, enable_thinking)
        self.bos_id, self.eos_id, self.pad_id = self.fmt.bos_id, self.fmt.eos_id, self.fmt.pad_id
        self.header_ids, self.newline_id = self.fmt.header_ids, self.fmt.newline_id
        self.reader = JsonlFile(data_path, parse, skip_bad_lines) if read_file else None
        self.rows_without_labels = 0  # per process: DataLoader workers count separately

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def skipped_lines(self) -> int:
        return self.reader.skipped_lines

    def _encode(self, text: str) -> list:
        return self.fmt.encode(text)

    def render(self, chat: Chat, add_generation_prompt: bool = False) -> str:
        return self.fmt.render(chat, add_generation_prompt)

    def encode_chat(self, chat: Chat, max_length: int, index: int) -> tuple[list, list]:
        """Token ids and assistant-only labels of one conversation, truncated to max_length."""
        ids = self._encode(self.render(chat))[:max_length]
        labels = self.fmt.labels(ids)
        if all(label == IGNORE_INDEX for label in labels):
            self._warn_no_labels(index, max_length)
        return ids, labels

    def _warn_no_labels(self, index: int, max_length: int) -> None:
        # the row still trains nothing (all -100) but does not crash; the loss of an
        # all-ignored batch is 0/0, so the trainer should skip such batches
        self.rows_without_labels += 1
        if self.rows_without_labels == 1:
            line = self.reader.line_number(int(self.reader.offsets[index]))
            warnings.warn(
                f"{self.reader.path}:{line}: no assistant token within max_length={max_length}, "
                "so the row carries no loss. Further such rows are only counted "
                "(rows_without_labels); raise max_length or shorten the prompt.",
                stacklevel=3,
            )

    def pad(self, ids: list, labels: list, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_pad = max_length - len(ids)
        return (torch.tensor(ids + [self.pad_id] * n_pad, dtype=torch.long),
                torch.tensor(labels + [IGNORE_INDEX] * n_pad, dtype=torch.long))


class SFTDataset(_ChatDataset):
    """Supervised fine-tuning on `{"conversations": [...]}`; returns (input_ids, labels).

    Roles system/user/assistant/tool; tools from a top-level "tools" field or the
    first system message's "functions"/"tools"; assistant `tool_calls` and
    `reasoning_content` are rendered by the template. Loss is on assistant turns
    only (see `build_sft_labels`). Rows are right-padded to max_length.

    cache_dir: render and tokenize every row once into the token cache there (ids cut to max_length plus a
    one-byte loss mask per token; dataset/token_cache.py) and read rows from it. None: render and tokenize
    each row when it is read.
    """

    def __init__(self, data_path, tokenizer, max_length: int = 1024,
                 enable_thinking: bool | None = None, skip_bad_lines: bool = False, cache_dir=None,
                 log: Callable = rank_log):
        super().__init__(data_path, tokenizer, parse_chat_record, enable_thinking, skip_bad_lines,
                         read_file=cache_dir is None)
        self.max_length = max_length
        self.cache = None
        if cache_dir is not None:
            rows = ChatRows(self.fmt, max_length, skip_bad_lines)
            self.cache = load_or_build(data_path, tokenizer, rows, cache_dir, log)
            self.rows_without_labels = self.cache.manifest["rows_without_labels"]
            if self.rows_without_labels:
                warnings.warn(f"{data_path}: {self.rows_without_labels} row(s) have no assistant token within "
                              f"max_length={max_length}, so they carry no loss; raise max_length or shorten the "
                              f"prompts.", stacklevel=2)

    def __len__(self) -> int:
        return len(self.cache) if self.cache is not None else len(self.reader)

    @property
    def skipped_lines(self) -> int:
        return (self.cache or self.reader).skipped_lines

    def __getitem__(self, index: int):
        if self.cache is None:
            ids, labels = self.encode_chat(self.reader[index], self.max_length, index)
            return self.pad(ids, labels, self.max_length)
        ids = self.cache.row(index).astype(np.int64)
        labels = np.where(self.cache.row_mask(index).astype(bool), ids, IGNORE_INDEX)
        n_pad = self.max_length - len(ids)
        return (torch.from_numpy(np.pad(ids, (0, n_pad), constant_values=self.pad_id)),
                torch.from_numpy(np.pad(labels, (0, n_pad), constant_values=IGNORE_INDEX)))

    def padding_row(self) -> tuple[torch.Tensor, torch.Tensor]:
        return ignored_row(self.pad_id, self.max_length)


class DPODataset(_ChatDataset):
    """Preference pairs `{"chosen": [...], "rejected": [...]}`.

    Returns a dict of LongTensors of length max_length: chosen_input_ids,
    chosen_labels, chosen_attention_mask and the same three for rejected. Labels
    are assistant-only as in SFT, so the DPO log-ratio is summed over response
    tokens only; the attention mask is 1 on real tokens, 0 on padding.
    """

    def __init__(self, data_path, tokenizer, max_length: int = 1024,
                 enable_thinking: bool | None = None, skip_bad_lines: bool = False):
        super().__init__(data_path, tokenizer, parse_preference_record, enable_thinking, skip_bad_lines)
        self.max_length = max_length

    def __getitem__(self, index: int) -> dict:
        sample = {}
        for name, chat in zip(("chosen", "rejected"), self.reader[index]):
            ids, labels = self.encode_chat(chat, self.max_length, index)
            input_ids, labels = self.pad(ids, labels, self.max_length)
            sample[f"{name}_input_ids"] = input_ids
            sample[f"{name}_labels"] = labels
            sample[f"{name}_attention_mask"] = (torch.arange(self.max_length) < len(ids)).long()
        return sample


def _parse_rlaif_record(record: dict) -> tuple[Chat, str]:
    chat = parse_chat_record(record)
    if [m["role"] for m in chat.messages] == ["assistant"]:
        raise RecordError("the conversation has no prompt before the reference answer")
    answer_type = record.get("answer_type", "")
    return chat, answer_type if isinstance(answer_type, str) else str(answer_type)


def left_pad_prompts(batch: list, pad_id: int) -> dict:
    """Collate RLAIF samples for generation: prompts left-padded so they all end at the last column.

    Returns prompt/answer/answer_type lists plus input_ids and attention_mask
    LongTensors of shape (batch, longest prompt).
    """
    width = max(len(s["prompt_ids"]) for s in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, sample in enumerate(batch):
        n = len(sample["prompt_ids"])
        input_ids[row, width - n :] = torch.as_tensor(sample["prompt_ids"], dtype=torch.long)
        attention_mask[row, width - n :] = 1
    return {
        "prompt": [s["prompt"] for s in batch],
        "answer": [s["answer"] for s in batch],
        "answer_type": [s["answer_type"] for s in batch],
        "input_ids": input_ids,
        "attention_mask": attention_mask,
    }


class RLAIFDataset(_ChatDataset):
    """Prompts for PPO/GRPO/SPO from SFT-format lines.

    A last assistant message is the reference answer (often empty in MiniMind's
    rlaif-mini); everything before it is the prompt, rendered with the generation
    prompt `<|im_start|>assistant\\n`. Returns a dict: prompt (str), prompt_ids
    (1-D LongTensor), answer (str, "" when absent) and answer_type (str, "" when
    absent). Use `dataset.collate` as the DataLoader collate_fn: it left-pads.

    A prompt longer than max_prompt_length tokens loses characters from the left
    of its last user message until it fits, so the system block (tools included)
    and the generation prompt stay intact. If even an empty user message does not
    fit, the line is reported as a ValueError.
    """

    def __init__(self, data_path, tokenizer, max_prompt_length: int = 512,
                 enable_thinking: bool | None = None, skip_bad_lines: bool = False):
        super().__init__(data_path, tokenizer, _parse_rlaif_record, enable_thinking, skip_bad_lines)
        self.max_prompt_length = max_prompt_length

    def __getitem__(self, index: int) -> dict:
        chat, answer_type = self.reader[index]
        messages, answer = chat.messages, ""
        if messages[-1]["role"] == "assistant":
            messages, answer = messages[:-1], messages[-1]["content"]
        prompt, ids = self._fit_prompt(Chat(messages, chat.tools), index)
        return {"prompt": prompt, "prompt_ids": torch.tensor(ids, dtype=torch.long),
                "answer": answer, "answer_type": answer_type}

    def collate(self, batch: list) -> dict:
        return left_pad_prompts(batch, self.pad_id)

    def _render_prompt(self, chat: Chat) -> tuple[str, list]:
        text = self.render(chat, add_generation_prompt=True)
        return text, self._encode(text)

    def _fit_prompt(self, chat: Chat, index: int) -> tuple[str, list]:
        text, ids = self._render_prompt(chat)
        if len(ids) <= self.max_prompt_length:
            return text, ids
        users = [i for i, m in enumerate(chat.messages) if m["role"] == "user"]
        if not users:
            raise self._line_error(
                index, f"the prompt is {len(ids)} tokens, over max_prompt_length="
                f"{self.max_prompt_length}, and has no user message to shorten")
        last, content = users[-1], chat.messages[users[-1]]["content"]

        def with_cut(n_chars: int) -> tuple[str, list]:
            messages = list(chat.messages)
            messages[last] = {**messages[last], "content": content[n_chars:]}
            return self._render_prompt(Chat(messages, chat.tools))

        best = with_cut(len(content))
        if len(best[1]) > self.max_prompt_length:
            raise self._line_error(
                index, f"the prompt without its last user message is still {len(best[1])} tokens, over "
                f"max_prompt_length={self.max_prompt_length}; raise it or shorten the system message")
        # binary search for the fewest characters to cut (token count grows with kept text)
        lo, hi = 0, len(content)  # cutting lo chars does not fit, cutting hi does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            attempt = with_cut(mid)
            if len(attempt[1]) <= self.max_prompt_length:
                hi, best = mid, attempt
            else:
                lo = mid
        return best

    def _line_error(self, index: int, problem: str) -> UserError:
        line = self.reader.line_number(int(self.reader.offsets[index]))
        return UserError(f"{self.reader.path}:{line}: {problem}")
