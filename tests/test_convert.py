"""Conversion proofs on tiny random models: the exported folders, loaded with plain transformers, give the native
logits and greedy tokens; the MiniMind-format round trip is bit-identical; GGUF parses (and runs in llama.cpp when
llama_cpp is installed); bad input gets one clear message."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]

from scripts import convert_model  # noqa: E402
import eval_llm  # noqa: E402
from conftest import run_main  # noqa: E402
from scripts import convert_to_hf  # noqa: E402
from scripts import export_gguf  # noqa: E402
from scripts.convert import gguf as gguf_writer  # noqa: E402
from scripts.convert import hf as hf_export  # noqa: E402
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM, apply_rope, precompute_rope  # noqa: E402
from trainer.trainer_utils import load_tokenizer, save_weights, weight_path  # noqa: E402

ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512,
            # std 0.1 instead of 0.02 gives logits of std ~1, so "max |diff| < 1e-4" is a meaningful bound and
            # greedy choices are not decided by near-ties
            initializer_range=0.1)
CONVERSATION = [{"role": "user", "content": "你好，请介绍一下你自己。"}]


def make_checkpoint(save_dir: Path, stage: str = "full_sft", sidecar: bool = True, **overrides) -> Path:
    """A seeded random model saved the way the trainers save it (fp16 .pth + .json sidecar)."""
    torch.manual_seed(0)
    config = MiniMindConfig(**(TINY | overrides))
    path = weight_path(save_dir, stage, config.hidden_size, config.use_moe)
    save_weights(MiniMindForCausalLM(config), path, argparse.Namespace(seed=0))
    if not sidecar:
        path.with_suffix(".json").unlink()
    return path


def native(path: Path, **config) -> MiniMindForCausalLM:
    """The model straight from the .pth, independent of the converters' own loading code."""
    model = MiniMindForCausalLM(MiniMindConfig(**(TINY | config)))
    model.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    return model.eval()


def chat_ids() -> torch.Tensor:
    tok = load_tokenizer()
    text = tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tok(text)["input_ids"]])


def probe() -> torch.Tensor:
    """A chat prompt plus 40 random ids: realistic tokens and a spread of positions/vocabulary rows."""
    ids = chat_ids()
    rand = torch.randint(11, 6400, (1, 40), generator=torch.Generator().manual_seed(1))
    return torch.cat([ids, rand], dim=1)


@torch.no_grad()
def greedy(model, ids: torch.Tensor, n: int = 20) -> list:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         temperature=None, top_p=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def logit_diff(a, b, ids) -> float:
    return (a(ids).logits.float() - b(ids).logits.float()).abs().max().item()


def load_plain(folder: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def run(main, argv) -> int:
    """A converter's main, in-process, with paths and numbers as the strings a shell would pass."""
    return main([str(a) for a in argv])


def run_user_error(main, argv, capsys) -> str:
    """Run a converter's main in-process; it must exit 2 with one message and no traceback."""
    with pytest.raises(SystemExit) as exc:
        run(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------- Llama / Qwen2-MoE export

def test_dense_exports_as_llama_with_equal_logits_and_greedy_tokens(tmp_path):
    path = make_checkpoint(tmp_path / "out")
    out = tmp_path / "hf"
    assert run(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", out, "--dtype", "float32"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model_type"], cfg["architectures"]) == ("llama", ["LlamaForCausalLM"])
    assert (cfg["head_dim"], cfg["num_key_value_heads"], cfg["intermediate_size"]) == (16, 2, 192)
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["tie_word_embeddings"]) == (1, 2, True)
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32" and cfg["rope_theta"] == 1e6
    assert "rope_scaling" not in cfg
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors"} <= \
        {p.name for p in out.iterdir()}

    hf, ref = load_plain(out), native(path)
    assert type(hf).__name__ == "LlamaForCausalLM"
    ids = probe()
    assert ref(ids).logits.std() > 0.5  # logits are not all ~0, so the bound below says something
    assert logit_diff(ref, hf, ids) < 1e-4
    tokens = greedy(ref, chat_ids())
    assert greedy(hf, chat_ids()) == tokens and len(tokens) > 0


