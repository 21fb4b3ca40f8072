"""The first-run experience: scripts/demo.sh end to end, its report (bits per character against a hand computation,
next commands that the real parsers accept), the missing-weight message that points at out/demo, the --tools
example file."""
import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
from scripts import chat_openai_api  # noqa: E402
from scripts import convert_to_hf  # noqa: E402
from scripts import demo_report  # noqa: E402
from scripts.client import chat as chat_client  # noqa: E402
from scripts.evals import bench as eval_bench  # noqa: E402
from scripts.reporting import demo as demo_logic  # noqa: E402
from trainer import train_dpo  # noqa: E402
import eval_llm  # noqa: E402
from scripts import serve_openai_api  # noqa: E402
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM  # noqa: E402
from model import checkpoint, runtime  # noqa: E402
from trainer import trainer_utils  # noqa: E402

TINY = dict(hidden_size=64, num_hidden_layers=2)
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")


@pytest.fixture(scope="module")
def tokenizer():
    return trainer_utils.load_tokenizer()


def save_tiny(folder: Path, stage: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = MiniMindForCausalLM(MiniMindConfig(**TINY))
    path = trainer_utils.weight_path(folder, stage, 64, 0)
    trainer_utils.save_weights(model, path, argparse.Namespace(stage=stage))
    return path


def test_bits_per_char_of_a_uniform_model_is_log2_vocab_per_token(tokenizer):
    model = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    for p in model.parameters():  # all-zero weights give all-zero logits: every token costs log2(6400) bits
        p.data.zero_()
    texts = [("zh", "床前明月光，疑是地上霜。"), ("en", "The quick brown fox."), ("zh", "海水为什么是咸的？")]
    got = eval_bench.bits_per_char(model, tokenizer, texts, batch_size=2)  # two batches, right-padded
    tokens = {d: 0 for d, _ in texts}
    chars = {d: 0 for d, _ in texts}
    for d, t in texts:
        tokens[d] += len(tokenizer(t)["input_ids"])  # bos predicts the first token; bos itself is not scored
        chars[d] += len(t)
    for d in ("zh", "en"):
        assert got[d] == pytest.approx(tokens[d] * math.log2(6400) / chars[d], rel=1e-5)
    assert got["all"] == pytest.approx(sum(tokens.values()) * math.log2(6400) / sum(chars.values()), rel=1e-5)


def test_bits_per_char_is_independent_of_batching(tokenizer):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    texts = eval_bench.read_heldout(ROOT / demo_logic.HELDOUT, 60)[:7]
    one = eval_bench.bits_per_char(model, tokenizer, texts, batch_size=1)
    many = eval_bench.bits_per_char(model, tokenizer, texts, batch_size=7)
    assert one.keys() == many.keys()
    for k in one:
        assert one[k] == pytest.approx(many[k], rel=1e-4)


def test_report_lists_files_scores_and_commands_the_parsers_accept(tmp_path, capsys):
    save_dir = tmp_path / "demo"
    save_tiny(save_dir, "pretrain", 1)
    save_tiny(save_dir, "full_sft", 2)
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"text": t, "domain": d}, ensure_ascii=False) + "\n"
                            for d, t in [("poetry", "白日依山尽，黄河入海流。"), ("kjv", "In the beginning.")]),
                    encoding="utf-8")
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "「床前明月光」的下一句是？", "choices": ["疑是地上霜", "黄河入海流", "更上一层楼"],
                              "answer": "A"}, ensure_ascii=False) + "\n", encoding="utf-8")
    started = time.time() - 600  # as if install + training had taken 10 minutes before the report
    assert demo_report.main(["--save_dir", str(save_dir), "--data_path", str(data), "--started_at", str(started),
                             "--stage_seconds", "install=120", "pretrain=300", "--mc_sets", f"poem={mc}",
                             "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    report = (save_dir / "demo_summary.md").read_text(encoding="utf-8")
    assert report in out
    # the time is the whole run, the report's own evaluation included
    took = re.search(r"took ([\d.]+) min \(install 2\.0 min, pretrain 5\.0 min, report ([\d.]+) min\)", report)
    assert took and float(took.group(1)) >= 10.0 and float(took.group(2)) == pytest.approx(float(took.group(1)) - 7, abs=0.15)
    for model in ("untrained", "pretrain", "full_sft"):  # a progress line per model and task while it works
        assert f"[report] {model}: held-out bits/char done in " in out
        assert f"[report] {model}: multiple choice done in " in out
    for row in ("| poetry |", "| kjv |", "| all |", "full_sft_64.pth", "full_sft_64.json", "pretrain_64.pth",
                "| domain | untrained | pretrain | full_sft |", "| poem_mc (n=1) | 33.3% |", "report.md"):
        assert row in report
    assert (save_dir / "report.md").is_file() and (save_dir / "eval_bench.jsonl").is_file()
    # every suggested command parses with the tool's own parser and points at the demo folder
    parsers = {"eval_llm.py": eval_llm.build_parser(), "serve_openai_api.py": serve_openai_api.build_parser(),
               "chat_openai_api.py": chat_openai_api.build_parser(), "convert_to_hf.py": convert_to_hf.build_parser(),
               "train_dpo.py": train_dpo.get_parser()}
    commands = [line.split("`")[1] for line in report.splitlines() if line.startswith("- ") and "`python " in line]
    assert len(commands) >= 6 and {Path(shlex.split(c)[1]).name for c in commands} >= set(parsers)
    for cmd in commands:
        argv = shlex.split(cmd)
        script = Path(argv[1]).name
        assert (ROOT / argv[1]).is_file(), cmd
        if script in parsers:
            parsers[script].parse_args(argv[2:])
        if "--save_dir" in argv:
            assert argv[argv.index("--save_dir") + 1] == str(save_dir)


def test_report_without_weights_says_run_the_demo(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        demo_report.main(["--save_dir", str(tmp_path / "nothing")])
    assert e.value.code == 2
    assert "bash scripts/demo.sh" in capsys.readouterr().err


def test_missing_weight_lists_weights_elsewhere_with_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "ROOT", tmp_path)
    monkeypatch.setattr(runtime, "ROOT", tmp_path)
    demo = save_tiny(tmp_path / "out" / "demo", "full_sft")
    save_tiny(tmp_path / "out" / "demo", "pretrain")
    msg = checkpoint.missing_weight_message(tmp_path / "out" / "full_sft_512.pth", "train it with: X")
    assert msg.startswith(f"weight file not found: {tmp_path / 'out' / 'full_sft_512.pth'}\n  train it with: X")
    assert f"{demo.relative_to(tmp_path)}: --save_dir out/demo --hidden_size 64 --num_hidden_layers 2" in msg
    assert "pretrain_64" not in msg  # only the stage asked for, when it exists somewhere
    other = checkpoint.missing_weight_message(tmp_path / "out" / "demo" / "dpo_64.pth")
    assert "full_sft_64.pth" in other and "pretrain_64.pth" in other  # no dpo anywhere: the folder's weights


def test_eval_llm_without_weights_points_at_the_demo_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint, "ROOT", tmp_path)
    monkeypatch.setattr(runtime, "ROOT", tmp_path)
    save_tiny(tmp_path / "out" / "demo", "full_sft")
    with pytest.raises(SystemExit) as e:
        eval_llm.main(["chat", "--save_dir", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "full_sft_512.pth" in err and "--save_dir out/demo" in err


def test_tools_example_loads_and_matches_the_bundled_tool_data():
    tools = chat_client.load_tools(str(ROOT / "scripts" / "tools_example.json"))
    names = {t["function"]["name"] for t in tools}
    trained = set()
    with open(ROOT / "dataset" / "demo" / "tool_call_demo.jsonl", encoding="utf-8") as f:
        for line in f:
            trained |= {fn["name"] for fn in json.loads(line)["conversations"][0].get("functions", [])}
    assert names == trained and len(names) == 4
    assert all(t["function"]["parameters"]["type"] == "object" for t in tools)


@pytest.mark.slow
def test_demo_script_runs_end_to_end_and_reports(tmp_path):
    env = dict(ENV, DEMO_DIR=str(tmp_path / "out"), DEMO_CHECKPOINT_DIR=str(tmp_path / "ckpt"), SKIP_INSTALL="1",
               PRETRAIN_STEPS="2", SFT_STEPS="2", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for n in range(2, 6):  # [1/5] is the install, skipped here
        assert f"== [{n}/5]" in proc.stdout
    assert "[report] full_sft: multiple choice done in " in proc.stdout
    assert "🤖: " in proc.stdout and "tokens/s]" in proc.stdout
    assert "deprecated" not in proc.stdout + proc.stderr
    for name in ("pretrain_256.pth", "full_sft_256.pth", "full_sft_256.json", "report.md", "demo_summary.md",
                 "eval_bench.jsonl", "pretrain_256.metrics.jsonl", "report/loss_all.png"):
        assert (tmp_path / "out" / name).is_file(), name
    report = (tmp_path / "out" / "demo_summary.md").read_text(encoding="utf-8")
    assert "| all |" in report and f"eval_llm.py chat --save_dir {tmp_path / 'out'}" in report
    assert "| idiom_mc (n=296) | 25.0% |" in report and "| pretrain_256 |" in (tmp_path / "out" / "report.md").read_text()


def externally_managed_python(folder: Path) -> Path:
    """A stand-in for Debian's /usr/bin/python3: this interpreter's binary under a prefix of its own whose stdlib
    folder carries the PEP 668 EXTERNALLY-MANAGED marker, so `pip install` there is refused as on Debian 12. (A venv
    cannot stand in: pip ignores the marker inside one.) Its site-packages sees this test's packages through a .pth
    line, so a venv made from it with --system-site-packages installs nothing new (no 2 GB download in a test)."""
    base, ver = Path(sys.base_prefix), f"python{sys.version_info.major}.{sys.version_info.minor}"
    real_bin = Path(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable).resolve()
    stdlib = base / "lib" / ver
    if not (stdlib / "os.py").is_file():
        pytest.skip(f"this Python's stdlib is not at {stdlib} (cannot build an externally-managed copy of it)")
    (folder / "bin").mkdir(parents=True)
    lib = folder / "lib" / ver
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "EXTERNALLY-MANAGED"):
            (lib / entry.name).symlink_to(entry)
    for so in (base / "lib").glob("libpython*"):
        (folder / "lib" / so.name).symlink_to(so)
    (lib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=simulated Debian 12 system Python\n")
    (lib / "site-packages").mkdir()
    import site
    (lib / "site-packages" / "test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = folder / "bin" / ver
    shutil.copy2(real_bin, python)
    return python


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_demo_install_makes_a_venv_where_the_system_python_refuses_pip(tmp_path):
    python = externally_managed_python(tmp_path / "system")
    env = {k: v for k, v in ENV.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    probe = subprocess.run([str(python), "-c", "import sys; print(sys.prefix == sys.base_prefix, sys.prefix)"],
                           capture_output=True, text=True, env=env)
    if probe.stdout.split()[:2] != ["True", str(tmp_path / "system")]:
        pytest.skip(f"the copied interpreter does not take its own prefix: {probe.stdout} {probe.stderr}")
    refused = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--no-index", "tqdm"],
                             capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr  # as on Debian 12
    venv = tmp_path / "venv"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, timeout=600,
                          env=dict(env, PYTHON=str(python), DEMO_VENV=str(venv), DEMO_SYSTEM_SITE="1",
                                   DEMO_INSTALL_ONLY="1", DEMO_NO_UV="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"environment: {venv} (project virtual environment, installer pip" in proc.stdout
    assert f"python: {venv}/bin/python" in proc.stdout and "2.1 GB on disk" in proc.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import sys, torch, transformers, fastapi; print(sys.prefix)"],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0 and check.stdout.strip() == str(venv), check.stderr
