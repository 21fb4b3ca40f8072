"""The training core through the real entry points: outputs, exact resume, DDP equivalence, NPU selection, errors."""
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
from model import runtime  # noqa: E402
from trainer import trainer_utils  # noqa: E402
from conftest import run_main  # noqa: E402

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--max_seq_len", "64", "--device", "cpu",
        "--log_interval", "1"]


def run_stage(script, *args, cwd=None, check=True, in_process=True):
    """A stage with the tiny-model flags: main(argv) in this process, or a real subprocess (also when cwd is given)."""
    argv = [*TINY, *map(str, args)]
    if in_process and cwd is None:
        proc = run_main(importlib.import_module(f"trainer.{Path(script).stem}").main, argv)
    else:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, str(ROOT / "trainer" / script), *argv], cwd=cwd or ROOT,
                              capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(stdout):
    return [float(x) for x in re.findall(r" loss ([0-9.]+)", stdout)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, pretrain_data):
    """A tiny pretrain run shared by the tests below: (out_dir, ckpt_dir, stdout)."""
    base = tmp_path_factory.mktemp("pretrain")
    out, ckpt = base / "out", base / "ckpt"
    proc = run_stage("train_pretrain.py", "--data_path", pretrain_data, "--batch_size", 8, "--accumulation_steps", 1,
                     "--learning_rate", 3e-3, "--epochs", 2, "--save_dir", out, "--checkpoint_dir", ckpt,
                     in_process=False)  # the script entry point itself, once
    return out, ckpt, proc.stdout


def test_pretrain_writes_weights_sidecar_and_learns(pretrained):
    out, ckpt, stdout = pretrained
    weights = out / "pretrain_64.pth"
    state = torch.load(weights, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values())
    assert "lm_head.weight" in state and "model.embed_tokens.weight" in state
    side = json.loads((out / "pretrain_64.json").read_text())
    assert side["model_config"]["hidden_size"] == 64 and side["model_config"]["num_hidden_layers"] == 2
    assert side["train_args"]["save_weight"] == "pretrain"
    assert (ckpt / "pretrain_64_resume.pth").is_file()
    got = losses(stdout)
    assert len(got) == 24 and got[-1] < got[0] - 0.5, got  # 96 rows / 8 = 12 steps x 2 epochs
    assert "tokens/s" in stdout and "ETA" in stdout


def test_full_sft_starts_from_pretrain(pretrained, tmp_path):
    out, _, _ = pretrained
    proc = run_stage("train_full_sft.py", "--save_dir", out, "--checkpoint_dir", tmp_path, "--batch_size", 4,
                     "--max_steps", 3, "--learning_rate", 1e-3)
    assert f"loaded {out / 'pretrain_64.pth'}" in proc.stdout
    assert (out / "full_sft_64.pth").is_file() and (out / "full_sft_64.json").is_file()
    assert len(losses(proc.stdout)) == 3


