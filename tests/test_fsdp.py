"""--fsdp 1 (FSDP2) on CPU with gloo: same losses as DDP, DCP resume at the same and another world size, atomic
DCP saves, and DCP -> .pth conversion that eval's loader reads. Tiny 2-layer hidden-64 model, demo data."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
from conftest import run_main  # noqa: E402
from model import distributed_checkpoint as dc  # noqa: E402

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--max_seq_len", "64", "--device", "cpu",
        "--log_interval", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(lines) -> list:
    return [float(m.group(1)) for line in lines for m in [re.search(r" step \d+/\d+ loss ([0-9.]+)", line)] if m]


def _worker(rank: int, world: int, port: int, tmp: str, data: str, variants: list) -> None:
    """One rank of a gloo job that trains each variant in turn through trainer_utils.train (same process group)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from dataset.lm_dataset import PretrainDataset
    from trainer import trainer_utils as tu
    results = {}
    for name, extra, env in variants:
        os.environ.update(env)
        args = tu.build_parser("t").parse_args(
            [*TINY, "--batch_size", "4", "--accumulation_steps", "2", "--max_steps", "4", "--learning_rate", "3e-3",
             "--save_interval", "100", "--save_dir", f"{tmp}/{name}/out", "--checkpoint_dir", f"{tmp}/{name}/ckpt",
             *extra])
        ctx, _, model, tokenizer = tu.start_stage(args)
        lines = []
        tu.train(args, ctx, model, PretrainDataset(data, tokenizer, args.max_seq_len), tu.causal_lm_loss,
                 log=lines.append)
        if args.fsdp:
            inner = model.model.embed_tokens.weight
            results[f"{name}_tied"] = model.lm_head.weight is inner
            compiled = sum(getattr(b, "_compiled_call_impl", None) is not None for b in model.model.layers)
            if rank == 0:
                Path(tmp, name, "compiled.json").write_text(json.dumps({"compiled_blocks": compiled}))
        results[name] = losses(lines)
    if rank == 0:
        Path(tmp, "results.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def spawn(world: int, tmp: Path, data: Path, variants: list) -> dict:
    import torch.multiprocessing as mp
    mp.spawn(_worker, args=(world, free_port(), str(tmp), str(data), variants), nprocs=world, join=True)
    return json.loads((tmp / "results.json").read_text())


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_fsdp_matches_ddp_and_converts_to_a_loadable_pth(tmp_path, pretrain_data):
    """2 gloo processes: FSDP2 and DDP, 4 steps of 2 accumulated micro-batches with clipping, give the same losses
    and weights; the DCP resume folder converts to a .pth equal to the one training wrote, which eval loads."""
    got = spawn(2, tmp_path, pretrain_data, [("ddp", [], {}), ("fsdp", ["--fsdp", "1"], {})])
    assert len(got["ddp"]) == 4 and got["fsdp_tied"] is True
    for a, b in zip(got["ddp"], got["fsdp"]):
        assert b == pytest.approx(a, abs=1e-4)
    ddp = torch.load(tmp_path / "ddp/ckpt/pretrain_64_resume.pth", weights_only=True)["model"]
    folder = tmp_path / "fsdp/ckpt/pretrain_64_resume.dcp"
    assert (folder / dc.MARKER).is_file() and not (tmp_path / "fsdp/ckpt/pretrain_64_resume.pth").exists()
    model, train_args = dc.load_plain_model(folder)
    assert train_args["fsdp"] == 1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ddp[k], atol=2e-5, rtol=1e-4)

    out = tmp_path / "conv" / "pretrain_64.pth"
    from scripts.dcp_to_pth import main as convert
    proc = run_main(convert, [folder, "--out", out])  # the command line, in this process (no second torch import)
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stderr
    converted = torch.load(out, weights_only=True)
    written = torch.load(tmp_path / "fsdp/out/pretrain_64.pth", weights_only=True)  # gathered on rank 0 in training
    assert set(converted) == set(written) and "lm_head.weight" in converted
    for k in written:
        assert torch.equal(converted[k], written[k]), k
    assert json.loads(out.with_suffix(".json").read_text())["model_config"]["hidden_size"] == 64

    from eval_llm import build_parser
    from model.checkpoint import load_model
    loaded, _ = load_model(build_parser().parse_args(["--weight", "pretrain", "--save_dir", str(out.parent),
                                                      "--device", "cpu"]))
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, converted[k].float())