@pytest.mark.parametrize("variant", [
    dict(),  # MiniMind2-MoE: 4 experts, top-2 renormalised, 1 shared
    dict(num_experts_per_tok=1, n_shared_experts=2),  # k=1 keeps the raw prob; 2 shared experts concatenated
    dict(norm_topk_prob=False),
])
def test_moe_exports_as_qwen2_moe_with_equal_logits_and_greedy_tokens(tmp_path, variant):
    path = make_checkpoint(tmp_path / "out", use_moe=True, **variant)
    out = tmp_path / "hf"
    assert run(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--use_moe", "1", "--output_dir", out,
                               "--dtype", "float32"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    config = MiniMindConfig(**(TINY | variant))
    assert cfg["model_type"] == "qwen2_moe" and cfg["num_experts"] == 4
    assert cfg["num_experts_per_tok"] == config.num_experts_per_tok
    assert cfg["norm_topk_prob"] == (config.norm_topk_prob and config.num_experts_per_tok > 1)
    assert cfg["moe_intermediate_size"] == 192
    assert cfg["shared_expert_intermediate_size"] == 192 * config.n_shared_experts

    weights, src = load_file(str(out / "model.safetensors")), torch.load(path, weights_only=True)
    assert not weights["model.layers.0.mlp.shared_expert_gate.weight"].any()
    assert not weights["model.layers.1.self_attn.k_proj.bias"].any()
    assert torch.equal(weights["model.layers.0.mlp.shared_expert.down_proj.weight"][:, :192],
                       2 * src["model.layers.0.mlp.shared_experts.0.down_proj.weight"].float())

    hf, ref = load_plain(out), native(path, use_moe=True, **variant)
    assert type(hf).__name__ == "Qwen2MoeForCausalLM"
    ids = probe()
    assert logit_diff(ref, hf, ids) < 1e-4
    assert greedy(hf, chat_ids()) == greedy(ref, chat_ids())


def test_yarn_is_exported_and_matches_native_yarn(tmp_path):
    path = make_checkpoint(tmp_path / "out")
    out = tmp_path / "hf"
    assert run(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", out, "--dtype", "float32",
                               "--inference_rope_scaling", "1"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"]["type"] == cfg["rope_scaling"]["rope_type"] == "yarn"
    assert cfg["rope_scaling"]["factor"] == 16 and cfg["rope_scaling"]["attention_factor"] == 1.0
    assert cfg["rope_parameters"]["original_max_position_embeddings"] == 2048

    hf, ids = load_plain(out), probe()
    assert logit_diff(native(path, inference_rope_scaling=True), hf, ids) < 1e-4
    # and YaRN is really in force: plain RoPE gives different logits
    assert logit_diff(native(path), hf, ids) > 1e-3


def test_a_wrong_mapping_is_caught_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """The converter's own check: forgetting the x2 on the shared expert (sigmoid(0) = 0.5) must fail it."""
    make_checkpoint(tmp_path / "out", use_moe=True)
    right = hf_export.qwen2_moe_state

    def forgets_the_gate_half(state, config):
        out = right(state, config)
        return {k: v / 2 if k.endswith("shared_expert.down_proj.weight") else v for k, v in out.items()}

    monkeypatch.setattr(hf_export, "qwen2_moe_state", forgets_the_gate_half)
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--use_moe", 1,
                                              "--output_dir", tmp_path / "hf"], capsys)
    assert "converted logits differ from the native model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither the folder nor its temp folder


