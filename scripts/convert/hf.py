"""A MiniMind .pth as a standard transformers folder that vLLM, SGLang, llama.cpp's converter and plain
`AutoModelForCausalLM.from_pretrained` load without remote code; optionally a GGUF file for llama.cpp / Ollama
(scripts/convert_to_hf.py and scripts/export_gguf.py are the commands).

Dense MiniMind is exactly Llama (same key names, rotate-half RoPE, SwiGLU, RMSNorm in fp32, tied embeddings).
MoE MiniMind maps onto Qwen2-MoE: softmax top-k router, routed experts one to one, and the ungated shared expert
through Qwen2-MoE's sigmoid gate set to zero (sigmoid(0) = 0.5, so down_proj is doubled; x2 is exact in floating
point). Every export is checked before it is put in place: the folder is loaded with plain transformers and its
fp32 logits must match the native model's.
"""
import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from model.chat_protocol import trained_context_len
from model.model_minimind import rope_inv_freq
from model.runtime import DTYPES, UserError
from scripts.convert.common import (
    VERIFY_TOLERANCE,
    add_checkpoint_args,
    atomic_output_dir,
    check_output_dir,
    copy_tokenizer,
    describe,
    load_checkpoint,
    max_logit_diff,
    native_in_dtype,
    output_dir,
    probe_ids,
    save_safetensors,
    write_generation_config,
    write_json,
)
from scripts.convert.gguf import gguf_file_name, ollama_modelfile, write_gguf

DEFAULT_OUTPUT = {False: "out/minimind-hf", True: "out/minimind-moe-hf"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiniMind .pth -> Llama / Qwen2-MoE transformers folder (+ GGUF)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_args(p)
    add = p.add_argument
    add("--output_dir", default=None, help="default: out/minimind-hf (dense) or out/minimind-moe-hf (MoE)")
    add("--dtype", default="float16", choices=sorted(DTYPES),
        help="weight dtype; float16 keeps the .pth values exactly (they are stored in fp16)")
    add("--force", action="store_true", help="replace a non-empty --output_dir")
    add("--gguf", action="store_true", help="also write a GGUF file for llama.cpp / Ollama (dense models)")
    return p


# ----------------------------------------------------------------------------------------------------------- config

def rope_fields(config) -> dict:
    """RoPE in both spellings: transformers 5 reads `rope_parameters`; vLLM, llama.cpp's converter and
    transformers 4 read `rope_theta` + `rope_scaling`. transformers 5 accepts the legacy keys too."""
    params = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    yarn = config.yarn_parameters
    if yarn:
        # attention_factor is given explicitly: MiniMind scales cos/sin by 1.0, while transformers and vLLM would
        # otherwise infer 0.1 * ln(16) + 1 = 1.277 from the factor.
        params.update(rope_type="yarn", factor=float(yarn["factor"]),
                      original_max_position_embeddings=yarn["original_max_position_embeddings"],
                      beta_fast=yarn["beta_fast"], beta_slow=yarn["beta_slow"],
                      attention_factor=yarn["attention_factor"])
    legacy = {"rope_theta": float(config.rope_theta)}
    if yarn:
        legacy["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"} | {"type": "yarn"}
    return {"rope_parameters": params, **legacy}


def common_fields(config, dtype: str) -> dict:
    return dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
                hidden_act="silu", max_position_embeddings=config.max_position_embeddings,
                rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=True, bos_token_id=config.bos_token_id,
                eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, dtype=dtype,
                attention_dropout=0.0, initializer_range=config.initializer_range, use_cache=True)


def llama_config(config, dtype: str) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common_fields(config, dtype),
            "head_dim": config.head_dim, "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
            "torch_dtype": dtype, **rope_fields(config)}


def qwen2_moe_config(config, dtype: str) -> dict:
    return {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", **common_fields(config, dtype),
            "num_experts": config.n_routed_experts, "num_experts_per_tok": config.num_experts_per_tok,
            # MiniMind renormalises the top-k weights only when k > 1; with k = 1 it keeps the raw softmax prob.
            "norm_topk_prob": bool(config.norm_topk_prob and config.num_experts_per_tok > 1),
            "moe_intermediate_size": config.intermediate_size,
            "shared_expert_intermediate_size": shared_width(config),
            "decoder_sparse_step": 1, "mlp_only_layers": [], "use_sliding_window": False,
            "router_aux_loss_coef": config.aux_loss_alpha, "output_router_logits": False,
            "torch_dtype": dtype, **rope_fields(config)}


def shared_width(config) -> int:
    """Several MiniMind shared experts are summed: one wider MLP with their rows/columns concatenated is the same
    function. With none, a zero MLP of one expert's width stands in (Qwen2-MoE always has a shared expert)."""
    return config.intermediate_size * max(config.n_shared_experts, 1)


# ---------------------------------------------------------------------------------------------------------- weights

def llama_state(state: dict) -> dict:
    """Dense MiniMind keys are already Llama's; lm_head is tied to the embedding, so it is not stored twice."""
    return {k: v for k, v in state.items() if k != "lm_head.weight"}