@pytest.mark.slow
def test_fsdp_with_compiled_blocks_matches_ddp(tmp_path, pretrain_data):
    """--use_compile 1 --fsdp 1: each block compiled (Dynamo with the eager backend on CPU), then sharded."""
    got = spawn(2, tmp_path, pretrain_data, [
        ("ddp", [], {}),
        ("fsdp_compiled", ["--fsdp", "1", "--use_compile", "1"], {"MINIMIND_COMPILE_BACKEND": "eager"})])
    assert len(got["ddp"]) == 4 and got["fsdp_compiled_tied"] is True
    for a, b in zip(got["ddp"], got["fsdp_compiled"]):
        assert b == pytest.approx(a, abs=1e-4)
    assert json.loads((tmp_path / "fsdp_compiled" / "compiled.json").read_text())["compiled_blocks"] == 2


@pytest.mark.slow
def test_every_single_model_stage_trains_with_fsdp_and_lora_rl_are_refused(tmp_path):
    """pretrain -> full_sft -> dpo -> reason, and distillation, each with --fsdp 1 in one process (a one-member
    group): each writes its .pth + sidecar and a complete DCP folder. LoRA and GRPO refuse with the reason."""
    import importlib

    def stage(script, *args, code=0):
        argv = [*TINY, "--max_seq_len", "96", "--fsdp", "1", "--max_steps", "2", "--save_dir", tmp_path / "out",
                "--checkpoint_dir", tmp_path / "ckpt", *args]
        proc = run_main(importlib.import_module(f"trainer.{script}").main, argv)
        assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc

    for script, weight, extra in [
            ("train_pretrain", "pretrain", ["--batch_size", 8]),
            ("train_full_sft", "full_sft", ["--batch_size", 4]),
            ("train_dpo", "dpo", ["--batch_size", 2]),
            ("train_reason", "reason", ["--batch_size", 2]),
            ("train_distillation", "full_dist", ["--batch_size", 4, "--teacher_hidden_size", 64,
                                                 "--teacher_num_layers", 2])]:
        proc = stage(script, *extra)
        assert "FSDP2: 2 blocks + root sharded over 1 process(es)" in proc.stdout, script
        assert (tmp_path / "out" / f"{weight}_64.pth").is_file() and (tmp_path / "out" / f"{weight}_64.json").is_file()
        assert dc.read_trainer_state(dc.find_complete(tmp_path / "ckpt" / f"{weight}_64_resume.dcp"))["step"] == 2
    assert "LoRA" in stage("train_lora", "--batch_size", 4, code=2).stderr
    assert "RL stages" in stage("train_grpo", "--batch_size", 2, "--num_generations", 2, code=2).stderr


# --------------------------------------------------------------------------------------------- atomic DCP folders

def _fake_save(folder: Path, step: int) -> None:
    tmp = dc.begin_save(folder)
    (tmp / "shard").write_text(str(step))
    dc.finish_save(tmp, folder, {"step": step}, {"model_config": {}, "train_args": {}})


def test_dcp_folder_swap_keeps_the_last_complete_save(tmp_path):
    folder = tmp_path / "x_resume.dcp"
    _fake_save(folder, 1)
    _fake_save(folder, 2)
    assert dc.find_complete(folder) == folder and dc.read_trainer_state(folder)["step"] == 2
    assert not folder.with_name("x_resume.dcp.old").exists() and not folder.with_name("x_resume.dcp.tmp").exists()

    # killed while writing shards: the .tmp folder has no marker and is ignored, the previous save stays
    tmp = dc.begin_save(folder)
    (tmp / "shard").write_text("3, half written")
    assert dc.find_complete(folder) == folder and dc.read_trainer_state(folder)["step"] == 2

    # killed between the two renames: only .old is complete, and resume takes it
    os.replace(folder, folder.with_name("x_resume.dcp.old"))
    assert dc.find_complete(folder) == folder.with_name("x_resume.dcp.old")
    _fake_save(folder, 4)  # the next save cleans up both leftovers
    assert dc.read_trainer_state(dc.find_complete(folder))["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_resume.dcp"]


