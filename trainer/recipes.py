"""The follow-up recipes on the demo model (scripts/demo.sh writes out/demo/{pretrain,full_sft}_256.pth, hidden 256,
4 layers): DPO, tool-calling SFT with its evaluation, and GRPO, each with flags that make its learning signal move
within minutes on a CPU.

MiniMind's defaults stay the defaults (they are tuned for 512/8 on the full data); on the demo model they move
nothing in that time (issue 32): DPO at lr 4e-8 stayed at loss 0.6931 and margin 0.0000 for 20 steps, tool SFT at
lr 1e-6 left every tool metric at 0.000, and the documented GRPO example logged 0 for every metric.
On the demo model itself (docs/LOG.md, session 7): DPO margin -0.007 -> 0.667 and accuracy 0.48 -> 1.00 in 60 s;
tool calling call detection 0.000 -> 0.913 and JSON validity 0.000 -> 0.891; GRPO's reward stayed at 0.013
(non-zero, not rising: this recipe does not show learning yet). The recipes pass their own flags instead, and this module is the one place they are
written: the demo's summary (scripts/reporting/demo.py), docs/training*.md (tests/test_recipes.py checks the
pages carry these exact commands) and scripts/check_recipes.py (runs them and prints what moved) all read them here.
"""
import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from model.checkpoint import resolve_weight
from model.runtime import ROOT, UserError

DEMO_DIR, DEMO_CHECKPOINTS, DEMO_SIZE = "out/demo", "checkpoints/demo", (256, 4)


@dataclass(frozen=True)
class Command:
    script: str  # path from the repository root
    flags: tuple
    trains: bool = False  # a stage script: takes --save_dir/--checkpoint_dir and the model size
    evaluates: bool = False  # reads weights from --save_dir (sizes from the sidecar)


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str  # bilingual, for the demo's summary
    commands: tuple
    signal: str  # what moves, bilingual


DPO = Recipe("dpo", "继续 DPO / go on with DPO", (
    # lr 4e-8 (MiniMind's, for 512/8) moved the margin by less than 1e-4 in 20 steps. A pair's preference here is
    # knowledge (which meaning belongs to an idiom), and a 20-step pass over fresh pairs barely moved a small
    # model (hidden 64: accuracy 0.38 -> 0.48, margin down); 4 epochs over 64 pairs show the margin and the accuracy
    # grow within minutes (hidden 64, 32 pairs x 5 epochs: margin 0.02 -> 1.04, accuracy 0.45 -> 1.00). Summed
    # log-probs: the margin is beta x a sum over ~40 answer tokens, not a mean that divides the change by 40.
    Command("trainer/train_dpo.py", ("--max_pairs", "64", "--epochs", "4", "--batch_size", "8",
                                     "--learning_rate", "1e-4", "--logp_reduce", "sum", "--max_seq_len", "256",
                                     "--log_interval", "8"), trains=True),
), "DPO margin / accuracy 上升 / up")

TOOL = Recipe("tool", "工具调用 SFT / tool-calling SFT", (
    # the corpus source (~520 dialogues under 512 tokens) is what these numbers were measured on; the default
    # `local` generator (193 real tools, 10,000 rows) is the data for a real model: 2 epochs of it at batch 8 is
    # about 2,250 steps, hours on a CPU
    Command("scripts/data_prepare_toolcall.py", ("--source", "corpus")),
    Command("scripts/eval_tool_call.py", ("--weight", "full_sft", "--max_new_tokens", "96", "--max_rounds", "2"),
            evaluates=True),
    # lr: 2e-4 started calls 85% of the time but wrote no valid JSON and 1e-6 learned nothing (issue 32); 1e-3 is
    # twice the demo's own SFT rate (not measured on the demo model; on a 0.5M model 5e-4 for these 131 steps
    # moved the loss 6.71 -> 4.51 and no metric); 2 epochs over the ~520 dialogues that fit 512 tokens
    Command("trainer/train_full_sft.py", ("--data_path", "dataset/sft_tool_call.jsonl", "--from_weight", "full_sft",
                                          "--save_weight", "tool_sft", "--max_seq_len", "512", "--batch_size", "8",
                                          "--learning_rate", "1e-3", "--warmup_steps", "10", "--epochs", "2",
                                          "--log_interval", "20"), trains=True),
    Command("scripts/eval_tool_call.py", ("--weight", "tool_sft", "--max_new_tokens", "96", "--max_rounds", "2"),
            evaluates=True),
), "call_detection / json_validity: full_sft -> tool_sft 上升 / up")