def qwen2_moe_state(state: dict, config) -> dict:
    out = {}
    for key, value in state.items():
        if key == "lm_head.weight" or ".mlp.shared_experts." in key:
            continue
        out[key] = value  # embeddings, norms, attention, router (mlp.gate) and routed experts keep their names
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}"
        attn_dtype = state[f"{p}.self_attn.q_proj.weight"].dtype
        for name, rows in (("q_proj", config.num_attention_heads), ("k_proj", config.num_key_value_heads),
                           ("v_proj", config.num_key_value_heads)):
            out[f"{p}.self_attn.{name}.bias"] = torch.zeros(rows * config.head_dim, dtype=attn_dtype)
        shared = [f"{p}.mlp.shared_experts.{s}" for s in range(config.n_shared_experts)]
        if shared:
            gate = torch.cat([state[f"{s}.gate_proj.weight"] for s in shared], dim=0)
            up = torch.cat([state[f"{s}.up_proj.weight"] for s in shared], dim=0)
            down = torch.cat([state[f"{s}.down_proj.weight"] for s in shared], dim=1) * 2
        else:
            gate = up = torch.zeros(config.intermediate_size, config.hidden_size, dtype=attn_dtype)
            down = torch.zeros(config.hidden_size, config.intermediate_size, dtype=attn_dtype)
        out[f"{p}.mlp.shared_expert.gate_proj.weight"] = gate
        out[f"{p}.mlp.shared_expert.up_proj.weight"] = up
        out[f"{p}.mlp.shared_expert.down_proj.weight"] = down
        out[f"{p}.mlp.shared_expert_gate.weight"] = torch.zeros(1, config.hidden_size, dtype=attn_dtype)
    return out


def hf_state(model, dtype: torch.dtype) -> dict:
    config = model.config
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    state = qwen2_moe_state(state, config) if config.use_moe else llama_state(state)
    return {k: v.to(dtype) for k, v in state.items()}


# ------------------------------------------------------------------------------------------------------------ proof

def verify_folder(folder: Path, model, dtype: torch.dtype) -> dict:
    """Load `folder` with plain transformers (no remote code) and compare it with the native model.

    Returns the measured numbers; raises UserError if the class, the RoPE frequencies or the logits differ.
    """
    expected = "Qwen2MoeForCausalLM" if model.config.use_moe else "LlamaForCausalLM"
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if type(hf).__name__ != expected:
        raise UserError(f"{folder} loads as {type(hf).__name__}, expected {expected}")
    rotary = hf.model.rotary_emb
    ours = rope_inv_freq(model.config.head_dim, model.config.rope_theta, model.config.yarn_parameters)
    rope_diff = ((rotary.inv_freq.float() - ours).abs() / ours).max().item()
    yarn = model.config.yarn_parameters
    scale = yarn["attention_factor"] if yarn else 1.0
    # 1e-5 relative: transformers builds inv_freq with fp32 pow, MiniMind in fp64 then rounds; measured 1.2e-7
    # (head_dim 16) to 3.6e-7 (head_dim 96). A formula mismatch (e.g. another YaRN ramp) is off by >1e-2.
    if rope_diff > 1e-5 or abs(rotary.attention_scaling - scale) > 1e-7:
        raise UserError(f"transformers' RoPE for {folder} differs from MiniMind's (relative inv_freq difference "
                        f"{rope_diff:.2e}, cos/sin scale {rotary.attention_scaling} vs {scale}); "
                        f"this rope_theta / YaRN setting cannot be exported exactly")
    diff = max_logit_diff(native_in_dtype(model, dtype), hf, probe_ids(model.config.vocab_size))
    if diff > VERIFY_TOLERANCE:
        raise UserError(f"{folder}: converted logits differ from the native model by {diff:.3e} "
                        f"(> {VERIFY_TOLERANCE}); the export is wrong, nothing was written")
    return {"class": expected, "max_logit_diff": diff, "rope_rel_diff": rope_diff}


# ------------------------------------------------------------------------------------------------------------- main

def convert(args) -> Path:
    """Write and verify the folder (and with --gguf the GGUF file and an Ollama Modelfile); returns the folder."""
    dtype = DTYPES[args.dtype]
    path, model, _ = load_checkpoint(args)
    config = model.config
    out = output_dir(args.output_dir, DEFAULT_OUTPUT[bool(config.use_moe)])
    check_output_dir(out, args.force)
    if args.gguf and config.use_moe:
        raise UserError("--gguf supports dense models only: llama.cpp's llama architecture has no shared expert, "
                        "and its qwen2moe one never renormalises the top-k weights (MiniMind's norm_topk_prob); "
                        "serve the MoE folder with vLLM or transformers instead")
    print(f"converting {path} ({describe(config)}) -> {out} [{args.dtype}]", flush=True)
    with atomic_output_dir(out, args.force) as tmp:
        hf_config = qwen2_moe_config(config, args.dtype) if config.use_moe else llama_config(config, args.dtype)
        write_json(hf_config, tmp / "config.json")
        save_safetensors(hf_state(model, dtype), tmp / "model.safetensors")
        copy_tokenizer(tmp, path, args.tokenizer_path)
        write_generation_config(tmp, config)
        result = verify_folder(tmp, model, dtype)
        print(f"verified: {result['class']} loads with plain transformers; max |logit difference| vs the native "
              f"model {result['max_logit_diff']:.2e} (fp32, 2x48 probe tokens), RoPE relative difference "
              f"{result['rope_rel_diff']:.1e}", flush=True)
        if args.gguf:
            gguf_path = tmp / gguf_file_name(dtype)
            write_gguf(model, gguf_path, dtype, tmp)
            (tmp / "Modelfile").write_text(ollama_modelfile(gguf_path.name, trained_context_len(config)), encoding="utf-8")
    print(f"wrote {out}", flush=True)
    if args.gguf:
        print(f"wrote {out / gguf_path.name} and {out / 'Modelfile'} (Ollama):\n"
              f"  cd {out} && ollama create minimind -f Modelfile && ollama run minimind\n"
              f"---- Modelfile ----\n{ollama_modelfile(gguf_path.name, trained_context_len(config))}-------------------", flush=True)
    return out

