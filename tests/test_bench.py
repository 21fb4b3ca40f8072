"""scripts/bench_model.py and scripts/bench_train.py on the tiny preset (CPU): they print one JSON line per result,
their equality checks hold, and the sizes come from model.model_minimind.PRESETS (the one definition)."""
import json

from conftest import run_main

from model.model_minimind import PRESETS, MiniMindConfig, MiniMindForCausalLM, count_parameters
from scripts import bench_model, bench_train


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_presets_are_the_released_sizes():
    sizes = {k: (v["hidden_size"], v["num_hidden_layers"], bool(v.get("use_moe"))) for k, v in PRESETS.items()}
    assert sizes == {"tiny": (64, 2, False), "small": (512, 8, False), "base": (768, 16, False),
                     "moe": (640, 8, True)}
    assert round(count_parameters(MiniMindForCausalLM(MiniMindConfig(**PRESETS["small"]))) / 1e6, 1) == 25.8


def test_bench_model_checks_and_decodes_the_tiny_preset():
    proc = run_main(bench_model.main, ["--preset", "tiny", "--device", "cpu", "--skip_train", "--decode_batches", 1,
                                       "--new_tokens", 4, "--columns", "engine_eager"])
    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    checks = [r for r in rows if "check" in r]
    assert checks and all(r["rows_equal"] == r["rows"] for r in checks)
    (decode,) = [r for r in rows if r.get("bench") == "decode"]
    assert decode["preset"] == "tiny" and decode["engine_eager_tokens_per_s"] > 0


def test_bench_train_times_the_training_loop_on_the_tiny_preset():
    proc = run_main(bench_train.main, ["--preset", "tiny", "--device", "cpu", "--steps", 2, "--seq_len", 32,
                                       "--batch_size", 2])
    assert proc.returncode == 0, proc.stderr
    (row,) = json_lines(proc.stdout)
    assert row["bench"] == "train_step" and row["preset"] == "tiny" and row["timed_steps"] == 2
    assert row["params_m"] == round(count_parameters(MiniMindForCausalLM(MiniMindConfig(**PRESETS["tiny"]))) / 1e6, 2)
    assert row["tokens_per_s"] > 0