def test_converted_tokenizer_renders_our_chat_template(tmp_path):
    from transformers import AutoTokenizer
    make_checkpoint(tmp_path / "out")
    out = tmp_path / "hf"
    assert run(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", out]) == 0
    ours, theirs = load_tokenizer(), AutoTokenizer.from_pretrained(str(out))
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "天气",
                                               "parameters": {"type": "object", "properties": {"city": {}}}}}]
    conversations = [
        CONVERSATION,
        [{"role": "system", "content": "你是MiniMind。"}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "Hello!", "reasoning_content": "greet back"},
         {"role": "user", "content": "?"}],
        [{"role": "user", "content": "北京天气？"},
         {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
             "name": "get_weather", "arguments": {"city": "北京"}}}]},
         {"role": "tool", "content": "{\"temp\": 20}"}],
    ]
    for messages in conversations:
        for kwargs in (dict(add_generation_prompt=True), dict(add_generation_prompt=True, enable_thinking=False),
                       dict(add_generation_prompt=False, tools=tools)):
            a = ours.apply_chat_template(messages, tokenize=False, **kwargs)
            assert theirs.apply_chat_template(messages, tokenize=False, **kwargs) == a
            assert theirs(a)["input_ids"] == ours(a)["input_ids"]


# ---------------------------------------------------------------------------------------------- the real entry points

@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_cli_default_float16_with_gguf(tmp_path):
    """As a user runs it, from another directory: float16 keeps the .pth values exactly; GGUF + Modelfile."""
    path = make_checkpoint(tmp_path / "out")
    out = tmp_path / "minimind-hf"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_to_hf.py"), "--weight", "full_sft",
                           "--save_dir", str(tmp_path / "out"), "--output_dir", str(out), "--gguf"],
                          capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified: LlamaForCausalLM" in proc.stdout and "FROM ./minimind-f16.gguf" in proc.stdout
    weights, src = load_file(str(out / "model.safetensors")), torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in weights.values())
    assert all(torch.equal(weights[k], src[k]) for k in weights) and "lm_head.weight" not in weights
    assert (out / "Modelfile").read_text().startswith("FROM ./minimind-f16.gguf")

    from gguf import GGUFReader
    reader = GGUFReader(str(out / "minimind-f16.gguf"))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert (meta["llama.block_count"], meta["llama.embedding_length"], meta["llama.attention.head_count_kv"]) == \
        (2, 64, 2)
    assert meta["tokenizer.ggml.pre"] == "gpt-2" and meta["llama.rope.freq_base"] == 1e6
    # the trained length (2048, here capped by TINY's 512-position table), not a 32768 RoPE table; no YaRN keys
    assert meta["llama.context_length"] == 512 and "llama.rope.scaling.type" not in meta
    assert "PARAMETER num_ctx 512" in (out / "Modelfile").read_text()
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert meta["tokenizer.chat_template"] == load_tokenizer().chat_template
    tok = load_tokenizer()
    vocab = tok.get_vocab()
    assert len(meta["tokenizer.ggml.tokens"]) == 6400
    assert all(vocab[t] == i for i, t in enumerate(meta["tokenizer.ggml.tokens"]))
    assert meta["tokenizer.ggml.token_type"][:4] == [3, 3, 3, 4]  # control x3, then <think> user-defined
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 9 * 2 and "output.weight" not in tensors
    q = torch.from_numpy(tensors["blk.1.attn_q.weight"].data.copy()).reshape(64, 64)
    assert torch.equal(q, gguf_writer.rotate_half_to_pairs(src["model.layers.1.self_attn.q_proj.weight"], 4))
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"


