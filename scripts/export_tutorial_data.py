"""Facts for the interactive tutorial (docs/tutorial/react-app), computed from this repository's own code.

    python scripts/export_tutorial_data.py            # rewrite docs/tutorial/react-app/src/data/
    python scripts/export_tutorial_data.py --check    # exit 1 and name the stale files if the export is not current

What it writes (the app imports these files, so they are bundled into the static build; nothing is fetched):
- tutorial-data.json: preset shapes and parameter counts (model/model_minimind.py on the meta device), each
  trainer's flags from its own `get_parser()`, RoPE/YaRN inverse frequencies (`rope_inv_freq`, `precompute_rope`),
  the LR curve (`trainer_utils.lr_at`), attention / KV cache / MoE routing values from a tiny real model trained
  for a few steps with a fixed seed, SFT examples with their loss masks (`SFTDataset`), tokenizer parity cases
  (ids and pieces from the Python tokenizer, which the app's in-browser tokenizer must reproduce), deployment
  commands validated against each script's parser, and the Ascend Dockerfile / run_all_npu.sh stages.
- tokenizer.json, tokenizer_config.json: byte copies of model/'s, loaded by @huggingface/tokenizers in the browser.

Floats are rounded to 6 significant digits; `tests/test_tutorial_export.py` regenerates the export and compares it
with the committed one (floats within a small tolerance, everything else exactly).
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import importlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from model.checkpoint import atomic_write_text
from model.model_minimind import (
    YARN_DEFAULTS,
    MiniMindConfig,
    MiniMindForCausalLM,
    StaticKVCache,
    apply_rope,
    count_parameters,
    precompute_rope,
    repeat_kv,
    rope_inv_freq,
)
from model.runtime import ROOT, UserError, display_path, user_errors

DEFAULT_OUT = ROOT / "docs" / "tutorial" / "react-app" / "src" / "data"
DATA_FILE = "tutorial-data.json"
COPIED = {"tokenizer.json": ROOT / "model" / "tokenizer.json",
          "tokenizer_config.json": ROOT / "model" / "tokenizer_config.json"}
SCHEMA = 1

# Stage scripts in the order of MiniMind's chain (pretrain -> full_sft -> lora | dpo -> reason -> RL | distillation).
STAGE_MODULES = ["pretrain", "full_sft", "lora", "dpo", "reason", "ppo", "grpo", "spo", "distillation"]

# Strings whose ids the browser tokenizer must reproduce (tests in the app compare them one by one).
PARITY_TEXTS = [
    "你好",
    "你好，世界！今天天气怎么样？",
    "Hello, world! It's 3.14159 and I'm fine.",
    "MiniMind 是一个只有 25.8M 参数的中文小模型。",
    "😀👍🏽🇨🇳 emoji 与 中文",
    "  leading   spaces\n\n\ttabs\r\nand CRLF  ",
    "<|im_start|>user\n你好<|im_end|>\n",
    "<|endoftext|><|im_end|><|im_start|>",
    "<think>\n先想一想\n</think>\n<answer>\n42\n</answer>",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>',
    "<tool_response>\n晴，25°C\n</tool_response>",
    "<thinking> is not a tag, <think> is",
    "def f(x):\n    return x ** 2  # 平方",
    "ǅ İ ß ﬁ Ω ½ ①",
    "1234567890 ９８７",
]

CHAT_CASES = [
    {"name": "plain", "messages": [{"role": "user", "content": "你好，请介绍一下你自己。"},
                                   {"role": "assistant", "content": "我是 MiniMind，一个小型语言模型。"}],
     "add_generation_prompt": False},
    {"name": "system_and_prompt", "messages": [{"role": "system", "content": "你是一个乐于助人的中文助手。"},
                                               {"role": "user", "content": "1+1 等于几？"}],
     "add_generation_prompt": True},
    {"name": "no_thinking", "messages": [{"role": "user", "content": "直接回答：天空为什么是蓝色的？"}],
     "add_generation_prompt": True, "enable_thinking": False},
    {"name": "tools", "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "查询城市天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
     "messages": [{"role": "user", "content": "北京今天天气如何？"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
                  {"role": "tool", "content": "{\"weather\": \"晴\", \"temp_c\": 25}"},
                  {"role": "assistant", "content": "北京今天晴，25°C。"}],
     "add_generation_prompt": False},
]

# Commands the deployment tab shows. Ours are parsed by the script's own parser here, so a renamed flag breaks the
# export; external tools (vLLM, llama.cpp, Ollama) are shown as not run on this project's machines.
DEPLOY_COMMANDS = [
    ("hf", "python scripts/convert_to_hf.py --weight full_sft", "scripts.convert_to_hf"),
    ("hf", "python scripts/convert_to_hf.py --weight full_sft --hidden_size 640 --use_moe 1", "scripts.convert_to_hf"),
    ("hf", "python scripts/convert_model.py to_hf --weight full_sft", "scripts.convert_model"),
    ("vllm", "python scripts/convert_to_hf.py --weight full_sft", "scripts.convert_to_hf"),
    ("vllm", ("vllm serve out/minimind-hf --served-model-name minimind --enable-auto-tool-choice "
              "--tool-call-parser hermes"), None),
    ("vllm", "bash scripts/run_all_npu.sh serve", "run_all"),
    ("gguf", "python scripts/convert_to_hf.py --weight full_sft --gguf", "scripts.convert_to_hf"),
    ("gguf", "llama-cli -m out/minimind-hf/minimind-f16.gguf --jinja -cnv", None),
    ("ollama", "cd out/minimind-hf && ollama create minimind -f Modelfile && ollama run minimind", None),
    ("serve", "python scripts/serve_openai_api.py --weight full_sft --port 8998", "scripts.serve_openai_api"),
    ("serve", "python scripts/chat_openai_api.py --tools scripts/tools_example.json", "scripts.chat_openai_api"),
    ("serve", "python eval_llm.py chat --weight full_sft", "eval_llm"),
]

# The tiny model behind the attention / KV cache / MoE views: MoE so that routing is real, 4 query heads on 2 KV
# heads so that GQA is visible. Trained briefly on the bundled pretraining text so attention is not uniform.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "use_moe": True, "max_position_embeddings": 512}
TINY_SEED = 0
TINY_STEPS = 60
TINY_SENTENCE = "小明喜欢吃苹果，因为苹果很甜。"


# --------------------------------------------------------------------------------------------------------- helpers

def r(x, digits: int = 6):
    """Round floats (also inside lists) to `digits` significant digits so the JSON is small and stable."""
    if isinstance(x, (list, tuple)):
        return [r(v, digits) for v in x]
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return 0.0 if x == 0 else x
    return float(f"{x:.{digits}g}")


def jsonable_default(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable_default(v) for v in value]
    return str(value)


def parser_flags(parser: argparse.ArgumentParser, base: dict | None = None) -> list:
    """Every option of a parser: flag, default, type, choices, help, header; `own` marks options or defaults that
    differ from `base` ({dest: default} of the shared parser)."""
    group_of = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            group_of[action.dest] = group.title
    flags = []
    for a in parser._actions:
        if not a.option_strings or a.dest == "help":
            continue
        kind = ("flag" if a.nargs == 0 else getattr(a.type, "__name__", "str") if a.type else "str")
        row = {"flag": max(a.option_strings, key=len), "dest": a.dest, "default": jsonable_default(a.default),
               "type": kind, "choices": jsonable_default(list(a.choices)) if a.choices else None,
               "help": a.help or "", "group": group_of.get(a.dest, "")}
        if base is not None:
            row["shared"] = a.dest in base
            row["stage_default"] = a.dest in base and base[a.dest] != a.default
        flags.append(row)
    return flags


# ---------------------------------------------------------------------------------------------------------- presets

def preset_configs() -> dict:
    from scripts.bench_model import PRESETS
    names = {"small": "MiniMind2-Small", "base": "MiniMind2", "moe": "MiniMind2-MoE"}
    return {key: (names[key], MiniMindConfig(**PRESETS[key])) for key in names}


def kv_cache_bytes_per_token(cfg: MiniMindConfig, bytes_per_value: int = 2) -> int:
    """Bytes one token adds to the KV cache, read off a real StaticKVCache of length 1 (fp16 by default)."""
    cache = StaticKVCache(cfg, batch_size=1, max_len=1, device="meta")
    return sum(t.numel() for t in cache.keys + cache.values) * bytes_per_value


def one_layer_model(cfg: MiniMindConfig) -> MiniMindForCausalLM:
    """A real CPU model of the preset's sizes with a single block (every layer has the same shapes; the MoE
    dispatch has no meta-device kernel, and the full 145M model would cost seconds to initialise)."""
    torch.manual_seed(0)
    return MiniMindForCausalLM(MiniMindConfig(**{**cfg.to_dict(), "num_hidden_layers": 1,
                                                 "max_position_embeddings": 64})).eval()


def forward_trace(model: MiniMindForCausalLM, batch: int, seq: int) -> list:
    """Output shapes of the model's modules (embedding, layer 0's parts, final norm, lm_head) for one forward."""
    rows = []
    attn = model.model.layers[0].self_attn
    wanted = {"model.embed_tokens": "embedding", "model.layers.0.input_layernorm": "RMSNorm",
              "model.layers.0.self_attn.q_proj": "q_proj", "model.layers.0.self_attn.k_proj": "k_proj",
              "model.layers.0.self_attn.v_proj": "v_proj", "model.layers.0.self_attn.o_proj": "o_proj",
              "model.layers.0.self_attn": "attention output (added to the residual)",
              "model.layers.0.post_attention_layernorm": "RMSNorm", "model.layers.0.mlp": "FFN / MoE",
              "model.layers.0": "block output", "model.norm": "final RMSNorm", "lm_head": "lm_head (logits)"}
    hooks = []
    for name, module in model.named_modules():
        if name in wanted:
            def hook(mod, inputs, output, name=name):
                out = output[0] if isinstance(output, tuple) else output
                rows.append({"module": name, "class": type(mod).__name__, "role": wanted[name],
                             "out_shape": list(out.shape)})
                if name.endswith("v_proj"):  # the view the attention kernel sees, from the module's own sizes
                    rows.append({"module": name + " .view().transpose(1, 2)", "class": "q / k / v heads",
                                 "role": "heads",
                                 "out_shape": [batch, attn.n_heads, seq, attn.head_dim],
                                 "kv_shape": [batch, attn.n_kv_heads, seq, attn.head_dim]})
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(batch, seq, dtype=torch.long))
    for h in hooks:
        h.remove()
    return rows


def preset_facts() -> list:
    out = []
    for key, (title, cfg) in preset_configs().items():
        with torch.device("meta"):
            model = MiniMindForCausalLM(cfg).eval()
        sd = model.state_dict()
        layer0 = {k: list(v.shape) for k, v in sd.items() if not re.match(r"model\.layers\.[1-9]", k)}
        per_layer = sum(v.numel() for k, v in sd.items() if k.startswith("model.layers.0."))

        def count(prefix: str, model=model) -> int:
            return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

        embed = model.model.embed_tokens.weight.numel()
        attn = count("model.layers.0.self_attn.")
        mlp = count("model.layers.0.mlp.")
        total = count_parameters(model)
        per_expert = 3 * cfg.hidden_size * cfg.intermediate_size
        active = total - (cfg.num_hidden_layers * per_expert * (cfg.n_routed_experts - cfg.num_experts_per_tok)
                          if cfg.use_moe else 0)
        mha = MiniMindConfig(**{**cfg.to_dict(), "num_key_value_heads": cfg.num_attention_heads})
        out.append({
            "key": key, "title": title,
            "config": {k: getattr(cfg, k) for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta", "rms_norm_eps",
                "use_moe", "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "aux_loss_alpha",
                "norm_topk_prob", "tie_word_embeddings")},
            "params": {"total": total, "embedding": embed, "per_layer": per_layer, "attention_per_layer": attn,
                       "mlp_per_layer": mlp, "norms": count("model.norm") + sum(count(f"model.layers.{i}.{n}") for i in range(cfg.num_hidden_layers)
                                                          for n in ("input_layernorm", "post_attention_layernorm")),
                       "active_per_token": active,
                       "untied_total": total + embed,
                       "state_dict_keys": len(sd)},
            "tied": model.lm_head.weight is model.model.embed_tokens.weight,
            "state_dict_shapes": layer0,
            "kv_cache_bytes_per_token_fp16": kv_cache_bytes_per_token(cfg),
            "kv_cache_bytes_per_token_fp16_if_mha": kv_cache_bytes_per_token(mha),
            "forward_trace": {"batch": 2, "seq": 10, "rows": forward_trace(one_layer_model(cfg), 2, 10)},
        })
    return out


# ----------------------------------------------------------------------------------------------------------- stages

def stage_facts() -> list:
    from trainer.trainer_utils import build_parser
    base = {a.dest: a.default for a in build_parser("base")._actions if a.option_strings}
    stages = []
    for name in STAGE_MODULES:
        module = importlib.import_module(f"trainer.train_{name}")
        parser = module.get_parser()
        defaults = vars(parser.parse_args([]))
        from_weight = defaults.get("from_weight")
        if from_weight is None and "reasoning" in defaults:  # RL: resolved from --reasoning (rl_utils.finish_rl_args)
            from trainer.rl_utils import finish_rl_args
            args = parser.parse_args([])
            finish_rl_args(args)
            from_weight = args.from_weight
        doc = (module.__doc__ or "").strip().splitlines()
        stages.append({
            "stage": name, "script": f"trainer/train_{name}.py", "summary": doc[0] if doc else "",
            "description": parser.description, "save_weight": defaults.get("save_weight"),
            "from_weight": from_weight,
            "defaults": {k: jsonable_default(defaults[k]) for k in (
                "epochs", "batch_size", "learning_rate", "accumulation_steps", "max_seq_len", "warmup_steps")},
            "flags": parser_flags(parser, base),
        })
    return stages


def lr_facts() -> list:
    from trainer.trainer_utils import lr_at
    curves = []
    for peak, total, warmup in ((5e-4, 1000, 0), (5e-4, 1000, 100), (1e-6, 400, 0)):
        steps = list(range(0, total + 1, total // 100))
        curves.append({"peak": peak, "total": total, "warmup": warmup,
                       "points": [[s, r(lr_at(s, total, peak, warmup), 10)] for s in steps]})
    return curves


# ------------------------------------------------------------------------------------------------------------- RoPE

def rope_facts() -> dict:
    head_dims = sorted({cfg.head_dim for _, cfg in preset_configs().values()})
    theta = MiniMindConfig().rope_theta
    per_dim = []
    for d in head_dims:
        per_dim.append({"head_dim": d,
                        "inv_freq": r(rope_inv_freq(d, theta).tolist(), 8),
                        "inv_freq_yarn": r(rope_inv_freq(d, theta, dict(YARN_DEFAULTS)).tolist(), 8)})
    positions = [0, 1, 7, 100, 2047, 32767]
    cos, sin = precompute_rope(64, 32768, theta)
    cos_y, sin_y = precompute_rope(64, 32768, theta, dict(YARN_DEFAULTS))
    table = [{"position": p, "cos": r(cos[p, :32].tolist()), "sin": r(sin[p, :32].tolist()),
              "cos_yarn": r(cos_y[p, :32].tolist()), "sin_yarn": r(sin_y[p, :32].tolist())} for p in positions]
    # Relative-position property: q_m . k_n after RoPE depends only on m - n (checked here, shown in the app).
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, 64, generator=g), torch.randn(1, 1, 1, 64, generator=g)
    dots = []
    for m, n in ((5, 2), (105, 102), (1005, 1002), (5, 5), (300, 300)):
        qm, _ = apply_rope(q, q, cos[m][None, None], sin[m][None, None])
        _, kn = apply_rope(k, k, cos[n][None, None], sin[n][None, None])
        dots.append({"m": m, "n": n, "dot": r(float((qm * kn).sum()), 5)})
    return {"theta": theta, "yarn": dict(YARN_DEFAULTS), "per_head_dim": per_dim, "table_head_dim": 64,
            "table": table, "relative_dot": dots}


# ------------------------------------------------------------------------------------------------------- tiny model

def train_tiny(tokenizer):
    """The tiny MoE model after TINY_STEPS AdamW steps on the bundled pretraining text (seeded, CPU, fp32)."""
    from dataset.lm_dataset import PretrainDataset
    from trainer.trainer_utils import lr_at, seed_everything
    seed_everything(TINY_SEED)
    model = MiniMindForCausalLM(MiniMindConfig(**TINY))
    data = PretrainDataset(ROOT / "dataset" / "demo" / "pretrain_demo.jsonl", tokenizer, 64, packing=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(TINY_SEED)
    model.train()
    losses = []
    for step in range(TINY_STEPS):
        rows = torch.randint(len(data), (8,), generator=g).tolist()
        ids = torch.stack([data[i][0] for i in rows])
        labels = torch.stack([data[i][1] for i in rows])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, TINY_STEPS, 3e-3, 5)
        out = model(ids, labels=labels)
        loss = out.loss + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return model.eval(), losses


def attention_facts(model, ids: list) -> dict:
    """Attention probabilities of every head of layer 0 for the sentence, computed with the model's own pieces
    (q/k/v projections, apply_rope, repeat_kv) and checked against the module's real output."""
    attn = model.model.layers[0].self_attn
    captured = {}
    hook = attn.register_forward_pre_hook(lambda mod, a: captured.update(x=a[0], cos=a[1], sin=a[2]))
    with torch.no_grad():
        model(torch.tensor([ids]))
    hook.remove()
    x, cos, sin = captured["x"], captured["cos"], captured["sin"]
    b, t, _ = x.shape
    with torch.no_grad():
        q = attn.q_proj(x).view(b, t, attn.n_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, t, attn.n_kv_heads, attn.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, cos, sin)
        n_rep = attn.n_heads // attn.n_kv_heads
        scores = q @ repeat_kv(k, n_rep).transpose(-2, -1) / math.sqrt(attn.head_dim)
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        probs = scores.softmax(-1)
        mine = attn.o_proj((probs @ repeat_kv(v, n_rep)).transpose(1, 2).reshape(b, t, -1))
        real = attn(x, cos, sin, None)
    err = float((mine - real).abs().max())
    if err > 1e-5:
        raise RuntimeError(f"attention recomputation differs from the model's by {err}")
    return {"layer": 0, "n_heads": attn.n_heads, "n_kv_heads": attn.n_kv_heads, "head_dim": attn.head_dim,
            "kv_head_of_query_head": [h // n_rep for h in range(attn.n_heads)],
            "probs": [[r(row, 4) for row in probs[0, h].tolist()] for h in range(attn.n_heads)],
            "max_abs_diff_vs_module": r(err, 2)}


def kv_cache_facts(model, ids: list, new_tokens: int = 4) -> list:
    """Prefill the sentence into a StaticKVCache, then decode greedily; cache shape and length per step."""
    cfg = model.config
    cache = StaticKVCache(cfg, batch_size=1, max_len=len(ids) + new_tokens)
    steps = []
    x = torch.tensor([ids])
    with torch.no_grad():
        for step in range(new_tokens + 1):
            out = model(x, past_key_values=cache, use_cache=True)
            nxt = int(out.logits[0, -1].argmax())
            steps.append({"step": step, "input_tokens": x.shape[1], "cache_length": cache.length,
                          "layer0_keys_shape": list(cache.keys[0][:, :, :cache.length].shape),
                          "next_id": nxt})
            x = torch.tensor([[nxt]])
            if step == new_tokens - 1:
                break
    return steps


def moe_facts(model, ids: list) -> dict:
    """Gate probabilities, top-k experts and weights for each token in layer 0, and the load-balancing loss."""
    moe = model.model.layers[0].mlp
    captured = {}
    hook = moe.register_forward_pre_hook(lambda mod, a: captured.update(x=a[0]))
    with torch.no_grad():
        model(torch.tensor([ids]))
    hook.remove()
    x = captured["x"]
    with torch.no_grad():
        scores = moe.gate(x.reshape(-1, x.shape[-1])).float().softmax(-1)
        weights, experts = torch.topk(scores, moe.top_k, dim=-1)
        if moe.top_k > 1 and moe.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        aux = moe.load_balance_loss(scores, experts, 1, x.shape[1])
    counts = torch.bincount(experts.reshape(-1), minlength=moe.n_experts).tolist()
    return {"layer": 0, "n_routed_experts": moe.n_experts, "top_k": moe.top_k,
            "n_shared_experts": len(moe.shared_experts), "aux_loss_alpha": moe.alpha, "seq_aux": moe.seq_aux,
            "scores": [r(row, 4) for row in scores.tolist()], "experts": experts.tolist(),
            "weights": [r(row, 4) for row in weights.tolist()], "expert_counts": counts,
            "aux_loss": r(float(aux), 5)}


def tiny_facts(tokenizer) -> dict:
    model, losses = train_tiny(tokenizer)
    ids = tokenizer(TINY_SENTENCE, add_special_tokens=False)["input_ids"]
    tokens = [tokenizer.decode([i]) for i in ids]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    top = torch.topk(logits.softmax(-1), 5)
    emb = model.model.embed_tokens.weight
    return {
        "config": {k: getattr(model.config, k) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
            "intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_shared_experts")},
        "params": count_parameters(model), "seed": TINY_SEED, "train_steps": TINY_STEPS,
        "train_data": "dataset/demo/pretrain_demo.jsonl",
        "loss_first_last": [r(losses[0], 4), r(losses[-1], 4)],
        "sentence": TINY_SENTENCE, "ids": ids, "tokens": tokens,
        "tied_same_tensor": model.lm_head.weight.data_ptr() == emb.data_ptr(),
        "state_dict_has_both": all(k in model.state_dict() for k in ("model.embed_tokens.weight", "lm_head.weight")),
        "embedding_rows": [{"id": i, "token": tok, "first8": r(emb[i, :8].tolist(), 4)}
                           for i, tok in zip(ids[:6], tokens[:6])],
        "next_token_top5": [{"id": int(i), "token": tokenizer.decode([int(i)]), "prob": r(float(p), 4)}
                            for p, i in zip(top.values, top.indices)],
        "attention": attention_facts(model, ids),
        "kv_cache": kv_cache_facts(model, ids),
        "moe": moe_facts(model, ids),
    }


