"""The documented recipes tell the user what they lose and how to keep it: the tool-call data prep names the share
of dialogues over --max_length and the length that keeps them."""
import json
import re
import shlex
from types import SimpleNamespace

import pytest
import torch

from conftest import run_main
from scripts import data_prepare_toolcall, eval_tool_call
from model.runtime import ROOT
from trainer import recipes, train_dpo, train_full_sft, train_grpo, train_pretrain

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


def test_learning_signal_compares_the_mean_of_the_first_and_the_last_steps(tmp_path, monkeypatch, one_thread):
    """8 steps: windows of 2 steps (a quarter of the run), each value's mean over steps 1-2 and over steps 7-8,
    the same numbers the metrics log has for those steps."""
    monkeypatch.setenv("MINIMIND_LOG_SECONDS", "3600")
    proc = run_main(train_pretrain.main, ["--hidden_size", 64, "--num_hidden_layers", 2, "--max_seq_len", 64,
                                          "--device", "cpu", "--batch_size", 4, "--accumulation_steps", 1,
                                          "--max_steps", 8, "--log_interval", 1, "--learning_rate", 3e-3,
                                          "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c"])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "o" / "pretrain_64.metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    first, last = (rows[0]["loss"] + rows[1]["loss"]) / 2, (rows[-2]["loss"] + rows[-1]["loss"]) / 2
    assert first > last  # lr 3e-3 on repeated text: the loss falls within 8 steps
    assert f"learning signal (mean of steps 1-2 -> 7-8): loss: {first:.3f} -> {last:.3f}" in proc.stdout


def test_a_one_step_run_prints_no_learning_signal(tmp_path, one_thread):
    proc = run_main(train_pretrain.main, ["--hidden_size", 64, "--num_hidden_layers", 2, "--max_seq_len", 64,
                                          "--device", "cpu", "--batch_size", 4, "--max_steps", 1,
                                          "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c"])
    assert proc.returncode == 0, proc.stderr
    assert "learning signal" not in proc.stdout


PARSERS = {"trainer/train_dpo.py": train_dpo.get_parser, "trainer/train_full_sft.py": train_full_sft.get_parser,
           "trainer/train_grpo.py": train_grpo.get_parser,
           "scripts/data_prepare_toolcall.py": data_prepare_toolcall.build_parser,
           "scripts/eval_tool_call.py": eval_tool_call.build_parser}


def test_every_recipe_command_parses_and_the_training_pages_and_demo_summary_carry_it():
    """docs/training.md and docs/training_en.md show each recipe command exactly (one line in a fenced block), the
    demo summary's next commands include them, and each parses with its script's own parser."""
    from scripts.reporting import demo
    from test_readme import fenced_commands
    pages = [fenced_commands((ROOT / f"docs/{name}.md").read_text(encoding="utf-8"))
             for name in ("training", "training_en")]
    suggested = [cmd for _, cmd in demo.next_commands(recipes.DEMO_DIR)]
    for recipe in recipes.RECIPES:
        for command in recipe.commands:
            line = recipes.command_line(command)
            assert all(line in page for page in pages), line
            assert line in suggested, line
            PARSERS[command.script]().parse_args(shlex.split(line)[2:])
    args = train_dpo.get_parser().parse_args(recipes.argv(recipes.DPO.commands[0]))
    assert args.learning_rate > 4e-8 * 100 and args.max_pairs and args.hidden_size == 256  # MiniMind's lr stays


def test_answer_types_and_max_pairs_refuse_what_cannot_work(tmp_path, one_thread):
    tiny = ["--hidden_size", 64, "--num_hidden_layers", 2, "--device", "cpu", "--from_weight", "none",
            "--save_dir", tmp_path, "--checkpoint_dir", tmp_path]
    proc = run_main(train_grpo.main, [*tiny, "--reasoning", 0, "--answer_types", "letters"])
    assert proc.returncode == 2 and "--answer_types letters: no prompt in" in proc.stderr
    assert "choice x 400, number x 250" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_main(train_dpo.main, [*tiny, "--max_pairs", -1])
    assert proc.returncode == 2 and "--max_pairs -1" in proc.stderr


