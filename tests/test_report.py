"""scripts/report.py on a tiny pretrain -> full_sft chain (report.md with every stage, PNGs that decode), and the
metrics log of a trainer killed with SIGKILL and resumed: every step once, none missing, tokens counted on."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_main

from scripts import report
from scripts.reporting import training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--max_seq_len", "32", "--device", "cpu",
        "--log_interval", "1", "--accumulation_steps", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pretrain.jsonl"
    with open(ROOT / "dataset/demo/pretrain_demo.jsonl", encoding="utf-8") as src:
        path.write_text("".join(line for _, line in zip(range(32), src)), encoding="utf-8")
    return path


def read_log(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_report_of_a_tiny_chain_has_every_stage_and_valid_pngs(tmp_path, data):
    from trainer import train_full_sft, train_pretrain
    common = [*TINY, "--save_dir", tmp_path / "out", "--checkpoint_dir", tmp_path / "ck", "--batch_size", 4]
    assert run_main(train_pretrain.main, [*common, "--data_path", data, "--max_steps", 4]).returncode == 0
    sft = run_main(train_full_sft.main, [*common, "--data_path", ROOT / "dataset/demo/sft_demo.jsonl",
                                         "--max_steps", 3, "--log_interval", 2])
    assert sft.returncode == 0, sft.stderr
    log = read_log(tmp_path / "out" / "pretrain_64.metrics.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for key in ("total_steps", "epoch", "tokens", "loss", "loss_smooth", "lr", "tokens_per_s", "mfu_percent",
                "elapsed_s", "eta_s", "time"):
        assert key in log[-1], key
    assert log[-1]["stage"] == "pretrain" and log[-1]["tokens"] == 4 * 4 * 32  # 4 steps of 4 rows x 32 tokens
    # the first step (feedback at once), every 2nd, the final
    assert [r["step"] for r in read_log(tmp_path / "out" / "full_sft_64.metrics.jsonl")] == [1, 2, 3]

    (tmp_path / "out" / "eval_bench.jsonl").write_text(json.dumps(
        {"model": "full_sft", "source": "x", "task": "poem_mc", "subset": "all", "metric": "acc_norm", "value": 0.3,
         "n": 10, "chance": 0.25, "ci95": [0.1, 0.6], "primary": True}) + "\n{broken\n", encoding="utf-8")
    proc = run_main(report.main, ["--save_dir", tmp_path / "out"])
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert text.index("| pretrain_64 | 4 |") < text.index("| full_sft_64 | 3 |")  # chain order
    assert "| poem_mc | all | acc_norm* | 25.0% | 10 | 30.0% [10.0, 60.0] |" in text
    from PIL import Image
    for name in ("loss_all", "pretrain_64", "full_sft_64"):
        png = tmp_path / "out" / "report" / f"{name}.png"
        assert f"(report/{name}.png)" in text
        assert 5_000 < png.stat().st_size < 300_000
        with Image.open(png) as im:
            im.load()  # decodes the whole image
            assert im.size == (700, 280) if name != "loss_all" else im.size == (700, 350)


def test_report_without_logs_or_eval_says_what_to_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        report.main(["--save_dir", str(tmp_path)])
    assert e.value.code == 2
    assert "scripts/eval_bench.py" in capsys.readouterr().err


def test_read_metrics_skips_a_partial_last_line(tmp_path):
    f = tmp_path / "x.metrics.jsonl"
    f.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo', encoding="utf-8")
    assert [r["step"] for r in training.read_metrics(f)] == [1, 2]
    assert training.wall_seconds([{"elapsed_s": 5}, {"elapsed_s": 9}, {"elapsed_s": 2}, {"elapsed_s": 4}]) == 13


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_killed_and_resumed_trainer_continues_its_metrics_log(tmp_path, data):
    from trainer import train_pretrain
    common = [*TINY, "--data_path", data, "--batch_size", 2, "--epochs", 2, "--save_interval", 4,
              "--save_dir", tmp_path / "out", "--checkpoint_dir", tmp_path / "ck"]  # 32 steps, saves every 4
    log = tmp_path / "out" / "pretrain_64.metrics.jsonl"
    ckpt = tmp_path / "ck" / "pretrain_64_resume.pth"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "trainer/train_pretrain.py"), *map(str, common)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill between saves: the log is past the saved step, so the resume must drop the lines after it
    while time.time() < deadline and proc.poll() is None:
        steps = [int(line.split(",")[0].split(":")[1]) for line in
                 (log.read_text(encoding="utf-8").splitlines() if log.is_file() else []) if line.endswith("}")]
        if ckpt.exists() and steps and steps[-1] % 4 != 0 and steps[-1] > 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [r["step"] for r in training.read_metrics(log)]
    assert before and before[-1] < 32, "the run finished before it could be killed"
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"step": 99, "lo')  # what a kill in the middle of a write leaves
    resumed = run_main(train_pretrain.main, [*common, "--from_resume", 1])
    assert resumed.returncode == 0, resumed.stderr
    rows = read_log(log)  # every line parses: the partial one is gone
    assert [r["step"] for r in rows] == list(range(1, 33))
    assert [r["tokens"] for r in rows] == [2 * 32 * s for s in range(1, 33)]
    assert [r["epoch"] for r in rows] == [1] * 16 + [2] * 16
