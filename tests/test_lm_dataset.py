"""Tests for dataset/lm_dataset.py: exact label masks, packing, errors and MiniMind rows.

Uses the committed tokenizer in model/ but never hard-codes ordinary token ids
(only the fixed special ids 0-2), so retraining the tokenizer keeps them valid.
"""

import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: `pytest tests/` does not put the repo root on the path

import dataset.lm_dataset as lm  # noqa: E402
from dataset.lm_dataset import (  # noqa: E402
    IGNORE_INDEX, DPODataset, JsonlFile, PretrainDataset, RLAIFDataset, SFTDataset,
    build_sft_labels, index_line_starts, parse_chat_record, parse_text_record,
)

MODEL_DIR = ROOT / "model"
PAD, BOS, EOS = 0, 1, 2
GEN_PROMPT = "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


def write_jsonl(path: Path, rows) -> Path:
    """Rows are dicts (dumped as JSON) or raw strings (written as they are, for bad lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def labelled_runs(tok, input_ids, labels) -> list[str]:
    """Decode each contiguous run of labelled positions (labels must equal input_ids there)."""
    runs, current = [], []
    for token, label in zip(input_ids.tolist(), labels.tolist()):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
                current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return [tok.decode(r, skip_special_tokens=False) for r in runs]


def assistant_blocks(rendered: str) -> list[str]:
    """Character-level oracle: the text of each assistant turn plus its closing <|im_end|>."""
    return [part.split("<|im_end|>")[0] + "<|im_end|>" for part in rendered.split(GEN_PROMPT)[1:]]


def render(tok, messages, tools=None, **kwargs) -> str:
    return tok.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------- reader

def test_index_skips_blank_lines_and_reads_across_blocks(tmp_path):
    path = tmp_path / "a.jsonl"
    data = b'{"text": "a"}\n\n  \t\n {"text": "b"}\r\n\n{"text": "c"}'  # indent, CRLF, no final newline
    path.write_bytes(data)
    offsets = index_line_starts(path)
    assert offsets.dtype == np.int64
    assert offsets.tolist() == [0, data.index(b' {"text": "b"}'), data.index(b'{"text": "c"}')]
    assert index_line_starts(path, block_bytes=5).tolist() == offsets.tolist()
    reader = JsonlFile(path, parse_text_record)
    assert [reader[i] for i in range(len(reader))] == ["a", "b", "c"]


def test_reader_checks_every_line_once_at_construction(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": str(i)} for i in range(50)])
    calls = []
    real_loads = json.loads
    monkeypatch.setattr(lm.json, "loads", lambda s, *a, **k: calls.append(1) or real_loads(s, *a, **k))
    reader = JsonlFile(path, parse_text_record)
    assert len(calls) == 50 and isinstance(reader.offsets, np.ndarray) and len(reader) == 50
    assert reader[37] == "37" and len(calls) == 51  # reading a record parses just that line


def test_a_broken_file_fails_before_training_with_every_bad_line(tmp_path):
    rows = [{"text": "ok"}] * 3 + ["oops"] + [{"txt": 1}] * 12
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    with pytest.raises(lm.UserError) as err:
        JsonlFile(path, parse_text_record)
    msg = str(err.value)
    assert "13 malformed line(s)" in msg and "many.jsonl:4: invalid JSON" in msg and "many.jsonl:5: " in msg
    assert "... and 3 more" in msg and "--skip_bad_lines 1" in msg


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", [{"text": "ok"}, "", '{"text": "unterminated'])
    with pytest.raises(ValueError, match=r"broken\.jsonl:3: invalid JSON"):  # found while indexing
        JsonlFile(path, parse_text_record)


@pytest.mark.parametrize("row, problem", [
    ({"txt": "x"}, 'missing field "text"'),
    ({"text": 5}, 'field "text" must be a string, got int'),
    ([1, 2], "expected a JSON object, got list"),
])
def test_wrong_pretrain_field_is_explained(tmp_path, row, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, row])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: ") as err:
        JsonlFile(path, parse_text_record)[1]
    assert problem in str(err.value)


@pytest.mark.parametrize("row, problem", [
    ({"messages": []}, 'field "conversations" must be a non-empty list of messages, but it is missing'),
    ({"conversations": []}, 'field "conversations" is an empty list'),
    ({"conversations": "hi"}, "but it is a str"),
    ({"conversations": [{"role": "bot", "content": "x"}]}, "conversations[0] has role 'bot'"),
    ({"conversations": [{"role": "user"}]}, 'conversations[0] is missing "content"'),
    ({"conversations": [{"role": "user", "content": 3}]}, '"content" must be a string, got int'),
])
def test_wrong_chat_field_is_explained(tmp_path, row, problem):
    path = write_jsonl(tmp_path / "chat.jsonl", [row])
    with pytest.raises(ValueError, match=r"chat\.jsonl:1: ") as err:
        JsonlFile(path, parse_chat_record)[0]
    assert problem in str(err.value)


def test_skip_bad_lines_drops_and_counts(tmp_path, tok):
    path = write_jsonl(tmp_path / "mixed.jsonl",
                       [{"text": "a"}, "not json", {"text": "b"}, "", {"text": None}, {"text": "c"}])
    with pytest.warns(UserWarning, match=r"skipped 2 bad line\(s\).*mixed\.jsonl:2: invalid JSON.*mixed\.jsonl:5: "):
        reader = JsonlFile(path, parse_text_record, skip_bad_lines=True)
    assert reader.skipped_lines == 2
    assert [reader[i] for i in range(len(reader))] == ["a", "b", "c"]
    with pytest.warns(UserWarning):
        ds = PretrainDataset(path, tok, max_length=8, skip_bad_lines=True)
    assert ds.skipped_lines == 2 and len(ds) == 3


def test_empty_and_missing_files_say_what_to_do(tmp_path):
    for content in ["", "\n  \n"]:
        (tmp_path / "empty.jsonl").write_text(content)
        expected = r"empty\.jsonl has no records.*build_corpus\.py --bundle.*dataset/demo/"
        with pytest.raises(ValueError, match=expected):
            JsonlFile(tmp_path / "empty.jsonl", parse_text_record)
    with pytest.raises(FileNotFoundError, match=r"Data file not found: .*nope\.jsonl.*build_corpus\.py"):
        JsonlFile(tmp_path / "nope.jsonl", parse_text_record)
    write_jsonl(tmp_path / "allbad.jsonl", ["{", "}"])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="has no valid records"):
        JsonlFile(tmp_path / "allbad.jsonl", parse_text_record, skip_bad_lines=True)


def test_reader_survives_pickling_and_workers(tmp_path, tok):
    rows = [{"conversations": [{"role": "user", "content": f"问题{i}"},
                               {"role": "assistant", "content": f"回答{i}"}]} for i in range(8)]
    ds = SFTDataset(write_jsonl(tmp_path / "w.jsonl", rows), tok, max_length=48)
    first = ds[3]
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], first[0])
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.stack([ds[i][0] for i in range(8)]))


# ---------------------------------------------------------------- pretrain

def test_pretrain_row_has_bos_eos_padding_and_ignored_pad_labels(tmp_path, tok):
    text = "你好，世界。Hello world!"
    ds = PretrainDataset(write_jsonl(tmp_path / "p.jsonl", [{"text": text}]), tok, max_length=64)
    input_ids, labels = ds[0]
    tokens = tok(text)["input_ids"]
    n = len(tokens) + 2
    assert input_ids.dtype == labels.dtype == torch.long and input_ids.shape == (64,)
    assert input_ids[:n].tolist() == [BOS] + tokens + [EOS]
    assert input_ids[n:].eq(PAD).all() and labels[n:].eq(IGNORE_INDEX).all()
    assert torch.equal(labels[:n], input_ids[:n])


def test_pretrain_truncation_drops_eos_and_has_no_padding(tmp_path, tok):
    text = "一段很长的文本。" * 40
    ds = PretrainDataset(write_jsonl(tmp_path / "p.jsonl", [{"text": text}]), tok, max_length=10)
    input_ids, labels = ds[0]
    assert input_ids.tolist() == [BOS] + tok(text)["input_ids"][:9]
    assert torch.equal(labels, input_ids)


def test_packing_fills_rows_with_the_concatenated_documents(tmp_path, tok):
    texts = ["第一篇文章讲天气。", "Second document, in English.", "第三篇" * 20, "短"]
    ds = PretrainDataset(write_jsonl(tmp_path / "p.jsonl", [{"text": t} for t in texts]),
                         tok, max_length=16, packing=True)
    stream = [t for text in texts for t in [BOS] + tok(text)["input_ids"] + [EOS]]
    assert len(ds) == len(stream) // 16 > 1
    rows = [ds[i] for i in range(len(ds))]
    assert all(x.shape == (16,) and torch.equal(x, y) for x, y in rows)
    assert torch.cat([x for x, _ in rows]).tolist() == stream[: len(ds) * 16]
    assert len(list(ds)) == len(ds)  # iteration stops at the last full row


def test_packing_with_too_little_data_is_explained(tmp_path, tok):
    with pytest.raises(ValueError, match="fewer than one packed row"):
        PretrainDataset(write_jsonl(tmp_path / "p.jsonl", [{"text": "短"}]), tok,
                        max_length=64, packing=True)


# ---------------------------------------------------------------- SFT labels

def test_build_sft_labels_on_hand_made_ids():
    header, nl, end = [BOS, 50], 9, EOS
    ids = [BOS, 60, nl, 70, EOS, nl, BOS, 50, nl, 80, 81, EOS, nl, PAD, PAD]
    assert build_sft_labels(ids, header, nl, end) == [-100] * 9 + [80, 81, EOS] + [-100] * 3
    merged = [BOS, 50, 99, 80, EOS]  # newline merged into the content's first token
    assert build_sft_labels(merged, header, nl, end) == [-100, -100, 99, 80, EOS]
    cut = [BOS, 50, nl, 80, 81]  # truncated before <|im_end|>
    assert build_sft_labels(cut, header, nl, end) == [-100, -100, -100, 80, 81]


def check_sft_row(tok, ds, index, conversation, tools=None):
    """Labelled text == each assistant turn + <|im_end|>; never a user/system/tool content."""
    input_ids, labels = ds[index]
    rendered = render(tok, conversation, tools)
    runs = labelled_runs(tok, input_ids, labels)
    assert runs == assistant_blocks(rendered)
    n = len(tok(rendered)["input_ids"])
    assert input_ids[n:].eq(PAD).all() and labels[n:].eq(IGNORE_INDEX).all()
    for m in conversation:
        if m["role"] != "assistant" and m.get("content"):
            assert all(m["content"] not in r for r in runs)
    return runs


def test_sft_multi_turn_with_system_labels_only_assistant(tmp_path, tok):
    conv = [{"role": "system", "content": "你是一个乐于助人的助手。"},
            user("你好"),
            assistant("您好！有什么可以帮你？"),
            user("1+1等于几？"),
            assistant("等于2。")]
    ds = SFTDataset(write_jsonl(tmp_path / "s.jsonl", [{"conversations": conv}]), tok, max_length=128)
    runs = check_sft_row(tok, ds, 0, conv)
    assert runs == ["您好！有什么可以帮你？<|im_end|>", "等于2。<|im_end|>"]


def test_sft_without_system_uses_default_and_masks_it(tmp_path, tok):
    conv = [user("Hi"), assistant("Hello there.")]
    ds = SFTDataset(write_jsonl(tmp_path / "s.jsonl", [{"conversations": conv}]), tok, max_length=96)
    assert tok.decode(ds[0][0]).startswith("<|im_start|>system\n")
    assert check_sft_row(tok, ds, 0, conv) == ["Hello there.<|im_end|>"]


WEATHER_TOOL = {"name": "get_weather", "description": "查询城市天气",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}


def tool_conversation(system_extra=None):
    system = {"role": "system", "content": "你可以调用工具。", **(system_extra or {})}
    return [system,
            user("北京天气怎么样？"),
            {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function",
                             "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
            {"role": "tool", "content": '{"temp": 25, "sky": "晴"}'},
            assistant("北京今天晴，25度。")]


def test_sft_tool_call_and_tool_result(tmp_path, tok):
    conv = tool_conversation()
    row = {"conversations": conv, "tools": [WEATHER_TOOL]}
    ds = SFTDataset(write_jsonl(tmp_path / "t.jsonl", [row]), tok, max_length=400)
    runs = check_sft_row(tok, ds, 0, conv, tools=[WEATHER_TOOL])
    assert len(runs) == 2
    assert "<tool_call>" in runs[0] and "get_weather" in runs[0] and "北京" in runs[0]
    assert runs[1] == "北京今天晴，25度。<|im_end|>"
    decoded = tok.decode(ds[0][0])
    assert "<tool_response>" in decoded and "查询城市天气" in decoded  # rendered, but not labelled
    assert all("<tool_response>" not in r and "查询城市天气" not in r for r in runs)


def test_sft_tools_in_system_functions_render_like_tools_field(tmp_path, tok):
    as_field = {"conversations": tool_conversation(), "tools": [WEATHER_TOOL]}
    as_functions = {"conversations": tool_conversation({"functions": [WEATHER_TOOL]})}
    as_json_string = {"conversations": tool_conversation({"tools": json.dumps([WEATHER_TOOL])})}
    flat_call = tool_conversation({"functions": [WEATHER_TOOL]})
    flat_call[2] = {"role": "assistant", "content": None,  # OpenAI null content, string arguments
                    "tool_calls": json.dumps([{"name": "get_weather", "arguments": '{"city": "北京"}'}])}
    rows = [as_field, as_functions, as_json_string, {"conversations": flat_call}]
    ds = SFTDataset(write_jsonl(tmp_path / "t.jsonl", rows), tok, max_length=400)
    reference = ds[0]
    for i in range(1, len(rows)):
        assert torch.equal(ds[i][0], reference[0]) and torch.equal(ds[i][1], reference[1])


def test_sft_reasoning_content_is_labelled(tmp_path, tok):
    conv = [user("2+3=?"),
            {"role": "assistant", "content": "5", "reasoning_content": "两数相加得五"}]
    ds = SFTDataset(write_jsonl(tmp_path / "r.jsonl", [{"conversations": conv}]), tok, max_length=96)
    runs = check_sft_row(tok, ds, 0, conv)
    assert len(runs) == 1 and "两数相加得五" in runs[0] and runs[0].endswith("5<|im_end|>")


def test_sft_truncation_and_rows_without_assistant_tokens(tmp_path, tok):
    conv = [user("讲个故事"), assistant("从前有座山，" * 30)]
    path = write_jsonl(tmp_path / "long.jsonl", [{"conversations": conv}])
    prompt_len = len(tok(render(tok, conv[:1], add_generation_prompt=True))["input_ids"])
    input_ids, labels = SFTDataset(path, tok, max_length=prompt_len + 5)[0]
    assert labels[:prompt_len].eq(IGNORE_INDEX).all()
    assert torch.equal(labels[prompt_len:], input_ids[prompt_len:]) and EOS not in labels

    ds = SFTDataset(path, tok, max_length=prompt_len - 1)
    with pytest.warns(UserWarning, match=r"long\.jsonl:1: no assistant token within max_length"):
        _, labels = ds[0]
    assert labels.eq(IGNORE_INDEX).all() and ds.rows_without_labels == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later rows are counted, not warned
        ds[0]
    assert ds.rows_without_labels == 2


# ---------------------------------------------------------------- DPO

def test_dpo_masks_chosen_and_rejected(tmp_path, tok):
    prompt = [user("推荐一本书")]
    row = {"chosen": prompt + [assistant("《红楼梦》，文笔细腻。")],
           "rejected": prompt + [assistant("不知道。")]}
    ds = DPODataset(write_jsonl(tmp_path / "d.jsonl", [row]), tok, max_length=80)
    sample = ds[0]
    assert set(sample) == {f"{side}_{key}" for side in ("chosen", "rejected")
                           for key in ("input_ids", "labels", "attention_mask")}
    for side, answer in [("chosen", "《红楼梦》，文笔细腻。"), ("rejected", "不知道。")]:
        ids, labels, mask = (sample[f"{side}_{k}"] for k in ("input_ids", "labels", "attention_mask"))
        assert ids.shape == labels.shape == mask.shape == (80,)
        n = len(tok(render(tok, row[side]))["input_ids"])
        assert mask.tolist() == [1] * n + [0] * (80 - n)
        assert ids[n:].eq(PAD).all()
        assert labelled_runs(tok, ids, labels) == [answer + "<|im_end|>"]


# ---------------------------------------------------------------- RLAIF

def test_rlaif_splits_reference_answer(tmp_path, tok):
    rows = [{"conversations": [user("1+1=?"), assistant("2")],
             "answer_type": "number"},
            {"conversations": [user("写一首诗")]}]
    ds = RLAIFDataset(write_jsonl(tmp_path / "r.jsonl", rows), tok, max_prompt_length=64)
    first, second = ds[0], ds[1]
    assert first["answer"] == "2" and first["answer_type"] == "number"
    assert second["answer"] == "" and second["answer_type"] == ""
    for sample, question in [(first, "1+1=?"), (second, "写一首诗")]:
        assert sample["prompt"] == render(tok, [user(question)], add_generation_prompt=True)
        assert sample["prompt"].endswith("<|im_end|>\n" + GEN_PROMPT)
        assert sample["prompt_ids"].tolist() == tok(sample["prompt"])["input_ids"]
    assert "2" not in first["prompt"].split("1+1=?")[1]

    write_jsonl(tmp_path / "only_answer.jsonl", [{"conversations": [assistant("2")]}])
    with pytest.raises(ValueError, match=r"only_answer\.jsonl:1: the conversation has no prompt"):
        RLAIFDataset(tmp_path / "only_answer.jsonl", tok)[0]


def test_rlaif_truncation_keeps_template_and_cuts_user_text_from_left(tmp_path, tok):
    system = {"role": "system", "content": "SYSTEM-MARK 你是数学老师。"}
    question = "".join(f"第{i}句话。" for i in range(60)) + "最后的问题是什么？"
    conv = [system, user(question), assistant("答")]
    without_user_text = render(tok, [system, user("")], add_generation_prompt=True)
    bare = len(tok(without_user_text)["input_ids"])
    limit = bare + 12
    sample = RLAIFDataset(write_jsonl(tmp_path / "r.jsonl", [{"conversations": conv}]), tok,
                          max_prompt_length=limit)[0]
    prompt = sample["prompt"]
    assert len(sample["prompt_ids"]) <= limit
    assert prompt.startswith("<|im_start|>system\nSYSTEM-MARK 你是数学老师。")
    assert prompt.split("<|im_start|>user\n")[0] == without_user_text.split("<|im_start|>user\n")[0]
    assert prompt.endswith("<|im_end|>\n" + GEN_PROMPT)
    kept = prompt.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert kept and question.endswith(kept) and len(kept) < len(question)
    one_more = question[len(question) - len(kept) - 1:]  # cutting one character fewer must not fit
    longer = render(tok, [system, user(one_more)], add_generation_prompt=True)
    assert len(tok(longer)["input_ids"]) > limit

    with pytest.raises(ValueError, match=r"r\.jsonl:1: .*max_prompt_length=\d+; raise it"):
        RLAIFDataset(tmp_path / "r.jsonl", tok, max_prompt_length=bare - 1)[0]


def test_rlaif_collate_left_pads(tmp_path, tok):
    rows = [{"conversations": [user(q), assistant("")]}
            for q in ["短", "这是一个长得多的问题，需要更多的词元来表示。"]]
    ds = RLAIFDataset(write_jsonl(tmp_path / "r.jsonl", rows), tok)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=ds.collate)))
    short, long_ = ds[0]["prompt_ids"], ds[1]["prompt_ids"]
    width = len(long_)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, width)
    gap = width - len(short)
    assert gap > 0 and batch["input_ids"][0, :gap].eq(PAD).all()
    assert batch["input_ids"][0, gap:].tolist() == short.tolist()
    assert batch["attention_mask"][0].tolist() == [0] * gap + [1] * len(short)
    assert batch["input_ids"][1].tolist() == long_.tolist() and batch["attention_mask"][1].eq(1).all()
    assert batch["prompt"] == [ds[0]["prompt"], ds[1]["prompt"]] and batch["answer"] == ["", ""]


def test_enable_thinking_reaches_the_template(tmp_path, tok):
    path = write_jsonl(tmp_path / "r.jsonl", [{"conversations": [user("hi")]}])
    default = RLAIFDataset(path, tok)[0]["prompt"]
    no_think = RLAIFDataset(path, tok, enable_thinking=False)[0]["prompt"]
    assert default.endswith(GEN_PROMPT)
    assert no_think.startswith(default) and "<think>" in no_think[len(default):]


# ---------------------------------------------------------------- MiniMind files load unchanged

# one row per file in the exact shape of MiniMind's published files (see /work/shared/formats.md)
MINIMIND_ROWS = {
    "pretrain_hq.jsonl": (PretrainDataset, [
        {"text": "<|im_start|>鉴别一组中文文章的风格和特点，例如官方、口语、文言等。<|im_end|>"},
        {"text": "如何提高学习效率？保持专注，合理休息。"}]),
    "sft_mini_512.jsonl": (SFTDataset, [
        {"conversations": [user("请告诉我在中国古代的“四大发明”是什么？"),
                           assistant("四大发明是造纸术、印刷术、火药和指南针。")]}]),
    "sft_tool_call.jsonl": (SFTDataset, [
        {"conversations": [
            {"role": "system", "content": "", "functions": [WEATHER_TOOL]},
            user("上海天气"),
            assistant('<tool_call>\n{"name": "get_weather", "arguments": {"city": "上海"}}\n</tool_call>'),
            {"role": "tool", "content": "多云 20度"},
            assistant("上海多云，20度。")]}]),
    "dpo.jsonl": (DPODataset, [
        {"chosen": [user("你好"), assistant("你好！很高兴见到你。")],
         "rejected": [user("你好"), assistant("嗯")]}]),
    "r1_mix_1024.jsonl": (SFTDataset, [
        {"conversations": [user("3的平方是多少？"),
                           assistant("<think>\n3乘3等于9。\n</think>\n<answer>\n9\n</answer>")]}]),
    "rlaif-mini.jsonl": (RLAIFDataset, [
        {"conversations": [user("列出三种水果。"), assistant("")]}]),
}


@pytest.mark.parametrize("name", sorted(MINIMIND_ROWS))
def test_minimind_rows_load_unchanged(tmp_path, tok, name):
    cls, rows = MINIMIND_ROWS[name]
    ds = cls(write_jsonl(tmp_path / name, rows), tok)
    assert len(ds) == len(rows)
    for i, row in enumerate(rows):
        sample = ds[i]
        if cls is PretrainDataset:
            assert sample[0][0] == BOS
        elif cls is SFTDataset:
            answers = [m["content"] for m in row["conversations"] if m["role"] == "assistant"]
            assert labelled_runs(tok, *sample) == [a + "<|im_end|>" for a in answers]
        elif cls is DPODataset:
            for side in ("chosen", "rejected"):
                answer = row[side][-1]["content"]
                runs = labelled_runs(tok, sample[f"{side}_input_ids"], sample[f"{side}_labels"])
                assert runs == [answer + "<|im_end|>"]
        else:
            assert sample["prompt"].endswith(GEN_PROMPT) and sample["answer"] == ""
