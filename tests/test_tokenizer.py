"""Tests for the committed tokenizer in model/ and for trainer/train_tokenizer.py."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "trainer" / "train_tokenizer.py"
TAGS = ["<think>", "</think>", "<answer>", "</answer>",
        "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
SYS = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
WEATHER = {"name": "get_weather", "description": "查询城市天气",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_JSON = ('{"name": "get_weather", "description": "查询城市天气", "parameters": {"type": "object", '
                '"properties": {"city": {"type": "string"}}, "required": ["city"]}}')
TIME = {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}
TIME_JSON = '{"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}'
TOOLS_FOOTER = ("\n</tools>\n\nTo call one, answer with a JSON object inside tool_call tags:\n"
                '<tool_call>\n{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call>'
                "<|im_end|>\n")
TOOLS_HEADER = "You can call these functions, described one JSON object per line:\n<tools>\n"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(REPO_ROOT / "model")


def render(tok, messages, **kwargs):
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


# ---------------------------------------------------------------- vocabulary and ids

def test_vocab_size(tok):
    assert len(tok) == 6400
    assert tok.backend_tokenizer.get_vocab_size() == 6400


def test_special_ids(tok):
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 0, 1, 2)
    assert tok.convert_tokens_to_ids(TAGS) == list(range(3, 11))


@pytest.mark.parametrize("tag_id", range(3, 11))
def test_tag_is_one_id_and_survives_skip_special(tok, tag_id):
    tag = TAGS[tag_id - 3]
    text = f"好{tag}\n推理{tag}end"
    ids = tok(text)["input_ids"]
    assert ids.count(tag_id) == 2
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_reasoning_text_keeps_tags_when_skipping_specials(tok):
    text = "好<think>\n推理</think>\n<answer>\n答案</answer>"
    ids = tok.encode("<|im_start|>assistant\n" + text + "<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n" + text


def test_no_bos_eos_added(tok):
    ids = tok("你好")["input_ids"]
    assert ids == tok.backend_tokenizer.encode("你好", add_special_tokens=False).ids
    assert not {0, 1, 2} & set(ids)
    assert tok.encode("你好", add_special_tokens=True) == ids


@pytest.mark.parametrize("text", [
    "你好，世界！MiniMind 是一个小模型。",
    "Hello, world!  Two spaces, a tab\tand a trailing space ",
    " leading space, then emoji 🚀🎉 and a family 👨‍👩‍👧 and 日本語 and ١٢٣",
    "床前明月光，疑是地上霜。\n\n举头望明月，低头思故乡。",
    "code: def f(x):\n    return x ** 2  # 平方",
])
def test_round_trip_lossless(tok, text):
    assert tok.decode(tok.encode(text)) == text


# ---------------------------------------------------------------- chat template

def test_default_system_and_generation_prompt(tok):
    out = render(tok, [{"role": "user", "content": "你好"}], add_generation_prompt=True)
    assert out == SYS + "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"


def test_given_system_kept_and_multi_turn(tok):
    msgs = [{"role": "system", "content": "你是小助手"}, {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"}, {"role": "user", "content": "谢谢"}]
    assert render(tok, msgs) == ("<|im_start|>system\n你是小助手<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n"
                                 "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\n谢谢<|im_end|>\n")


def test_enable_thinking(tok):
    msgs = [{"role": "user", "content": "hi"}]
    prompt = SYS + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render(tok, msgs, add_generation_prompt=True, enable_thinking=False) == prompt + "<think>\n\n</think>\n\n"
    assert render(tok, msgs, add_generation_prompt=True, enable_thinking=True) == prompt
    assert render(tok, msgs, add_generation_prompt=False, enable_thinking=False) == SYS + "<|im_start|>user\nhi<|im_end|>\n"


def test_openai_tools_argument(tok):
    out = render(tok, [{"role": "user", "content": "北京天气？"}],
                 tools=[{"type": "function", "function": WEATHER}, TIME], add_generation_prompt=True)
    assert out == ("<|im_start|>system\nYou are a helpful assistant\n\n" + TOOLS_HEADER + WEATHER_JSON + "\n"
                   + TIME_JSON + TOOLS_FOOTER + "<|im_start|>user\n北京天气？<|im_end|>\n<|im_start|>assistant\n")


def test_system_functions_convention(tok):
    msgs = [{"role": "system", "content": "你是天气助手", "functions": [WEATHER, TIME]},
            {"role": "user", "content": "北京天气？"}]
    out = render(tok, msgs)
    assert out == ("<|im_start|>system\n你是天气助手\n\n" + TOOLS_HEADER + WEATHER_JSON + "\n" + TIME_JSON
                   + TOOLS_FOOTER + "<|im_start|>user\n北京天气？<|im_end|>\n")
    # tools= and functions are joined, tools= first
    both = render(tok, [{"role": "system", "content": "S", "functions": [WEATHER]}], tools=[TIME])
    assert both == "<|im_start|>system\nS\n\n" + TOOLS_HEADER + TIME_JSON + "\n" + WEATHER_JSON + TOOLS_FOOTER


def test_assistant_tool_calls_and_tool_responses(tok):
    msgs = [
        {"role": "user", "content": "北京和上海天气？"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "上海"}'}},
        ]},
        {"role": "tool", "content": '{"temp": 25}'},
        {"role": "tool", "content": "多云"},
        {"role": "assistant", "content": "北京 25 度，上海多云。"},
    ]
    assert render(tok, msgs) == (
        SYS + "<|im_start|>user\n北京和上海天气？<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "上海"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n"
        '<tool_response>\n{"temp": 25}\n</tool_response>\n<tool_response>\n多云\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n北京 25 度，上海多云。<|im_end|>\n")


def test_tool_call_after_content_and_single_tool_response(tok):
    msgs = [{"role": "assistant", "content": "我查一下。",
             "tool_calls": [{"type": "function", "function": {"name": "get_time", "arguments": {}}}]},
            {"role": "tool", "content": "12:00"}]
    assert render(tok, msgs) == (
        SYS + '<|im_start|>assistant\n我查一下。\n<tool_call>\n{"name": "get_time", "arguments": {}}\n'
        "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n")


def test_reasoning_content(tok):
    msgs = [{"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2", "reasoning_content": "一加一等于二"}]
    assert render(tok, msgs) == (SYS + "<|im_start|>user\n1+1?<|im_end|>\n"
                                 "<|im_start|>assistant\n<think>\n一加一等于二\n</think>\n2<|im_end|>\n")


def test_unknown_role_raises(tok):
    with pytest.raises(Exception, match='Unknown role "robot"'):
        render(tok, [{"role": "robot", "content": "beep"}])


def test_template_lives_in_tokenizer_config():
    config = json.loads((REPO_ROOT / "model" / "tokenizer_config.json").read_text(encoding="utf-8"))
    spec = importlib.util.spec_from_file_location("train_tokenizer", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert config["chat_template"] == script.CHAT_TEMPLATE  # re-running the script reproduces it
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["add_bos_token"], config["add_eos_token"], config["model_max_length"]) == (False, False, 32768)
    assert not (REPO_ROOT / "model" / "chat_template.jinja").exists()


# ---------------------------------------------------------------- the training script

TINY_CORPUS = [
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",
    "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    "今天天气很好，我们一起去公园散步吧。",
    "机器学习是人工智能的一个分支，语言模型可以生成文本。",
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers split text into pieces that a model can read.",
    "Small language models can be trained on a single machine.",
]


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_script_trains_small_tokenizer(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for i in range(60):
            line = TINY_CORPUS[i % len(TINY_CORPUS)]
            f.write(json.dumps({"text": f"{line} 第{i}行 line {i}"}, ensure_ascii=False) + "\n")
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    (heldout / "poetry.jsonl").write_text(json.dumps({"text": TINY_CORPUS[0]}, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    out_dir = tmp_path / "tok"
    result = run_script("--corpus", corpus, "--heldout", heldout, "--out_dir", out_dir, "--vocab_size", 400)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["domain"] == "poetry" and lines[0]["chars"] == len(TINY_CORPUS[0])
    assert lines[0]["chars_per_token"] == round(lines[0]["chars"] / lines[0]["tokens"], 3)
    assert lines[-1]["vocab_size"] == 400

    small = AutoTokenizer.from_pretrained(out_dir)
    assert len(small) == 400
    assert small.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + TAGS) == list(range(11))
    assert small.decode(small("春眠<think>x</think>")["input_ids"], skip_special_tokens=True) == "春眠<think>x</think>"
    assert not list(out_dir.glob(".tokenizer-tmp-*"))  # temp dir cleaned up


def test_script_missing_corpus_message(tmp_path):
    missing = tmp_path / "nope" / "tokenizer_corpus.jsonl"
    result = run_script("--corpus", missing, "--out_dir", tmp_path / "tok")
    assert result.returncode != 0
    assert str(missing) in result.stderr and "scripts/build_corpus.py" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tok").exists()


def test_script_help():
    result = run_script("--help")
    assert result.returncode == 0 and "--vocab_size" in result.stdout
