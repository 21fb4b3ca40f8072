"""The tokenizer travels with the weights: sidecars record it, later stages and tools use the recorded one, and a
different vocabulary is refused with the flag that fixes it. Two tokenizers: the committed one and a copy the test
makes with two token ids swapped (same size, different vocabulary)."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_main
from model import checkpoint
from scripts import convert_model, convert_to_hf
from trainer import train_full_sft, train_pretrain

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--max_seq_len", "64", "--device", "cpu",
        "--batch_size", "4", "--max_steps", "1", "--log_interval", "1"]


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok_b")
    for name in checkpoint.TOKENIZER_FILES:
        shutil.copy(ROOT / "model" / name, folder / name)
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    a, b = [t for t, i in vocab.items() if i in (500, 501)]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert checkpoint.tokenizer_fingerprint(folder) != checkpoint.tokenizer_fingerprint(ROOT / "model")
    return folder


def test_stages_record_use_and_guard_the_tokenizer(other_tokenizer, tmp_path):
    out, ck = tmp_path / "out", tmp_path / "ck"
    data = ["--data_path", ROOT / "dataset/demo/pretrain_demo.jsonl", "--save_dir", out, "--checkpoint_dir", ck]
    proc = run_main(train_pretrain.main, [*TINY, *data, "--tokenizer_path", other_tokenizer])
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "pretrain_64.json").read_text())["tokenizer"]
    assert record == {"path": str(other_tokenizer), "fingerprint": checkpoint.tokenizer_fingerprint(other_tokenizer)}

    # the next stage takes the recorded tokenizer by itself and records it again
    sft = ["--save_dir", out, "--checkpoint_dir", ck, "--data_path", ROOT / "dataset/demo/sft_demo.jsonl"]
    proc = run_main(train_full_sft.main, [*TINY, *sft])
    assert proc.returncode == 0, proc.stderr
    assert f"tokenizer {other_tokenizer}" in proc.stdout
    assert json.loads((out / "full_sft_64.json").read_text())["tokenizer"] == record

    # another vocabulary is refused, naming the one the weights need
    proc = run_main(train_full_sft.main, [*TINY, *sft, "--tokenizer_path", "model"])
    assert proc.returncode == 2 and f"--tokenizer_path {other_tokenizer}" in proc.stderr, proc.stderr

    # eval/server/web demo load the recorded one
    args = checkpoint.argparse.Namespace(save_dir=str(out), weight="full_sft", load_from=None, lora_weight=None,
                                         hidden_size=None, num_hidden_layers=None, use_moe=None,
                                         inference_rope_scaling=0, device="cpu", tokenizer_path=None)
    _, tokenizer = checkpoint.load_native(args)
    assert tokenizer.get_vocab() == checkpoint.load_tokenizer(other_tokenizer).get_vocab()
    assert tokenizer.get_vocab() != checkpoint.load_tokenizer().get_vocab()

    # the export carries the weights' tokenizer; another one is refused
    hf = tmp_path / "hf"
    assert run_main(convert_to_hf.main, ["--save_dir", out, "--output_dir", hf]).returncode == 0
    assert checkpoint.tokenizer_fingerprint(hf) == record["fingerprint"]
    proc = run_main(convert_to_hf.main, ["--save_dir", out, "--output_dir", tmp_path / "hf2", "--tokenizer_path",
                                         "model"])
    assert proc.returncode == 2 and "--tokenizer_path" in proc.stderr and not (tmp_path / "hf2").exists()


def test_files_without_a_record_use_model_and_to_pth_keeps_the_folders_tokenizer(other_tokenizer, tmp_path):
    import torch

    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    out = tmp_path / "out"
    out.mkdir()
    path = out / "full_sft_64.pth"
    torch.save(MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)).state_dict(), path)
    assert checkpoint.weights_tokenizer(path) == checkpoint.TOKENIZER_DIR  # an old / MiniMind2 file: model/

    hf = tmp_path / "MiniMind2"  # a MiniMind-format folder whose tokenizer is not ours
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2))
    model.save_pretrained(hf)
    for name in checkpoint.TOKENIZER_FILES:
        shutil.copy(other_tokenizer / name, hf / name)
    assert run_main(convert_model.main, ["to_pth", "--load_from", hf, "--save_dir", tmp_path / "conv",
                                         "--save_weight", "full_sft"]).returncode == 0
    weights = tmp_path / "conv" / "full_sft_64.pth"
    kept = checkpoint.weights_tokenizer(weights)
    assert kept == tmp_path / "conv" / "full_sft_64_tokenizer"
    assert checkpoint.tokenizer_fingerprint(kept) == checkpoint.tokenizer_fingerprint(other_tokenizer)