# -------------------------------------------------------------------------------------------------------- tokenizer

def tokenizer_facts(tokenizer) -> dict:
    def encode(text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"text": text, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}

    chats = []
    for case in CHAT_CASES:
        kwargs = {k: case[k] for k in ("tools", "enable_thinking") if k in case}
        text = tokenizer.apply_chat_template(case["messages"], tokenize=False,
                                             add_generation_prompt=case["add_generation_prompt"], **kwargs)
        chats.append({**case, "rendered": text, **{k: v for k, v in encode(text).items() if k != "text"}})
    added = json.loads(COPIED["tokenizer.json"].read_text(encoding="utf-8"))["added_tokens"]
    return {"vocab_size": len(tokenizer), "bos": tokenizer.bos_token, "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
            "added_tokens": [{"id": t["id"], "content": t["content"], "special": t["special"]} for t in added],
            "parity": [encode(t) for t in PARITY_TEXTS], "chat": chats}


def sft_example_facts(tokenizer) -> list:
    from dataset.lm_dataset import IGNORE_INDEX, SFTDataset
    examples = []
    for path, index in (("dataset/demo/sft_demo.jsonl", 0), ("dataset/demo/tool_call_demo.jsonl", 0),
                        ("dataset/demo/r1_demo.jsonl", 0)):
        ds = SFTDataset(ROOT / path, tokenizer, max_length=1024)
        ids, labels = ds.encode_chat(ds.reader[index], 1024, index)
        examples.append({"source": path, "line": index + 1, "max_length": 1024,
                         "ids": ids, "tokens": [tokenizer.decode([i]) for i in ids],
                         "trained": [label != IGNORE_INDEX for label in labels]})
    return examples


