"""Tokenizer parity cases (ids the browser tokenizer must reproduce) and SFT examples with their loss masks."""
import json

from dataset.lm_dataset import IGNORE_INDEX, SFTDataset


from model.runtime import ROOT

# Strings whose ids the browser tokenizer must reproduce (tests in the app compare them one by one).
PARITY_TEXTS = [
    "你好",
    "你好，世界！今天天气怎么样？",
    "Hello, world! It's 3.14159 and I'm fine.",
    "MiniMind 是一个只有 25.8M 参数的中文小模型。",
    "😀👍🏽🇨🇳 emoji 与 中文",
    "  leading   spaces\n\n\ttabs\r\nand CRLF  ",
    "<|im_start|>user\n你好<|im_end|>\n",
    "<|endoftext|><|im_end|><|im_start|>",
    "<think>\n先想一想\n</think>\n<answer>\n42\n</answer>",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>',
    "<tool_response>\n晴，25°C\n</tool_response>",
    "<thinking> is not a tag, <think> is",
    "def f(x):\n    return x ** 2  # 平方",
    "ǅ İ ß ﬁ Ω ½ ①",
    "1234567890 ９８７",
]

CHAT_CASES = [
    {"name": "plain", "messages": [{"role": "user", "content": "你好，请介绍一下你自己。"},
                                   {"role": "assistant", "content": "我是 MiniMind，一个小型语言模型。"}],
     "add_generation_prompt": False},
    {"name": "system_and_prompt", "messages": [{"role": "system", "content": "你是一个乐于助人的中文助手。"},
                                               {"role": "user", "content": "1+1 等于几？"}],
     "add_generation_prompt": True},
    {"name": "no_thinking", "messages": [{"role": "user", "content": "直接回答：天空为什么是蓝色的？"}],
     "add_generation_prompt": True, "enable_thinking": False},
    {"name": "tools", "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "查询城市天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
     "messages": [{"role": "user", "content": "北京今天天气如何？"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
                  {"role": "tool", "content": "{\"weather\": \"晴\", \"temp_c\": 25}"},
                  {"role": "assistant", "content": "北京今天晴，25°C。"}],
     "add_generation_prompt": False},
]


def tokenizer_facts(tokenizer) -> dict:
    def encode(text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"text": text, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}

    chats = []
    for case in CHAT_CASES:
        kwargs = {k: case[k] for k in ("tools", "enable_thinking") if k in case}
        text = tokenizer.apply_chat_template(case["messages"], tokenize=False,
                                             add_generation_prompt=case["add_generation_prompt"], **kwargs)
        chats.append({**case, "rendered": text, **{k: v for k, v in encode(text).items() if k != "text"}})
    added = json.loads((ROOT / "model" / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    return {"vocab_size": len(tokenizer), "bos": tokenizer.bos_token, "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
            "added_tokens": [{"id": t["id"], "content": t["content"], "special": t["special"]} for t in added],
            "parity": [encode(t) for t in PARITY_TEXTS], "chat": chats}


def sft_example_facts(tokenizer) -> list:
    examples = []
    for path, index in (("dataset/demo/sft_demo.jsonl", 0), ("dataset/demo/tool_call_demo.jsonl", 0),
                        ("dataset/demo/r1_demo.jsonl", 0)):
        ds = SFTDataset(ROOT / path, tokenizer, max_length=1024)
        ids, labels = ds.encode_chat(ds.reader[index], 1024, index)
        examples.append({"source": path, "line": index + 1, "max_length": 1024,
                         "ids": ids, "tokens": [tokenizer.decode([i]) for i in ids],
                         "trained": [label != IGNORE_INDEX for label in labels]})
    return examples


# ----------------------------------------------------------------------------------------------- deployment, Ascend