def test_logged_loss_is_the_mean_over_the_accumulation_group(tmp_path, pretrain_data):
    """With 2 micro-batches per step the log shows their mean (not the last one's), plus a smoothed loss."""
    from dataset.lm_dataset import PretrainDataset
    args = trainer_utils.build_parser("t").parse_args(
        [*TINY, "--batch_size", "4", "--accumulation_steps", "2", "--max_steps", "3", "--save_dir",
         str(tmp_path / "o"), "--checkpoint_dir", str(tmp_path / "c")])
    ctx, _, model, tokenizer = trainer_utils.start_stage(args)
    micro, lines = [], []

    def loss_fn(m, batch):
        loss, parts = trainer_utils.causal_lm_loss(m, batch)
        micro.append(float(loss.detach()))
        return loss, {"twice": 2 * loss.detach()}

    dataset = PretrainDataset(pretrain_data, tokenizer, args.max_seq_len)
    trainer_utils.train(args, ctx, model, dataset, loss_fn, log=lines.append)
    logged = [float(re.search(r" loss ([0-9.]+)", line).group(1)) for line in lines if " loss " in line]
    twice = [float(re.search(r" twice ([0-9.]+)", line).group(1)) for line in lines if " twice " in line]
    assert len(micro) == 6 and len(logged) == 3
    for step, value in enumerate(logged):
        mean = (micro[2 * step] + micro[2 * step + 1]) / 2
        assert value == pytest.approx(mean, abs=1e-4) and twice[step] == pytest.approx(2 * mean, abs=1e-4)
    assert micro[0] != pytest.approx(micro[1], abs=1e-4)  # the two micro-batches differ, so the mean is tested
    smooth = [float(re.search(r" loss_smooth ([0-9.]+)", line).group(1)) for line in lines if "loss_smooth" in line]
    assert smooth[0] == pytest.approx(logged[0], abs=1e-4)  # bias-corrected: the first value is the loss itself
    expected = (0.9 * 0.1 * logged[0] + 0.1 * logged[1]) / (1 - 0.9 ** 2)
    assert smooth[1] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_runs_from_inside_trainer_folder(tmp_path, pretrain_data):
    proc = run_stage("train_pretrain.py", "--data_path", pretrain_data, "--batch_size", 8, "--max_steps", 1,
                     "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c", cwd=ROOT / "trainer")
    assert (tmp_path / "o" / "pretrain_64.pth").is_file(), proc.stdout


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path, pretrain_data):
    common = ["--data_path", pretrain_data, "--batch_size", 4, "--accumulation_steps", 2, "--epochs", 2,
              "--learning_rate", 3e-3, "--save_interval", 2, "--warmup_steps", 2]
    # all three runs as subprocesses with one thread each, so float reductions happen in the same order
    run_stage("train_pretrain.py", *common, "--save_dir", tmp_path / "a", "--checkpoint_dir", tmp_path / "ca",
              in_process=False)
    reference = torch.load(tmp_path / "ca" / "pretrain_64_resume.pth", weights_only=True)

    ckpt = tmp_path / "cb" / "pretrain_64_resume.pth"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "trainer/train_pretrain.py"), *TINY, *map(str, common),
           "--save_dir", str(tmp_path / "b"), "--checkpoint_dir", str(tmp_path / "cb")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-epoch, possibly mid-save: the atomic write keeps the last good file
    proc.wait()
    interrupted = torch.load(ckpt, weights_only=True)
    assert interrupted["step"] < reference["step"], "the run finished before it could be killed"

    run_stage("train_pretrain.py", *common, "--save_dir", tmp_path / "b", "--checkpoint_dir", tmp_path / "cb",
              "--from_resume", 1, in_process=False)
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["step"] == reference["step"]
    for k, v in reference["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path, pretrain_data):
    common = [*TINY, "--data_path", str(pretrain_data), "--packing", "1", "--max_steps", "4", "--learning_rate",
              "3e-3", "--save_interval", "100"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, str(ROOT / "trainer/train_pretrain.py"), *common, "--batch_size", "8",
                             "--save_dir", str(tmp_path / "one"), "--checkpoint_dir", str(tmp_path / "c1")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", str(ROOT / "trainer/train_pretrain.py"), *common,
                          "--batch_size", "4", "--save_dir", str(tmp_path / "two"),
                          "--checkpoint_dir", str(tmp_path / "c2")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr
    assert "distributed: 2 processes, backend gloo" in ddp.stdout
    a = torch.load(tmp_path / "c1" / "pretrain_64_resume.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "c2" / "pretrain_64_resume.pth", weights_only=True)
    assert b["world_size"] == 2
    for k, v in a.items():
        torch.testing.assert_close(b["model"][k], v, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backend,prefix", [("swanlab", "run-"), ("wandb", "offline-run-")])
def test_tracker_offline_run_continues_after_resume(backend, prefix, tmp_path, pretrain_data):
    pytest.importorskip(backend, reason=f"{backend} is in requirements.txt; install it to run this test")
    common = ["--data_path", pretrain_data, "--batch_size", 8, "--accumulation_steps", 1, "--save_interval", 2,
              "--use_wandb", 1,
              "--wandb_backend", backend, "--log_dir", tmp_path / "logs", "--save_dir", tmp_path / "o",
              "--checkpoint_dir", tmp_path / "c"]
    run_stage("train_pretrain.py", *common, "--max_steps", 2, in_process=False)  # trackers keep global state
    first = torch.load(tmp_path / "c" / "pretrain_64_resume.pth", weights_only=True)["run_id"]
    assert first
    run_stage("train_pretrain.py", *common, "--max_steps", 4, "--from_resume", 1, in_process=False)
    state = torch.load(tmp_path / "c" / "pretrain_64_resume.pth", weights_only=True)
    assert state["step"] == 4 and state["run_id"] == first
    root = tmp_path / "logs" / ("wandb" if backend == "wandb" else "")
    runs = sorted(p.name for p in root.iterdir() if p.name.startswith(prefix))
    assert len(runs) == 2 and all(r.endswith(first) for r in runs), runs  # one run id, written twice


@pytest.mark.slow
def test_progress_bar_on_a_terminal_plain_lines_otherwise(tmp_path, pretrain_data):
    import fcntl
    import pty
    import struct
    import termios
    cmd = [sys.executable, str(ROOT / "trainer/train_pretrain.py"), *TINY, "--data_path", str(pretrain_data),
           "--batch_size", "8", "--accumulation_steps", "1", "--max_steps", "3", "--save_dir", str(tmp_path / "o"),
           "--checkpoint_dir", str(tmp_path / "c")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen(cmd, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(leader)
    tty_out = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, tty_out
    assert re.search(r"100%\|.*\| 3/3 \[", tty_out), tty_out  # tqdm's bar, completed
    assert "step 3/3 loss" in tty_out
    piped = run_stage("train_pretrain.py", "--data_path", pretrain_data, "--batch_size", 8,
                      "--accumulation_steps", 1, "--max_steps", 3,
                      "--save_dir", tmp_path / "o2", "--checkpoint_dir", tmp_path / "c2")
    assert "step 3/3 loss" in piped.stdout and "\r" not in piped.stdout + piped.stderr


# --------------------------------------------------------------------------------------------- device selection

@pytest.fixture
def fake_npu(monkeypatch):
    """A stand-in torch_npu: importable, with one visible device, recording what the trainer asks of it."""
    calls = {}
    npu = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 8,
                                set_device=lambda d: calls.setdefault("set_device", str(d)),
                                get_device_name=lambda d=None: "Ascend910B3")
    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))
    try:  # what the real torch_npu does on import, so torch.device("npu:3") parses (once per process)
        torch.utils.rename_privateuse1_backend("npu")
    except RuntimeError:
        pass
    torch.npu = npu  # set by hand, not monkeypatch: its undo would delete the stub left below
    yield calls
    # the backend rename cannot be undone; leave an "npu" module with no devices, so later code in this process
    # (torch.accelerator, DataLoader pin_memory) sees an absent accelerator instead of failing to find torch.npu
    torch.npu = types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0,
                                      _is_in_bad_fork=lambda: False, manual_seed_all=lambda seed: None)


def test_npu_is_preferred_and_uses_hccl_fp16(fake_npu, monkeypatch):
    assert runtime.detect_device_type() == "npu"
    assert runtime.default_dtype("npu") == "float16"
    seen = {}
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda backend: seen.setdefault("backend", backend))
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    ctx = runtime.init_distributed_mode()
    assert seen["backend"] == "hccl" and fake_npu["set_device"] == "npu:3"
    assert ctx.dtype == torch.float16 and ctx.rank == 3 and ctx.world_size == 8
    assert trainer_utils.peak_flops(torch.device("npu:0")) == trainer_utils.PEAK_FLOPS["910B"]


def test_cpu_fallback_and_backends(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # import fails
    assert runtime.detect_device_type() in ("cuda", "mps", "cpu")
    seen = {}
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda backend: seen.setdefault("backend", backend))
    monkeypatch.setenv("WORLD_SIZE", "2")
    ctx = runtime.init_distributed_mode("cpu")
    assert seen["backend"] == "gloo" and ctx.dtype == torch.float32
    with pytest.raises(trainer_utils.UserError, match="no Ascend NPU"):
        runtime.detect_device_type("npu:0")


def test_lr_schedule():
    lr = [trainer_utils.lr_at(s, 100, 1.0) for s in (0, 50, 100)]
    assert lr == pytest.approx([1.0, 0.55, 0.1])  # MiniMind's curve with no warmup
    assert trainer_utils.lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert trainer_utils.lr_at(10, 100, 1.0, warmup=10) == pytest.approx(1.0)


def test_sampler_shards_global_batches_and_skips():
    one = trainer_utils.ResumableBatchSampler(20, 4, seed=1)
    ranks = [trainer_utils.ResumableBatchSampler(20, 2, rank=r, world_size=2, seed=1) for r in range(2)]
    merged = [a + b for a, b in zip(*[list(s) for s in ranks])]
    assert merged == list(one) and len(one) == 5
    one.set_epoch(0, skip=3)
    assert list(one) == merged[3:]


# ------------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("case", ["missing_data", "malformed", "unknown_weight", "batch_too_big", "readonly_out",
                                  "batch_zero", "accumulation_zero", "layers_huge"])