def test_rotate_half_to_pairs_preserves_attention_scores():
    """llama.cpp's llama graph rotates adjacent pairs; with permuted q/k rows the q.k scores equal ours."""
    torch.manual_seed(0)
    heads, head_dim, hidden, t = 2, 8, 16, 5
    wq, wk, x = torch.randn(heads * head_dim, hidden), torch.randn(heads * head_dim, hidden), torch.randn(t, hidden)
    cos, sin = precompute_rope(head_dim, t, 1e4)

    def split(w):  # [t, heads*hd] -> [1, heads, t, hd]
        return (x @ w.T).view(t, heads, head_dim).transpose(0, 1)[None]

    q, k = apply_rope(split(wq), split(wk), cos[None], sin[None])
    ours = q @ k.transpose(-1, -2)

    def rope_pairs(v):  # GPT-J style: (v[2i], v[2i+1]) rotated by angle i
        ang = cos[:, : head_dim // 2], sin[:, : head_dim // 2]
        even, odd = v[..., 0::2], v[..., 1::2]
        return torch.stack([even * ang[0] - odd * ang[1], even * ang[1] + odd * ang[0]], dim=-1).flatten(-2)

    qp = rope_pairs(split(gguf_writer.rotate_half_to_pairs(wq, heads)))
    kp = rope_pairs(split(gguf_writer.rotate_half_to_pairs(wk, heads)))
    assert torch.allclose(qp @ kp.transpose(-1, -2), ours, atol=1e-4)
    # without the permutation the scores differ: the check above can fail
    assert not torch.allclose(rope_pairs(split(wq)) @ rope_pairs(split(wk)).transpose(-1, -2), ours, atol=1e-2)


@pytest.mark.parametrize("yarn", [0, 1])
def test_gguf_runs_in_llama_cpp_with_the_native_logits_and_greedy_tokens(tmp_path, yarn):
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip has no CPU wheel; its source build takes ~45 min "
                            "on 2 cores); the GGUF is still checked with gguf.GGUFReader in test_cli_default_float16")
    path = make_checkpoint(tmp_path / "out")
    out = tmp_path / "hf"
    assert run(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", out, "--dtype", "float32",
                                    "--inference_rope_scaling", yarn, "--gguf"]) == 0
    # type_k/type_v 0 = fp32 KV cache: llama.cpp's default fp16 cache alone costs ~2e-3 in these logits
    llm = llama_cpp.Llama(model_path=str(out / "minimind-f32.gguf"), n_ctx=256, logits_all=True, verbose=False,
                          type_k=0, type_v=0, n_threads=2)
    tok = load_tokenizer()
    texts = ["你好，世界！", "Hello world,  it's 2024.\n\n", "<|im_start|>user\n<think>\n嗯</think><|im_end|>",
             "  a\t\tb 12345 ### 3.14  ", "I'm you'LL 😀 多个   空格\n\n\n换行"]
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text)["input_ids"], text
    ref, ids = native(path, inference_rope_scaling=bool(yarn)), probe()
    llm.eval(ids[0].tolist())
    theirs = torch.tensor(llm.scores[: ids.shape[1]])
    with torch.no_grad():
        assert (ref(ids).logits[0] - theirs).abs().max().item() < 1e-4  # measured ~3e-6
        if yarn:  # YaRN is really in force in llama.cpp (its cos/sin scale cancelled to MiniMind's 1.0)
            assert (native(path)(ids).logits[0] - theirs).abs().max().item() > 1e-2
    ids = chat_ids()
    expected = greedy(ref, ids)
    expected = expected[: expected.index(2)] if 2 in expected else expected
    assert expected  # the native model does not end at once, so there is something to compare
    llm.reset()
    got = []
    for t in llm.generate(ids[0].tolist(), temp=0.0, top_k=1):
        if t == 2 or len(got) == len(expected):
            break
        got.append(t)
    assert got == expected


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_minimind_folder_loads_with_remote_code_outside_the_repo(tmp_path):
    path = make_checkpoint(tmp_path / "out", use_moe=True)
    out = tmp_path / "MiniMind2-hf"
    assert run(convert_model.main, ["to_hf", "--save_dir", tmp_path / "out", "--output_dir", out]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "model_minimind.MiniMindForCausalLM"
    assert (out / "model_minimind.py").read_bytes() == (ROOT / "model" / "model_minimind.py").read_bytes()
    # A clean interpreter in another directory, with this repository nowhere on sys.path: the copied file is used.
    ids = probe()
    torch.save(ids, tmp_path / "ids.pt")
    script = ("import sys, torch\n"
              "assert not any('model_minimind' in m for m in sys.modules)\n"
              "from transformers import AutoModelForCausalLM\n"
              f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True, dtype=torch.float32)\n"
              "assert type(m).__module__.startswith('transformers_modules'), type(m).__module__\n"
              f"torch.save(m.eval()(torch.load({str(tmp_path / 'ids.pt')!r})).logits, {str(tmp_path / 'l.pt')!r})\n")
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"} | {"HF_HOME": str(tmp_path / "hf_home")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        expected = native(path, use_moe=True)(ids).logits
    assert (torch.load(tmp_path / "l.pt") - expected).abs().max().item() < 1e-5


