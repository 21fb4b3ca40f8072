"""A dense MiniMind model as a GGUF file (llama.cpp / Ollama), written with the `gguf` package.

Architecture `llama`: same blocks, with two conventions of llama.cpp to follow. Its llama graph rotates adjacent
pairs (GPT-J style) while MiniMind/HF rotate halves, so the rows of q_proj/k_proj are permuted per head (the same
permutation llama.cpp's own HF converter applies). The tokenizer is the byte-level BPE ("gpt2" model) with the
GPT-2 pre-tokenizer regex, which is what our tokenizers' ByteLevel(use_regex=True) pre-tokenizer runs.
Used by `convert_to_hf.py --gguf` and `export_gguf.py`. The `gguf` package is imported inside the functions that
write: it is in requirements.txt but not in requirements_npu.txt, and convert_to_hf.py without --gguf must run there.
"""
import json
import math

import numpy as np
import torch

from model.chat_protocol import trained_context_len
from scripts.convert.common import TOKENIZER_DIR, UserError

# tokenizer.json's added tokens marked special are control tokens (never produced from plain text); the others
# (<think>, <tool_call>, ...) are user-defined: matched as whole tokens in text, as the HF tokenizer does.
CONTROL, USER_DEFINED, NORMAL = 3, 4, 1


def gguf_type(dtype: torch.dtype):
    import gguf
    return {torch.float32: (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32, "f32"),
            torch.float16: (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16, "f16"),
            torch.bfloat16: (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16, "bf16")}[dtype]


def gguf_file_name(dtype: torch.dtype) -> str:
    return f"minimind-{gguf_type(dtype)[2]}.gguf"


def rotate_half_to_pairs(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q/k projection reordered from rotate-half (x_i pairs with x_{i+d/2}) to adjacent pairs
    (x_{2i} with x_{2i+1}): per head, row i of the first half goes to 2i, row i of the second half to 2i+1."""
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)


def read_vocab(tokenizer_dir=TOKENIZER_DIR) -> dict:
    """Tokens (by id), their GGUF types, merges and the chat template from model/'s tokenizer files."""
    tok = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    model = tok["model"]
    if model.get("type") != "BPE" or tok.get("pre_tokenizer", {}).get("type") != "ByteLevel":
        raise UserError(f"{tokenizer_dir / 'tokenizer.json'}: GGUF export expects a byte-level BPE tokenizer, "
                        f"got model {model.get('type')} with pre-tokenizer {tok.get('pre_tokenizer')}")
    vocab = dict(model["vocab"])
    for added in tok["added_tokens"]:
        vocab[added["content"]] = added["id"]
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise UserError(f"{tokenizer_dir / 'tokenizer.json'}: token ids are not contiguous 0..{len(ids) - 1}")
    tokens = [None] * len(ids)
    for text, i in vocab.items():
        tokens[i] = text
    types = [NORMAL] * len(tokens)
    for added in tok["added_tokens"]:
        types[added["id"]] = CONTROL if added["special"] else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges, "chat_template": cfg.get("chat_template"),
            "add_bos": bool(cfg.get("add_bos_token", False))}


