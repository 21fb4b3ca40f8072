"""The documented recipes tell the user what they lose and how to keep it: the tool-call data prep names the share
of dialogues over --max_length and the length that keeps them."""
import json
import re

from conftest import run_main
from scripts import data_prepare_toolcall

SYSTEM = ("You are a function calling AI model. <tools>\n[{'type': 'function', 'function': {'name': 'get_price', "
          "'description': 'price', 'parameters': {'type': 'object', 'properties': {'symbol': {'type': 'string'}}}}}]"
          "\n</tools>")


def record(final: str) -> dict:
    return {"conversations": [
        {"from": "system", "value": SYSTEM}, {"from": "human", "value": "Apple?"},
        {"from": "gpt", "value": "<tool_call>\n{'name': 'get_price', 'arguments': {'symbol': 'AAPL'}}\n</tool_call>"},
        {"from": "tool", "value": "<tool_response>\n{'price': 189.5}\n</tool_response>"},
        {"from": "gpt", "value": final}]}


def test_tool_data_prep_says_how_many_dialogues_are_too_long_and_the_length_that_keeps_them(tmp_path):
    records = [record(f"Apple is at $189.5 ({i}).") for i in range(6)] + \
        [record("Apple is at $189.5. " + "It has moved a lot this year. " * (60 + i)) for i in range(4)]
    src = tmp_path / "hermes.json"
    src.write_text(json.dumps(records), encoding="utf-8")
    argv = ["--source", "hermes", "--input", src, "--output", tmp_path / "out.jsonl", "--heldout_ratio", "0.2"]
    short = run_main(data_prepare_toolcall.main, [*argv, "--max_length", "300"])
    assert short.returncode == 0, short.stderr
    note = re.search(r"note: 4 of 10 dialogues \(40%\) are longer than --max_length 300 tokens and were left out; "
                     r"--max_length (\d+) keeps them \(then train with --max_seq_len \1\)", short.stderr)
    assert note, short.stderr
    full = run_main(data_prepare_toolcall.main, [*argv, "--max_length", note.group(1)])
    assert full.returncode == 0 and "note:" not in full.stderr
    assert json.loads(full.stdout.strip().splitlines()[-1])["kept"] == 10