def test_round_trip_pth_to_minimind_folder_and_back_is_bit_identical(tmp_path):
    for moe in (False, True):
        path = make_checkpoint(tmp_path / "out", use_moe=moe)
        folder = tmp_path / f"hf{int(moe)}"
        assert run(convert_model.main, ["to_hf", "--save_dir", tmp_path / "out", "--use_moe", int(moe),
                                   "--output_dir", folder]) == 0
        assert run(convert_model.main, ["to_pth", "--load_from", folder, "--save_dir", tmp_path / "back"]) == 0
        back = weight_path(tmp_path / "back", "full_sft", 64, moe)
        a, b = torch.load(path, weights_only=True), torch.load(back, weights_only=True)
        assert list(a) == list(b)
        assert all(a[k].dtype == b[k].dtype == torch.float16 and torch.equal(a[k], b[k]) for k in a)
        assert back.read_bytes() == path.read_bytes()
        assert json.loads(back.with_suffix(".json").read_text())["model_config"] == \
            json.loads(path.with_suffix(".json").read_text())["model_config"]


def test_eval_llm_answers_from_the_converted_folder(tmp_path):
    make_checkpoint(tmp_path / "out")
    out = tmp_path / "MiniMind2-hf"
    assert run(convert_model.main, ["to_hf", "--save_dir", tmp_path / "out", "--output_dir", out]) == 0
    proc = run_main(eval_llm.main, ["auto", "--load_from", out, "--max_new_tokens", 4, "--device", "cpu",
                                    "--seed", 0])
    assert proc.returncode == 0, proc.stderr
    assert "transformers folder" in proc.stderr and proc.stdout.count("🤖: ") == 8


# --------------------------------------------------------------------------------------------------------- bad input

def test_moe_weights_converted_as_dense_are_refused(tmp_path, capsys):
    # a sidecar-less MoE file under a dense name, converted with dense sizes
    make_checkpoint(tmp_path / "out", use_moe=True, sidecar=False).rename(tmp_path / "out" / "full_sft_64.pth")
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--hidden_size", 64,
                                              "--num_hidden_layers", 2, "--use_moe", 0,
                                              "--output_dir", tmp_path / "hf"], capsys)
    assert "holds a MoE model" in err and "--use_moe 1" in err
    assert not (tmp_path / "hf").exists()


def test_dense_weights_converted_as_moe_are_refused(tmp_path, capsys):
    make_checkpoint(tmp_path / "out", sidecar=False).rename(tmp_path / "out" / "full_sft_64_moe.pth")
    err = run_user_error(convert_model.main, ["to_hf", "--save_dir", tmp_path / "out", "--hidden_size", 64,
                                              "--num_hidden_layers", 2, "--use_moe", 1,
                                              "--output_dir", tmp_path / "hf"], capsys)
    assert "holds a dense model" in err and "--use_moe 0" in err


def test_missing_sidecar_without_sizes_is_refused(tmp_path, capsys):
    path = make_checkpoint(tmp_path / "out", sidecar=False, num_attention_heads=8)  # MiniMind2's 8/2 heads
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", tmp_path / "hf"],
                         capsys)
    assert str(path) in err and "no sidecar" in err and "--hidden_size N --num_hidden_layers N" in err
    # with the sizes given it converts
    assert run(convert_to_hf.main, ["--save_dir", str(tmp_path / "out"), "--hidden_size", "64",
                               "--num_hidden_layers", "2", "--output_dir", str(tmp_path / "hf")]) == 0