def write_gguf(model, path, dtype: torch.dtype, tokenizer_dir=TOKENIZER_DIR) -> None:
    """Write `model` (dense MiniMindForCausalLM) to `path`; 1-D norm weights stay fp32, as llama.cpp expects."""
    import gguf
    config = model.config
    if config.use_moe:
        raise UserError("GGUF export supports dense models only")
    qtype, file_type, _ = gguf_type(dtype)
    vocab = read_vocab(tokenizer_dir)
    if len(vocab["tokens"]) != config.vocab_size:
        raise UserError(f"tokenizer has {len(vocab['tokens'])} tokens but the model's vocab_size is "
                        f"{config.vocab_size}; the GGUF would map ids to the wrong rows")

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("MiniMind")
    # the context the model was trained for (2048; x16 with YaRN), not the size of its RoPE table (32768): llama.cpp
    # and Ollama size their KV cache and refuse longer prompts by this number
    w.add_context_length(trained_context_len(config))
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_dimension_count(config.head_dim)
    w.add_rope_freq_base(float(config.rope_theta))
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    w.add_file_type(file_type)
    yarn = config.yarn_parameters
    if yarn:
        add_yarn(w, yarn)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    w.add_bos_token_id(config.bos_token_id)
    w.add_eos_token_id(config.eos_token_id)
    w.add_pad_token_id(config.pad_token_id)
    w.add_add_bos_token(vocab["add_bos"])  # our tokenizer adds no special tokens; prompts carry <|im_start|>
    w.add_add_eos_token(False)
    if vocab["chat_template"]:
        w.add_chat_template(vocab["chat_template"])

    for name, tensor in gguf_tensors(model):
        data = tensor.detach().float().numpy()
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def add_yarn(w, yarn: dict) -> None:
    """llama.cpp multiplies cos/sin by (1 + 0.1 ln factor) on its own whenever YaRN is on; MiniMind uses
    attention_factor 1.0, so the stored attn factor cancels that term (1 / 1.277 for factor 16)."""
    import gguf
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(float(yarn["factor"]))
    w.add_rope_scaling_orig_ctx_len(yarn["original_max_position_embeddings"])
    w.add_rope_scaling_yarn_beta_fast(float(yarn["beta_fast"]))
    w.add_rope_scaling_yarn_beta_slow(float(yarn["beta_slow"]))
    w.add_rope_scaling_attn_factors(yarn["attention_factor"] / (1 + 0.1 * math.log(yarn["factor"])))


def gguf_tensors(model):
    """(GGUF name, tensor) pairs for the llama architecture; `output.weight` is left out because llama.cpp reuses
    token_embd for a tied head."""
    config = model.config
    state = model.state_dict()
    yield "token_embd.weight", state["model.embed_tokens.weight"]
    yield "output_norm.weight", state["model.norm.weight"]
    for i in range(config.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        yield b + "attn_norm.weight", state[p + "input_layernorm.weight"]
        yield b + "attn_q.weight", rotate_half_to_pairs(state[p + "self_attn.q_proj.weight"],
                                                        config.num_attention_heads)
        yield b + "attn_k.weight", rotate_half_to_pairs(state[p + "self_attn.k_proj.weight"],
                                                        config.num_key_value_heads)
        yield b + "attn_v.weight", state[p + "self_attn.v_proj.weight"]
        yield b + "attn_output.weight", state[p + "self_attn.o_proj.weight"]
        yield b + "ffn_norm.weight", state[p + "post_attention_layernorm.weight"]
        yield b + "ffn_gate.weight", state[p + "mlp.gate_proj.weight"]
        yield b + "ffn_up.weight", state[p + "mlp.up_proj.weight"]
        yield b + "ffn_down.weight", state[p + "mlp.down_proj.weight"]


def ollama_modelfile(gguf_name: str, context_len: int = 2048) -> str:
    """An Ollama Modelfile for the GGUF: ChatML in Ollama's Go template syntax, with our template's default system
    prompt, eval_llm.py's sampling defaults and the trained context; <|im_end|> ends a turn."""
    return (f"FROM ./{gguf_name}\n"
            'TEMPLATE """<|im_start|>system\n'
            '{{ if .System }}{{ .System }}{{ else }}You are a helpful assistant{{ end }}<|im_end|>\n'
            '{{ range .Messages }}<|im_start|>{{ .Role }}\n'
            '{{ .Content }}<|im_end|>\n'
            '{{ end }}<|im_start|>assistant\n"""\n'
            'PARAMETER stop "<|im_end|>"\n'
            "PARAMETER temperature 0.85\n"
            "PARAMETER top_p 0.85\n"
            f"PARAMETER num_ctx {context_len}\n")