def test_check_recipes_takes_the_size_from_the_sidecar_and_names_the_demo_when_weights_are_missing(tmp_path):
    import argparse
    from model.checkpoint import save_weights
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from scripts import check_recipes
    save_weights(MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)),
                 tmp_path / "full_sft_64.pth", argparse.Namespace())
    assert recipes.start_size(str(tmp_path)) == (64, 2)
    proc = run_main(check_recipes.main, ["--save_dir", tmp_path / "empty", "--recipes", "dpo"])
    assert proc.returncode == 2 and "bash scripts/demo.sh" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------ the recipes of the demo model, on a tiny one
# Each test runs a recipe's own commands (trainer/recipes.py) in this process on a hidden-64, 2-layer model trained
# here from the bundled demo data, with the flags named in each test changed for that size (a 0.5M model needs a
# higher learning rate than the 5M demo model, and fewer steps keep the test short), and asserts its learning signal
# moves. scripts/check_recipes.py runs them unchanged on the demo model itself.

TINY_SIZE = (64, 2)
ENTRY = {"trainer/train_dpo.py": train_dpo.main, "trainer/train_full_sft.py": train_full_sft.main,
         "trainer/train_grpo.py": train_grpo.main, "scripts/data_prepare_toolcall.py": data_prepare_toolcall.main,
         "scripts/eval_tool_call.py": eval_tool_call.main}


def with_flags(args: list, **changed) -> list:
    """args with the values of the named flags replaced (added when absent)."""
    args = list(args)
    for flag, value in changed.items():
        name = f"--{flag}"
        if name in args:
            args[args.index(name) + 1] = str(value)
        else:
            args += [name, str(value)]
    return args


