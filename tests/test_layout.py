"""The shared layer's shape: every module imports under one name, there is one UserError class, nothing outside
the entry-point bootstrap edits sys.path, and weight/sidecar/resume files in the on-disk format load."""
import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "dataset", "trainer", "scripts")


def source_files(pkg: str) -> list:
    """The package's .py files that are the project's (tracked, or new and not ignored): git-ignored folders such
    as dataset/cache/ (build_corpus.py unpacks PyPI packages there) hold other people's Python."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", f"{pkg}/*.py"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked release): every file
        return sorted((ROOT / pkg).rglob("*.py"))
    return sorted(ROOT / f for f in listed if (ROOT / f).is_file())


def all_modules() -> list:
    names = ["eval_llm"]
    for pkg in PACKAGES:
        for f in source_files(pkg):
            names.append(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    return names


def test_every_module_imports_and_there_is_one_user_error():
    classes = set()
    for name in all_modules():
        if name == "scripts.web_demo":
            continue  # a Streamlit page: importing it runs the page (tests/test_serve.py drives it with AppTest)
        module = importlib.import_module(name)
        if hasattr(module, "UserError"):
            classes.add(module.UserError)
    from model.runtime import UserError
    assert classes == {UserError}
    # no module is loaded twice under another name (e.g. `trainer_utils` next to `trainer.trainer_utils`)
    stems = [m.split(".")[-1] for m in all_modules()]
    assert not {s for s in stems if s in sys.modules and f"trainer.{s}" in sys.modules}
    assert "trainer_utils" not in sys.modules and "chat_protocol" not in sys.modules


def test_only_entry_point_bootstraps_touch_sys_path():
    offenders = []
    for f in [ROOT / "eval_llm.py", *[p for pkg in PACKAGES for p in source_files(pkg)]]:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                offenders.append((f.relative_to(ROOT), node.lineno))
    allowed = {(p, line) for p, line in offenders if "_here" in (ROOT / p).read_text().splitlines()[line - 1]}
    assert set(offenders) == allowed, set(offenders) - allowed


def test_files_in_the_on_disk_format_load(tmp_path):
    """A weight file, sidecar and resume state written field by field as the trainers write them (fp16 state dict;
    {"format", "model_config", "train_args"}; model/optimizer/scaler/rng/position) load through today's code."""
    from model import checkpoint
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    from trainer import train_pretrain, trainer_utils
    torch.manual_seed(0)
    cfg = MiniMindConfig(hidden_size=64, num_hidden_layers=2)
    model = MiniMindForCausalLM(cfg)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    out.mkdir()
    ckpt.mkdir()
    torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "pretrain_64.pth")
    (out / "pretrain_64.json").write_text(json.dumps({
        "format": "minimind2-pth",
        "model_config": {k: getattr(cfg, k) for k in checkpoint.SIDECAR_CONFIG_KEYS},
        "train_args": {"save_weight": "pretrain", "hidden_size": 64, "num_hidden_layers": 2}}))
    path, sizes, source = checkpoint.resolve_weight(argparse.Namespace(
        save_dir=str(out), weight="pretrain", hidden_size=None, num_hidden_layers=None, use_moe=None))
    assert path == out / "pretrain_64.pth" and sizes["num_hidden_layers"] == 2 and "pretrain_64.json" in source
    loaded = MiniMindForCausalLM(MiniMindConfig(**sizes))
    checkpoint.load_weights(loaded, path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v.half().float())

    # a resume state at step 1 of a 2-step run continues to step 2
    args = train_pretrain.get_parser().parse_args(["--hidden_size", "64", "--num_hidden_layers", "2", "--device",
                                                   "cpu", "--save_dir", str(out), "--checkpoint_dir", str(ckpt)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": torch.amp.GradScaler(enabled=False).state_dict(), "extra": {},
                "rng": trainer_utils.rng_state(), "epoch": 0, "batches_done": 1, "step": 1, "world_size": 1,
                "run_id": None, "args": vars(args)}, ckpt / "pretrain_64_resume.pth")
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"text": "床前明月光，疑是地上霜。" * 3}, ensure_ascii=False) + "\n"
                            for _ in range(8)), encoding="utf-8")
    train_pretrain.main(["--hidden_size", "64", "--num_hidden_layers", "2", "--device", "cpu", "--save_dir",
                         str(out), "--checkpoint_dir", str(ckpt), "--data_path", str(data), "--batch_size", "4",
                         "--max_seq_len", "32", "--accumulation_steps", "1", "--from_resume", "1"])
    state = torch.load(ckpt / "pretrain_64_resume.pth", weights_only=True)
    assert state["step"] == 2 and state["batches_done"] == 2

