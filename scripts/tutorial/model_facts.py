"""Facts from the model code: preset shapes and parameter counts, RoPE / YaRN frequencies, and attention,
KV cache and MoE routing values of a tiny real model trained for a few steps with a fixed seed."""
import math
import re

import torch

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
from dataset.lm_dataset import PretrainDataset
from model.runtime import ROOT
from model.model_minimind import PRESETS
from scripts.tutorial.common import r
from trainer.trainer_utils import lr_at, seed_everything

# heads so that GQA is visible. Trained briefly on the bundled pretraining text so attention is not uniform.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "use_moe": True, "max_position_embeddings": 512}
TINY_SEED = 0
TINY_STEPS = 60
TINY_SENTENCE = "小明喜欢吃苹果，因为苹果很甜。"

def preset_configs() -> dict:
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
