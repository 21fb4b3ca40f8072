"""What a user sees while a stage runs: a line after the first optimizer step (with a real tokens/s), lines by
steps or by seconds, and Ctrl-C that stops with one line naming what was saved and the command that resumes."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
from conftest import run_main  # noqa: E402
from trainer import train_pretrain  # noqa: E402

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--max_seq_len", "64", "--device", "cpu",
        "--batch_size", "4", "--accumulation_steps", "1"]
STEP_LINE = re.compile(r"^epoch \d+/\d+ step (\d+)/\d+ loss .* tokens/s ([\d,]+)", re.M)


def test_first_step_is_logged_with_its_tokens_per_second_then_by_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_LOG_SECONDS", "3600")
    proc = run_main(train_pretrain.main, [*TINY, "--max_steps", "5", "--log_interval", "1000",
                                          "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c"])
    assert proc.returncode == 0, proc.stderr
    lines = STEP_LINE.findall(proc.stdout)
    assert [int(s) for s, _ in lines] == [1, 5], proc.stdout  # the first step and the end; 1000 steps never come
    assert all(int(tps.replace(",", "")) > 0 for _, tps in lines), proc.stdout  # no "tokens/s 0" first line
    assert "(first step, " in proc.stdout
    assert "training 5 steps (of 5)" in proc.stdout and "a line after step 1" in proc.stdout


def test_lines_come_by_seconds_when_steps_are_slow(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_LOG_SECONDS", "0")  # every step is "a long time" after the last line
    proc = run_main(train_pretrain.main, [*TINY, "--max_steps", "4", "--log_interval", "1000",
                                          "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c"])
    assert proc.returncode == 0, proc.stderr
    assert [int(s) for s, _ in STEP_LINE.findall(proc.stdout)] == [1, 2, 3, 4], proc.stdout
    rows = (tmp_path / "o" / "pretrain_64.metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4
    first, last = (json.loads(rows[i])["loss"] for i in (0, -1))
    # 4 steps: windows of one step (a quarter of the run), so the signal is step 1's loss -> step 4's
    assert f"learning signal (step 1 -> 4): loss: {first:.3f} -> {last:.3f}" in proc.stdout


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_ctrl_c_saves_says_so_in_one_line_and_the_command_resumes(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MINIMIND_LOG_SECONDS="0")
    argv = [sys.executable, str(ROOT / "trainer" / "train_pretrain.py"), *TINY, "--epochs", "100",
            "--log_interval", "1000", "--save_dir", str(tmp_path / "o"), "--checkpoint_dir", str(tmp_path / "c")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline, seen = time.time() + 240, ""
    while time.time() < deadline:  # wait for the third step's line, then Ctrl-C
        line = proc.stdout.readline()
        seen += line
        if not line or " step 3/" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, seen + out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    step = int(re.search(r"interrupted at step (\d+)/", err).group(1))
    assert step >= 3
    state = torch.load(tmp_path / "c" / "pretrain_64_resume.pth", weights_only=True)
    assert state["step"] == step and state["batches_done"] == step  # one micro-batch per step
    assert (tmp_path / "o" / "pretrain_64.pth").is_file() and "saved " in err
    resume = shlex.split(err.split("resume: ", 1)[1])
    assert resume[:2] == ["python", "trainer/train_pretrain.py"] and resume[-2:] == ["--from_resume", "1"]
    again = run_main(train_pretrain.main, [*resume[2:], "--max_steps", str(step + 2)])
    assert again.returncode == 0, again.stderr
    assert f"resumed from {tmp_path / 'c' / 'pretrain_64_resume.pth'}: epoch 1, step {step}," in again.stdout
    assert [int(s) for s, _ in STEP_LINE.findall(again.stdout)][-1] == step + 2