def test_bad_input_gives_clear_error(case, tmp_path, pretrain_data):
    args = ["--data_path", pretrain_data, "--batch_size", 4, "--max_steps", 1, "--save_dir", tmp_path / "out",
            "--checkpoint_dir", tmp_path / "ck"]
    expect = {"missing_data": "not found", "malformed": "invalid JSON", "unknown_weight": "nope_64.pth",
              "batch_too_big": "fewer than one batch", "readonly_out": "not writable",
              "batch_zero": "--batch_size 0: must be at least 1",
              "accumulation_zero": "--accumulation_steps 0: must be at least 1",
              "layers_huge": "--num_hidden_layers 100000: must be at most 512"}[case]
    if case == "missing_data":
        args[1] = tmp_path / "absent.jsonl"
    elif case == "malformed":
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "好"}\n{"text": oops}\n' * 4, encoding="utf-8")
        args[1] = bad
    elif case == "unknown_weight":
        args += ["--from_weight", "nope"]
    elif case == "batch_too_big":
        args[3] = 1000
    elif case == "batch_zero":
        args[3] = 0
    elif case == "accumulation_zero":
        args += ["--accumulation_steps", 0]
    elif case == "layers_huge":
        args += ["--num_hidden_layers", 100000]
    elif case == "readonly_out":
        if os.geteuid() == 0:  # root ignores permission bits; a file where the folder should be fails for anyone
            (tmp_path / "out").write_text("a file, not a folder")
        else:
            (tmp_path / "out").mkdir(mode=0o500)
        expect = "out"
    proc = run_stage("train_pretrain.py", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert expect in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if case == "malformed":  # every bad line named (the even ones), before any training step
        assert [int(n) % 2 for n in re.findall(r"bad\.jsonl:(\d+):", proc.stderr)] == [0, 0, 0, 0]
        assert "step " not in proc.stdout


@pytest.mark.parametrize("broken", ["missing", "garbage"])
def test_a_missing_or_broken_tokenizer_names_the_folder_and_the_fix(broken, tmp_path):
    from model.checkpoint import load_tokenizer
    if broken == "garbage":
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (tmp_path / name).write_text("{not json")
    with pytest.raises(trainer_utils.UserError) as err:
        load_tokenizer(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "git checkout -- model/tokenizer.json" in msg and "train_tokenizer.py" in msg