# ----------------------------------------------------------------------------------------------- deployment, Ascend

def validate_command(command: str, module: str | None) -> dict:
    """Parse our commands with the script's own parser (a renamed flag fails the export)."""
    if module is None:
        return {"checked": "external tool, not run on this project's machines / 外部工具，未在本项目机器上运行"}
    argv = shlex.split(command)
    if module == "run_all":
        proc = subprocess.run(["bash", str(ROOT / argv[1]), "--dry-run", "--local", *argv[2:]], cwd=ROOT, check=False,
                              capture_output=True, text=True, env={**os.environ, "PYTHON": "python3"})
        if proc.returncode != 0:
            raise RuntimeError(f"{command} --dry-run failed: {proc.stderr}")
        return {"checked": "run_all_npu.sh --dry-run accepts it"}
    mod = importlib.import_module(module)
    start = argv.index(next(a for a in argv if a.endswith(".py"))) + 1
    try:
        mod.build_parser().parse_args(argv[start:])
    except SystemExit:
        raise RuntimeError(f"{command}: {module}.build_parser() rejects these flags") from None
    return {"checked": f"{module}.build_parser() accepts it"}


def deployment_facts() -> dict:
    commands = [{"target": target, "command": cmd, **validate_command(cmd, module)}
                for target, cmd, module in DEPLOY_COMMANDS]
    scripts = {}
    for module in ("scripts.convert_to_hf", "scripts.serve_openai_api"):
        scripts[module.replace(".", "/") + ".py"] = parser_flags(importlib.import_module(module).build_parser())
    return {"commands": commands, "script_flags": scripts}