GRPO = Recipe("grpo", "GRPO（规则奖励）/ GRPO with the rule reward", (
    # the stroke-count prompts: the demo SFT data answers such questions as "「药」共 9 画。" and the rule reward
    # checks every number in the answer, so some answers can be right and a group has a better and a worse answer
    # to learn from (option letters and bare pinyin, the other types, are formats the demo data never shows);
    # short answers, so a step takes seconds. lr: 1e-5 moved nothing in 40 steps on a 0.5M model (KL to the
    # reference 3e-5, reward 0.006 -> 0.013); 1e-4 is a guess for the 5M demo model (the tiny test uses 3e-3)
    Command("trainer/train_grpo.py", ("--reasoning", "0", "--answer_types", "number", "--learning_rate", "1e-4",
                                      "--batch_size", "2", "--num_generations", "8", "--max_gen_len", "24",
                                      "--temperature", "1.0", "--max_steps", "40", "--save_interval", "1000"),
            trains=True),
), "GRPO reward 非零并上升 / non-zero and rising")

RECIPES = (DPO, TOOL, GRPO)


def argv(command: Command, save_dir: str = DEMO_DIR, checkpoint_dir: str = DEMO_CHECKPOINTS,
         size: tuple = DEMO_SIZE) -> list:
    """The command's flags for weights in `save_dir` (stage scripts also get the model size)."""
    where = []
    if command.trains:
        where = ["--save_dir", save_dir, "--checkpoint_dir", checkpoint_dir,
                 "--hidden_size", str(size[0]), "--num_hidden_layers", str(size[1])]
    elif command.evaluates:
        where = ["--save_dir", save_dir]
    return [*where, *command.flags]


def command_line(command: Command, **where) -> str:
    return shlex.join(["python", command.script, *argv(command, **where)])


def command_lines(recipe: Recipe, **where) -> list:
    return [command_line(c, **where) for c in recipe.commands]


SIGNAL_LINE = re.compile(r"learning signal \(([^)]*)\): (.*)")


def parse_signal(stdout: str) -> dict:
    """{name: (start, end)} from a stage's last 'learning signal (...): name: a -> b, ...' line; {} without one."""
    found = SIGNAL_LINE.findall(stdout)
    if not found:
        return {}
    pairs = re.findall(r"(\w+): (-?[0-9.e+-]+) -> (-?[0-9.e+-]+)", found[-1][1])
    return {k: (float(a), float(b)) for k, a, b in pairs}


def start_size(save_dir: str) -> tuple:
    """(hidden_size, layers) of the full_sft weights in `save_dir` that every recipe starts from (from the sidecar);
    a missing file is reported with the command that writes it."""
    path, sizes, _ = resolve_weight(argparse.Namespace(save_dir=save_dir, weight="full_sft", hidden_size=None,
                                                       num_hidden_layers=None, use_moe=None))
    if not path.is_file():
        raise UserError(f"{path} not found: the recipes start from the demo's full_sft; run bash scripts/demo.sh "
                        f"(it writes {DEMO_DIR}/)")
    return sizes["hidden_size"], sizes["num_hidden_layers"]


def tool_metrics(save_dir: str, weight: str) -> dict:
    """The 'all' summary of {save_dir}/tool_eval_{weight}.jsonl (scripts/eval_tool_call.py's last line)."""
    path = ROOT / save_dir / f"tool_eval_{weight}.jsonl"
    tail = json.loads(path.read_text(encoding="utf-8").strip().splitlines()[-1])
    return tail["summary"]["all"]


def run_recipe(recipe: Recipe, save_dir: str = DEMO_DIR, checkpoint_dir: str = DEMO_CHECKPOINTS,
               size: tuple = DEMO_SIZE, log=print) -> dict:
    """Run a recipe's commands as the user would (subprocesses from the repository root) and return what moved:
    {"recipe", "seconds", "signal": {name: [start, end]}} (tool calling: full_sft -> tool_sft metrics)."""
    t0, signal = time.perf_counter(), {}
    for command in recipe.commands:
        line = command_line(command, save_dir=save_dir, checkpoint_dir=checkpoint_dir, size=size)
        log(f"[recipes] {line}")
        proc = subprocess.run([sys.executable, *shlex.split(line)[1:]], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"recipe {recipe.name}: `{line}` failed (exit {proc.returncode}):\n"
                            + "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:]))
        if command.trains:
            signal.update({k: list(v) for k, v in parse_signal(proc.stdout).items()})
    if recipe is TOOL:
        before, after = tool_metrics(save_dir, "full_sft"), tool_metrics(save_dir, "tool_sft")
        signal = {**{k: [before[k], after[k]] for k in ("call_detection", "json_validity", "tool_name_accuracy")},
                  "sft_loss": signal.get("loss")}
    return {"recipe": recipe.name, "seconds": round(time.perf_counter() - t0, 1), "signal": signal}
