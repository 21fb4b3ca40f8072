"""eval_llm.py through its real entry point on a tiny trained model: auto, chat over stdin, errors, HF folder, LoRA."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import chat_protocol, checkpoint
import eval_llm
from conftest import run_main
from model.model_lora import apply_lora, save_lora
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

ROOT = Path(__file__).resolve().parents[1]
from trainer import train_full_sft  # noqa: E402
# One OpenMP thread: on a small shared CPU, two spinning threads make every decode step ~50x slower.
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
SPEED = re.compile(r"\[\d+ tokens, [\d.]+ tokens/s\]")


def run_eval(*args, stdin="", cwd=None):
    """eval_llm.py as a user runs it (from a foreign working directory, to check path handling)."""
    if cwd is None:  # no working directory to prove: main(argv) in this process, stdin from the string
        saved, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            return run_main(eval_llm.main, args)
        finally:
            sys.stdin = saved
    return subprocess.run([sys.executable, str(ROOT / "eval_llm.py"), *map(str, args)], input=stdin,
                          capture_output=True, text=True, encoding="utf-8", env=ENV, cwd=cwd, timeout=300)


def answers(stdout: str) -> int:
    return stdout.count("🤖: ")


# A handful of conversations, so the test does not depend on the (generated) demo files in dataset/.
CONVERSATIONS = [("你好", "你好！有什么可以帮你？"), ("1+1等于几？", "1+1等于2。"), ("hello", "Hello! How can I help?"),
                 ("天空为什么是蓝色的？", "因为瑞利散射让蓝光散射得更多。"), ("推荐一本书", "《红楼梦》。"),
                 ("What is 2+3?", "2+3 is 5."), ("你是谁？", "我是MiniMind，一个小语言模型。"), ("谢谢", "不客气！")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """out/full_sft_64.pth + sidecar from 3 steps of the real SFT entry point."""
    base = tmp_path_factory.mktemp("eval")
    out, data = base / "out", base / "sft.jsonl"
    rows = [{"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in CONVERSATIONS]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = run_main(train_full_sft.main, [
        "--from_weight", "none", "--hidden_size", "64", "--num_hidden_layers", "2", "--batch_size", "4",
        "--max_seq_len", "128", "--max_steps", "3", "--save_dir", out, "--checkpoint_dir", base / "ckpt",
        "--log_interval", "1", "--save_interval", "100", "--learning_rate", "1e-3", "--device", "cpu",
        "--data_path", data])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "full_sft_64.pth").is_file() and (out / "full_sft_64.json").is_file()
    return base, out


def tiny_from(out: Path) -> MiniMindForCausalLM:
    """The trained tiny model, built from its sidecar."""
    cfg = json.loads((out / "full_sft_64.json").read_text())["model_config"]
    model = MiniMindForCausalLM(MiniMindConfig(**cfg))
    state = torch.load(out / "full_sft_64.pth", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


# ------------------------------------------------------------------------------------------------ the entry point

@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_auto_answers_every_prompt_with_sizes_from_the_sidecar(trained):
    base, out = trained
    proc = run_eval("auto", "--save_dir", out, "--max_new_tokens", 8, "--device", "cpu", "--seed", 0, cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "sizes from full_sft_64.json" in proc.stderr  # no --hidden_size was given
    assert "deprecated" not in proc.stdout + proc.stderr  # transformers' notices never reach the user
    assert "hidden_size 64, 2 layers, dense" in proc.stderr
    for prompt in chat_protocol.CHAT_PROMPTS:
        assert prompt in proc.stdout
    assert answers(proc.stdout) == len(chat_protocol.CHAT_PROMPTS)
    assert len(SPEED.findall(proc.stdout)) == len(chat_protocol.CHAT_PROMPTS)
    # every answer has text: the 8 sampled tokens are (almost surely) not all whitespace
    replies = re.findall(r"🤖: (.*?)\n\[\d+ tokens", proc.stdout, flags=re.S)
    assert len(replies) == len(chat_protocol.CHAT_PROMPTS) and all(r.strip() for r in replies)


def test_chat_over_stdin_with_clear_and_exit(trained):
    base, out = trained
    proc = run_eval("chat", "--save_dir", out, "--max_new_tokens", 6, "--device", "cpu", "--historys", 2,
                    stdin="你好\n\n/clear\nhello\n/exit\nnever read\n")
    assert proc.returncode == 0, proc.stderr
    assert answers(proc.stdout) == 2  # the empty line is ignored, nothing after /exit is answered
    assert "history cleared" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_chat_ends_cleanly_on_eof(trained):
    base, out = trained
    proc = run_eval("chat", "--save_dir", out, "--device", "cpu", stdin="")
    assert proc.returncode == 0, proc.stderr
    assert answers(proc.stdout) == 0 and "Traceback" not in proc.stderr


def test_last_line_without_newline_is_answered_before_eof(trained, monkeypatch, capsys):
    _, out = trained
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi"))
    assert eval_llm.main(["chat", "--save_dir", str(out), "--device", "cpu", "--max_new_tokens", "3",
                          "--show_speed", "0"]) == 0
    stdout = capsys.readouterr().out
    assert answers(stdout) == 1 and not SPEED.search(stdout)


def test_missing_weight_names_the_file_and_the_command(tmp_path):
    proc = run_eval("--save_dir", tmp_path / "empty", "--weight", "pretrain", "--device", "cpu")
    assert proc.returncode == 2
    assert str(tmp_path / "empty" / "pretrain_512.pth") in proc.stderr
    assert "python trainer/train_pretrain.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_load_from_a_save_pretrained_folder(trained, tmp_path):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               max_position_embeddings=256))
    model.save_pretrained(tmp_path / "hf")
    proc = run_eval("auto", "--load_from", tmp_path / "hf", "--max_new_tokens", 4, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "transformers folder" in proc.stderr
    assert answers(proc.stdout) == len(chat_protocol.CHAT_PROMPTS)


def test_lora_adapter_is_loaded_and_merged(trained, capsys):
    base, out = trained
    torch.manual_seed(0)
    peft_model = apply_lora(tiny_from(out), rank=4)
    with torch.no_grad():  # a fresh adapter has B = 0 (no effect); make it visible in the merged weights
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_lora(peft_model, out / "lora" / "lora_identity_64")

    assert eval_llm.main(["auto", "--save_dir", str(out), "--lora_weight", "lora_identity", "--max_new_tokens", "2",
                          "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"lora: merged {out / 'lora' / 'lora_identity_64'}" in captured.err
    assert answers(captured.out) == len(chat_protocol.CHAT_PROMPTS)

    args = eval_llm.build_parser().parse_args(["--save_dir", str(out), "--lora_weight", "lora_identity",
                                               "--device", "cpu"])
    merged, _ = checkpoint.load_model(args)
    assert isinstance(merged, MiniMindForCausalLM) and not merged.training
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    q_base = tiny_from(out).model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_merged, q_base)


def test_missing_lora_adapter_is_a_clear_error(trained, capsys):
    _, out = trained
    with pytest.raises(SystemExit) as exit_info:
        eval_llm.main(["--save_dir", str(out), "--lora_weight", "lora_medical", "--device", "cpu"])
    assert exit_info.value.code == 2
    assert str(out / "lora" / "lora_medical_64") in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- finding weights

def args_for(*argv):
    return eval_llm.build_parser().parse_args(list(map(str, argv)))


def test_several_sizes_ask_for_hidden_size(trained, tmp_path):
    _, out = trained
    shutil.copy(out / "full_sft_64.json", tmp_path)
    for name in ("full_sft_64.pth", "full_sft_128.pth", "full_sft_640_moe.pth"):  # content irrelevant here
        shutil.copy(out / "full_sft_64.pth", tmp_path / name)
    with pytest.raises(eval_llm.UserError, match=r"full_sft_64\.pth, full_sft_128\.pth, full_sft_640_moe\.pth"):
        checkpoint.resolve_weight(args_for("--save_dir", tmp_path))
    path, cfg, source = checkpoint.resolve_weight(args_for("--save_dir", tmp_path, "--hidden_size", 64))
    assert path == tmp_path / "full_sft_64.pth" and "full_sft_64.json" in source
    path, _, _ = checkpoint.resolve_weight(args_for("--save_dir", tmp_path, "--hidden_size", 640))
    assert path.name == "full_sft_640_moe.pth"  # the only 640 file is MoE
    path, _, _ = checkpoint.resolve_weight(args_for("--save_dir", tmp_path, "--use_moe", 1))
    assert path.name == "full_sft_640_moe.pth"


def test_sizes_of_a_sidecarless_file_come_from_its_tensors(trained, tmp_path):
    _, out = trained
    shutil.copy(out / "full_sft_64.pth", tmp_path / "full_sft_64.pth")  # e.g. a downloaded MiniMind .pth
    path, cfg, source = checkpoint.resolve_weight(args_for("--save_dir", tmp_path))
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["use_moe"]) == (64, 2, False)
    assert "tensor shapes" in source


# --------------------------------------------------------------------------------------------- decoding helpers

@pytest.fixture(scope="module")
def tokenizer():
    from trainer.trainer_utils import load_tokenizer
    return load_tokenizer()


def test_incremental_decoding_never_splits_a_character(tokenizer):
    text = "你好，世界！中文测试😀完毕"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) < len(text.encode("utf-8"))  # merges happened, and so did multi-byte splits below
    decoder = eval_llm.IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) + decoder.flush() == text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # some token ended mid-character and was held back (the emoji's bytes)
    # the emoji appears in one piece, whole
    assert any("😀" in p for p in pieces)


def test_reply_printer_marks_reasoning_and_keeps_the_full_text(tokenizer):
    text = "<think>\n12-3×3=3\n</think>\n<answer>\n还剩3颗。\n</answer>"
    out = io.StringIO()
    printer = eval_llm.ReplyPrinter(tokenizer, out)
    for i in tokenizer(text)["input_ids"]:
        printer.push(i)
    assert printer.finish() == text  # what goes into the chat history
    assert out.getvalue() == "[思考] 12-3×3=3\n[回答] 还剩3颗。\n"  # no tags, no ANSI codes off a terminal


def test_pretrain_prompts_are_raw_text_and_chat_prompts_use_the_template(tokenizer):
    msgs = [{"role": "user", "content": "中国的首都是"}]
    raw = chat_protocol.build_prompt(tokenizer, msgs, raw=True)
    assert raw == [tokenizer.bos_token_id] + tokenizer("中国的首都是")["input_ids"]
    chat = tokenizer.decode(chat_protocol.build_prompt(tokenizer, msgs, raw=False))
    assert chat.startswith("<|im_start|>system\n") and chat.endswith("<|im_start|>assistant\n")