def _usage_block(text: str, header: str) -> list:
    """Lines of one section of run_all_npu.sh's --help (between `header` and the next unindented line)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            break
        if inside and line.strip():
            lines.append(line.strip())
    return lines


def ascend_facts() -> dict:
    script = ROOT / "scripts" / "run_all_npu.sh"
    env = {k: v for k, v in os.environ.items() if k not in ("ASCEND_RT_VISIBLE_DEVICES", "NPROC_PER_NODE")}
    env["PYTHON"] = "python3"
    help_text = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=True,
                               cwd=ROOT).stdout
    dry = subprocess.run(["bash", str(script), "--dry-run", "--local", "demo"], capture_output=True, text=True,
                         cwd=ROOT, env=env, check=False)
    if dry.returncode != 0:
        raise RuntimeError(f"run_all_npu.sh --dry-run --local demo failed: {dry.stderr}")
    all_stages = re.search(r'^ALL_STAGES="([^"]+)"', script.read_text(encoding="utf-8"), re.MULTILINE).group(1).split()
    options = []
    for line in _usage_block(help_text, "Options:"):
        m = re.match(r"(-\S+(?:, -\S+)?(?: [A-Z]+)?(?:\.\.\.)?)\s{2,}(.*)", line)
        if m:
            options.append({"option": m.group(1), "help": m.group(2)})
        elif options:
            options[-1]["help"] += " " + line
    presets = {}
    for line in _usage_block(help_text, "Presets:"):
        # "all  = download build ... eval     core = ...", "demo = pretrain ... eval on the bundled data ..."
        for name, words in re.findall(r"(\w+)\s+=\s+([a-z_]+(?: [a-z_]+)*)", line):
            stages = []
            for word in words.split():
                if word not in all_stages:
                    break
                stages.append(word)
            presets[name] = stages
    dockerfile = (ROOT / "Dockerfile.ascend").read_text(encoding="utf-8")
    return {"dockerfile_path": "Dockerfile.ascend", "dockerfile": dockerfile,
            "dockerfile_args": dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.MULTILINE)),
            "dockerfile_env": dict(re.findall(r"^\s*(?:ENV )?([A-Z_]+)=(\S+?)\s*\\?$", dockerfile.split("ENV", 1)[1]
                                              .split("\n\n")[0], re.MULTILINE)),
            "run_all_help": help_text, "all_stages": all_stages, "options": options, "presets": presets,
            "demo_dry_run": [line for line in dry.stdout.splitlines() if line.strip()]}


# ------------------------------------------------------------------------------------------------------------- main

def build_export() -> dict:
    from model.checkpoint import load_tokenizer
    torch.manual_seed(0)
    tokenizer = load_tokenizer(ROOT / "model")
    return {"schema": SCHEMA,
            "generated_by": "scripts/export_tutorial_data.py",
            "presets": preset_facts(),
            "stages": stage_facts(),
            "lr": lr_facts(),
            "rope": rope_facts(),
            "tiny": tiny_facts(tokenizer),
            "tokenizer": tokenizer_facts(tokenizer),
            "sft_examples": sft_example_facts(tokenizer),
            "deployment": deployment_facts(),
            "ascend": ascend_facts()}


def export_texts() -> dict:
    """{file name: exact text} of every exported file."""
    torch.set_num_threads(1)  # one thread: the same summation order on every machine
    texts = {DATA_FILE: json.dumps(build_export(), ensure_ascii=False, indent=1) + "\n"}
    for name, src in COPIED.items():
        texts[name] = src.read_text(encoding="utf-8")
    return texts


def write_export(out_dir: Path) -> list:
    texts = export_texts()
    for name, text in texts.items():
        atomic_write_text(text, Path(out_dir) / name)
    return sorted(texts)


def stale_files(committed_dir: Path, fresh_dir: Path) -> list:
    """Names of exported files in `committed_dir` that differ from `fresh_dir`.

    Floats count as equal within 1e-4 relative, or within one unit of the last decimal they were rounded to: CPUs
    with other SIMD kernels change a forward's sums in the 7th digit, which can flip a value rounded to 4 decimals
    (0.2210 on one machine, 0.2209 on another) while nothing in the export changed."""
    from decimal import Decimal
    from math import isclose

    def last_unit(x) -> float:
        return 10.0 ** Decimal(repr(float(x))).as_tuple().exponent

    def same(a, b) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
                return False
            return isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or abs(a - b) <= 1.5 * min(last_unit(a), last_unit(b))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    stale = []
    for name in [DATA_FILE, *COPIED]:
        old, new = Path(committed_dir) / name, Path(fresh_dir) / name
        if not old.is_file():
            stale.append(name)
        elif name.endswith(".json") and name == DATA_FILE:
            if not same(json.loads(old.read_text(encoding="utf-8")), json.loads(new.read_text(encoding="utf-8"))):
                stale.append(name)
        elif old.read_bytes() != new.read_bytes():
            stale.append(name)
    return stale


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="教程数据导出 / export the tutorial app's facts from the code",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=DEFAULT_OUT, help="folder the app imports its data from")
    p.add_argument("--check", action="store_true",
                   help="compare a fresh export with --out_dir and exit 1 naming stale files; write nothing")
    args = p.parse_args(argv)
    with user_errors():
        out_dir = args.out_dir if args.out_dir.is_absolute() else ROOT / args.out_dir
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                write_export(Path(tmp))
                stale = stale_files(out_dir, Path(tmp))
            if stale:
                raise UserError(f"the tutorial export in {out_dir} is stale: {', '.join(stale)} differ from what the "
                                "code gives now; run: python scripts/export_tutorial_data.py, then commit "
                                f"{display_path(out_dir)}/")
            print(f"tutorial export in {out_dir} is current")
            return 0
        names = write_export(out_dir)
        print(f"wrote {', '.join(names)} to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