def test_incomplete_dcp_folder_is_refused_with_a_message(tmp_path):
    folder = tmp_path / "x_resume.dcp"
    with pytest.raises(dc.UserError, match="run once without --from_resume"):
        dc.require_complete(folder)
    folder.mkdir()
    (folder / "__0_0.distcp").write_bytes(b"partial")
    with pytest.raises(dc.UserError, match="no COMPLETE marker"):
        dc.require_complete(folder)


def test_resume_with_the_other_format_names_the_flag(tmp_path, pretrain_data):
    """A DDP run finding only a .dcp folder, and an FSDP2 run finding only a .pth resume state, say which flag fits."""
    from trainer import train_pretrain
    common = [*TINY, "--data_path", pretrain_data, "--batch_size", 8, "--max_steps", 1, "--from_resume", 1,
              "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c"]
    (tmp_path / "c" / "pretrain_64_resume.dcp").mkdir(parents=True)
    proc = run_main(train_pretrain.main, common)
    assert proc.returncode == 2 and "written with --fsdp 1, so resume with --fsdp 1" in proc.stderr, proc.stderr
    (tmp_path / "c" / "pretrain_64_resume.dcp").rmdir()
    torch.save({}, tmp_path / "c" / "pretrain_64_resume.pth")
    proc = run_main(train_pretrain.main, [*common, "--fsdp", "1"])
    assert proc.returncode == 2 and "written without --fsdp" in proc.stderr, proc.stderr


def test_fsdp_refused_for_lora_and_rl_with_the_reason():
    from trainer.trainer_utils import UserError, check_fsdp_supported
    with pytest.raises(UserError, match="LoRA"):
        check_fsdp_supported(True, save_fn=lambda m: None, param_groups=None, extra_state=None)
    with pytest.raises(UserError, match="RL stages"):
        check_fsdp_supported(False, save_fn=None, param_groups=None, extra_state=None)
    check_fsdp_supported(True, save_fn=None, param_groups=None, extra_state=None)


# ------------------------------------------------------------------------------ kill -9 and resume (real torchrun)

def _launch(nproc: int, common: list, out: Path, ckpt: Path, *extra, background=False):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(ROOT / "trainer/train_pretrain.py"), *TINY, *map(str, common), "--fsdp", "1",
           "--save_dir", str(out), "--checkpoint_dir", str(ckpt), *map(str, extra)]
    if background:  # own session, so the kill reaches torchrun and every rank at once
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _kill_after_first_save(proc) -> None:
    deadline = time.time() + 300
    for line in proc.stdout:
        if "_resume.dcp (step" in line or time.time() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_killed_fsdp_run_resumes_on_two_and_on_one_process(tmp_path, pretrain_data):
    """Killed with SIGKILL after its first save; resumed with 2 processes and with 1, both end at the weights of
    the uninterrupted 2-process run (16 rows per step in all three: 2 x 4 x 2 and 1 x 4 x 4)."""
    common = ["--data_path", pretrain_data, "--batch_size", 4, "--learning_rate", 3e-3, "--save_interval", 2,
              "--max_steps", 6, "--warmup_steps", 2]
    _launch(2, common, tmp_path / "ref", tmp_path / "cref", "--accumulation_steps", 2)
    reference, _ = dc.load_plain_model(tmp_path / "cref/pretrain_64_resume.dcp")
    assert dc.read_trainer_state(tmp_path / "cref/pretrain_64_resume.dcp")["step"] == 6

    for resume_nproc, accumulation in ((2, 2), (1, 4)):
        out, ckpt = tmp_path / f"o{resume_nproc}", tmp_path / f"c{resume_nproc}"
        _kill_after_first_save(_launch(2, common, out, ckpt, "--accumulation_steps", 2, background=True))
        folder = dc.find_complete(ckpt / "pretrain_64_resume.dcp")
        assert folder is not None and dc.read_trainer_state(folder)["step"] < 6, "finished before the kill"
        proc = _launch(resume_nproc, common, out, ckpt, "--accumulation_steps", accumulation, "--from_resume", 1)
        assert "resumed from" in proc.stdout
        resumed, _ = dc.load_plain_model(ckpt / "pretrain_64_resume.dcp")
        assert dc.read_trainer_state(ckpt / "pretrain_64_resume.dcp")["step"] == 6
        for k, v in reference.state_dict().items():
            torch.testing.assert_close(resumed.state_dict()[k], v, atol=2e-5, rtol=1e-4)