def test_missing_weight_file_names_the_path_and_the_command(tmp_path, capsys):
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "none", "--weight", "dpo",
                                              "--output_dir", tmp_path / "hf"], capsys)
    assert str(tmp_path / "none" / "dpo_512.pth") in err and "python trainer/train_dpo.py" in err


def test_non_empty_output_dir_needs_force(tmp_path, capsys):
    make_checkpoint(tmp_path / "out")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", out], capsys)
    assert f"output folder {out} is not empty" in err and "--force" in err
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    assert run(convert_to_hf.main, ["--save_dir", str(tmp_path / "out"), "--output_dir", str(out), "--force"]) == 0
    assert (out / "config.json").is_file() and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".hf")) == []  # no temp folders left


def test_gguf_of_a_moe_model_is_refused(tmp_path, capsys):
    make_checkpoint(tmp_path / "out", use_moe=True)
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--use_moe", 1, "--gguf",
                                              "--output_dir", tmp_path / "hf"], capsys)
    assert "--gguf supports dense models only" in err and not (tmp_path / "hf").exists()


def test_to_pth_refuses_a_folder_that_is_not_minimind(tmp_path, capsys):
    make_checkpoint(tmp_path / "out")
    assert run(convert_to_hf.main, ["--save_dir", str(tmp_path / "out"), "--output_dir", str(tmp_path / "llama")]) == 0
    err = run_user_error(convert_model.main, ["to_pth", "--load_from", tmp_path / "llama",
                                              "--save_dir", tmp_path / "back"], capsys)
    assert "model_type is 'llama'" in err
    err = run_user_error(convert_model.main, ["to_pth", "--load_from", tmp_path / "nowhere",
                                              "--save_dir", tmp_path / "back"], capsys)
    assert "no config.json" in err


def test_export_gguf_command_writes_the_gguf_next_to_the_verified_folder(tmp_path):
    """scripts/export_gguf.py is convert_to_hf.py with --gguf on: folder verified, GGUF and Modelfile written."""
    make_checkpoint(tmp_path / "out")
    out = tmp_path / "hf"
    assert run(export_gguf.main, ["--save_dir", tmp_path / "out", "--output_dir", out]) == 0
    assert (out / "minimind-f16.gguf").stat().st_size > 0 and (out / "config.json").is_file()
    assert (out / "Modelfile").read_text().startswith("FROM ./minimind-f16.gguf")


def test_gguf_declares_the_trained_context_and_yarn_when_enabled(tmp_path):
    """2048 positions as trained; with --inference_rope_scaling 1, 32768 plus the YaRN keys llama.cpp reads."""
    from gguf import GGUFReader
    for yarn in (False, True):
        model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, inference_rope_scaling=yarn))
        path = tmp_path / f"m{int(yarn)}.gguf"
        gguf_writer.write_gguf(model, path, torch.float32)
        meta = {k: f.contents() for k, f in GGUFReader(str(path)).fields.items() if not k.startswith("GGUF.")}
        if not yarn:
            assert meta["llama.context_length"] == 2048 and "llama.rope.scaling.type" not in meta
        else:
            assert meta["llama.context_length"] == 32768 and meta["llama.rope.scaling.type"] == "yarn"
            assert meta["llama.rope.scaling.factor"] == 16 and meta["llama.rope.scaling.original_context_length"] == 2048


def test_dense_and_moe_of_one_stage_are_told_apart_by_use_moe(tmp_path, capsys):
    make_checkpoint(tmp_path / "out")
    make_checkpoint(tmp_path / "out", use_moe=True)
    err = run_user_error(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--output_dir", tmp_path / "x"], capsys)
    assert "--hidden_size 64 --use_moe 0 or --hidden_size 64 --use_moe 1" in err
    for moe, cls in ((0, "LlamaForCausalLM"), (1, "Qwen2MoeForCausalLM")):
        assert run(convert_to_hf.main, ["--save_dir", tmp_path / "out", "--use_moe", moe,
                                        "--output_dir", tmp_path / f"hf{moe}"]) == 0
        assert json.loads((tmp_path / f"hf{moe}" / "config.json").read_text())["architectures"] == [cls]