def run_recipe_command(command, tiny, **changed):
    args = recipes.argv(command, save_dir=str(tiny.out), checkpoint_dir=str(tiny.out / "ck"), size=TINY_SIZE)
    proc = run_main(ENTRY[command.script], with_flags(args, device="cpu", **changed) if command.trains or
                    command.evaluates else with_flags(args, **changed))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A hidden-64, 2-layer model pretrained and SFT'd on the bundled demo data (saved as pretrain_64 and
    full_sft_64, as the demo saves its 256/4 model), on one thread."""
    out = tmp_path_factory.mktemp("recipes")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    common = ["--hidden_size", 64, "--num_hidden_layers", 2, "--device", "cpu", "--save_dir", out,
              "--checkpoint_dir", out / "ck", "--max_seq_len", 128, "--batch_size", 16, "--log_interval", 1000]
    try:
        assert run_main(train_pretrain.main, [*common, "--packing", 1, "--accumulation_steps", 1,
                                              "--learning_rate", 5e-3, "--warmup_steps", 10,
                                              "--max_steps", 60]).returncode == 0
        assert run_main(train_full_sft.main, [*common, "--learning_rate", 3e-3, "--max_steps", 40]).returncode == 0
        yield SimpleNamespace(out=out)
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_dpo_recipe_raises_margin_and_accuracy(tiny):
    """The recipe's pairs-for-several-epochs run (32 pairs x 5 epochs here): the tiny model measured margin 0.02 ->
    1.04 and accuracy 0.45 -> 1.00 (means of steps 1-5 and 16-20)."""
    proc = run_recipe_command(recipes.DPO.commands[0], tiny, learning_rate=1e-3, max_pairs=32, epochs=5)
    signal = recipes.parse_signal(proc.stdout)
    (m0, m1), (a0, a1) = signal["margin"], signal["accuracy"]
    assert m1 > m0 + 0.3 and a1 > a0 + 0.25, proc.stdout[-2000:]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_grpo_recipe_reward_is_non_zero_and_rises(tiny, tmp_path):
    """The recipe's flags (number prompts only, 8 answers, short answers) on stroke-count prompts whose reference is
    always 8, from the tiny model taught to answer them much as the demo model does ("共 N 画。") with N drawn
    from 5-12: the rule reward starts near 1/8 and grows as GRPO learns to say 8. Choice prompts in the same file
    must be left out by --answer_types number (their letters would never match a number)."""
    import random
    rng = random.Random(0)
    chars = "药山水火木金土日月星云风雨雪花草鸟鱼虫马牛羊"
    ask = "汉字「{}」一共有几画？只回答一个数字。"
    sft = write_jsonl(tmp_path / "strokes_sft.jsonl", [{"conversations": [
        {"role": "user", "content": ask.format(rng.choice(chars))},
        {"role": "assistant", "content": f"共 {rng.randint(5, 12)} 画。"}]} for _ in range(256)])
    prompts = write_jsonl(tmp_path / "strokes.jsonl", [
        {"conversations": [{"role": "user", "content": ask.format(c)}, {"role": "assistant", "content": "8"}],
         "answer_type": "number"} for c in chars * 8] + [
        {"conversations": [{"role": "user", "content": "选一个字母。"}, {"role": "assistant", "content": "A"}],
         "answer_type": "choice"}] * 64)
    out = tmp_path / "out"
    sft_args = ["--hidden_size", 64, "--num_hidden_layers", 2, "--device", "cpu", "--from_weight", "full_sft",
                "--data_path", sft, "--max_seq_len", 64, "--batch_size", 16, "--learning_rate", 5e-3,
                "--epochs", 4, "--save_dir", out, "--checkpoint_dir", out / "ck", "--log_interval", 1000]
    for ext in (".pth", ".json"):
        (out / f"full_sft_64{ext}").parent.mkdir(exist_ok=True)
        (out / f"full_sft_64{ext}").write_bytes((tiny.out / f"full_sft_64{ext}").read_bytes())
    assert run_main(train_full_sft.main, sft_args).returncode == 0
    proc = run_recipe_command(recipes.GRPO.commands[0], SimpleNamespace(out=out), data_path=prompts,
                              learning_rate=3e-3, max_steps=32, max_seq_len=64, max_gen_len=16, seed=1)
    assert f"--answer_types number: {len(chars) * 8} prompts" in proc.stdout
    # measured: reward 0.375 -> 0.938 (means of steps 1-8 and 25-32); 64 tokens fit prompt + answer + <|im_end|>
    # (at 48 the SFT rows lost their <|im_end|> and the answers never stopped)
    (r0, r1) = recipes.parse_signal(proc.stdout)["reward"]
    assert r0 > 0 and r1 > r0 + 0.2, proc.stdout[-3000:]


@pytest.mark.slow
def test_tool_recipe_lifts_call_detection(tiny, tmp_path):
    """The recipe's four commands: data from --source corpus (only the CLI and format are relied on), the score of
    full_sft, tool SFT from it, the score of tool_sft. The recipe's 512 tokens (at 384, 85% of the bundled
    dialogues are too long and only calculator calls remain) and 60 steps keep it short: the
    hidden-64 model then starts a call on every case that needs one (0.00 -> 1.00) but writes no valid JSON yet
    ('<tool_call>' and nothing, or '{":":":...'), so JSON validity is checked by scripts/check_recipes.py on the
    demo model, not here."""
    out = tiny.out
    data = tmp_path / "sft_tool_call.jsonl"
    prep, before, sft, after = recipes.TOOL.commands
    # the bundled dialogues, named: with dataset/build/tool_call.jsonl present (scripts/build_corpus.py build) the
    # corpus source would read that larger file instead, whose first held-out cases rarely call a tool
    run_recipe_command(prep, tiny, output=data, input=ROOT / "dataset/demo/tool_call_demo.jsonl")
    cases = dict(data_path=tmp_path / "sft_tool_call_heldout.jsonl", max_cases=16, suite=0, max_new_tokens=64,
                 max_rounds=1)
    run_recipe_command(before, tiny, **cases, out=tmp_path / "before.jsonl")
    trained = run_recipe_command(sft, tiny, data_path=data, learning_rate=3e-3, max_steps=60,
                                 epochs=10)
    loss = recipes.parse_signal(trained.stdout)["loss"]
    assert loss[1] < loss[0] - 0.5, trained.stdout[-2000:]
    run_recipe_command(after, tiny, **cases, out=tmp_path / "after.jsonl")
    first, last = (json.loads((tmp_path / f).read_text().splitlines()[-1])["summary"]["all"]
                   for f in ("before.jsonl", "after.jsonl"))
    assert last["call_detection"] > first["call_detection"] + 0.3, (first, last)
    assert out.joinpath("tool_sft_64.pth").is_file()
