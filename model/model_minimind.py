"""MiniMind: a small Llama-style decoder (dense or MoE) that loads MiniMind2 `.pth` files unchanged.

Pre-norm blocks (RMSNorm in fp32) with grouped-query attention, rotate-half RoPE (optionally YaRN-scaled),
SwiGLU feed-forward or a routed mixture of experts with one always-on shared expert, tied embedding/lm_head,
no biases. It is a transformers `PreTrainedModel`, so `from_pretrained`, `save_pretrained` and `generate()` work;
training, evaluation, serving and RL use `model/engine.py` for fast batched decoding with a static KV cache.

State-dict keys and shapes are exactly MiniMind2's: a 512/8 dense model has 75 keys and 25,829,888 parameters.
"""
import math
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast

from .fused_loss import chunked_logprobs

@dataclass
class MiniMindCausalLMOutput(MoeCausalLMOutputWithPast):
    """transformers' MoE causal-LM output plus the per-token log-probs the trainers use."""
    token_logprobs: Optional[torch.FloatTensor] = None


# transformers 5.24 renamed the KV cache argument and output field from `past_key_values` to `cache` (5.0-5.23 use
# the old name; the new versions still accept it but log a deprecation line, which ended up inside chat answers).
# The model accepts both names and returns its cache under whichever field this version's output class declares.
CACHE_FIELD = "cache" if "cache" in MoeCausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

# Cached decoding on CUDA skips cuDNN attention: it builds a new plan (~40 ms) for every new KV length, i.e. every
# decoding step, which made batch-1 decoding of the 512/8 model ~10x slower (15-20 vs ~200 tokens/s on an H100).
DECODE_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

# YaRN settings MiniMind uses when `inference_rope_scaling=True`: 2048 trained positions stretched 16x.
YARN_DEFAULTS = dict(type="yarn", factor=16, original_max_position_embeddings=2048,
                     beta_fast=32.0, beta_slow=1.0, attention_factor=1.0)

# The released MiniMind2 sizes by name, as MiniMindConfig keyword arguments: the one definition the benchmarks
# (scripts/bench/) and the tutorial's size table use. Parameters counted as MiniMind counts them (tied embedding
# once): small 25.8M, base 104M, moe 145M (of which about 92M pass through one token: 2 of 4 routed experts + the
# shared one). tiny is the tests' 64-wide, 2-layer model, for CPU checks of the benchmark scripts themselves.
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2),
    "small": dict(hidden_size=512, num_hidden_layers=8),  # MiniMind2-Small
    "base": dict(hidden_size=768, num_hidden_layers=16),  # MiniMind2
    "moe": dict(hidden_size=640, num_hidden_layers=8, use_moe=True),  # MiniMind2-MoE
}


def default_intermediate_size(hidden_size: int) -> int:
    """SwiGLU width: 8/3 of the hidden size rounded up to a multiple of 64 (1408 at 512, 1728 at 640, 2048 at 768)."""
    return 64 * math.ceil(int(hidden_size * 8 / 3) / 64)


class MiniMindConfig(PretrainedConfig):
    model_type = "minimind"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        dropout: float = 0.0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        pad_token_id: int = 0,
        hidden_act: str = "silu",
        hidden_size: int = 512,
        intermediate_size: Optional[int] = None,
        max_position_embeddings: int = 32768,
        num_attention_heads: int = 8,
        num_hidden_layers: int = 8,
        num_key_value_heads: int = 2,
        vocab_size: int = 6400,
        rms_norm_eps: float = 1e-05,
        rope_theta: float = 1e6,
        inference_rope_scaling: bool = False,
        flash_attn: bool = True,
        use_moe: bool = False,
        num_experts_per_tok: int = 2,
        n_routed_experts: int = 4,
        n_shared_experts: int = 1,
        scoring_func: str = "softmax",
        aux_loss_alpha: float = 0.01,
        seq_aux: bool = True,
        norm_topk_prob: bool = True,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        # MiniMind's config.json also stores the YaRN dict as `rope_scaling`; it is fully determined by
        # inference_rope_scaling, and transformers 5 would rewrite that key into `rope_parameters`, so drop it.
        kwargs.pop("rope_scaling", None)
        kwargs.pop("rope_parameters", None)
        self.dropout = dropout
        self.hidden_act = hidden_act
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size or default_intermediate_size(hidden_size)
        self.max_position_embeddings = max_position_embeddings
        self.num_attention_heads = num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.num_key_value_heads = num_key_value_heads
        self.vocab_size = vocab_size
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.inference_rope_scaling = inference_rope_scaling
        self.flash_attn = flash_attn
        self.use_moe = use_moe
        self.num_experts_per_tok = num_experts_per_tok
        self.n_routed_experts = n_routed_experts
        self.n_shared_experts = n_shared_experts
        self.scoring_func = scoring_func
        self.aux_loss_alpha = aux_loss_alpha
        self.seq_aux = seq_aux
        self.norm_topk_prob = norm_topk_prob
        self.initializer_range = initializer_range
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f"num_attention_heads {num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {num_key_value_heads}")
        if scoring_func != "softmax":
            raise ValueError(f"scoring_func {scoring_func!r} is not supported; MiniMind's gate uses 'softmax'")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def yarn_parameters(self) -> Optional[dict]:
        """The YaRN settings in force, or None for plain RoPE."""
        return dict(YARN_DEFAULTS) if self.inference_rope_scaling else None


# ------------------------------------------------------------------------------------------- Ascend fused kernels

# Tensors on these device types use torch_npu's fused kernels (npu_rms_norm, npu_rotary_mul, npu_swiglu,
# npu_fusion_attention) where the installed torch_npu has them; each op falls back to the generic PyTorch code on
# its own. MINIMIND_NPU_FUSED=0 turns all four off (to rule them out when a CANN version misbehaves). The tests put
# "cpu" here together with a fake torch_npu whose ops are reference implementations.
FUSED_DEVICE_TYPES = set() if os.environ.get("MINIMIND_NPU_FUSED", "1") == "0" else {"npu"}


def npu_op(x: torch.Tensor, name: str):
    """torch_npu's fused kernel `name` for a tensor on an Ascend device, or None (use the generic path).

    torch_npu is looked up, not imported: model/runtime.py imports it when it finds an NPU, and a process without
    one pays nothing per call.
    """
    if x.device.type not in FUSED_DEVICE_TYPES:
        return None
    return getattr(sys.modules.get("torch_npu"), name, None)


# ----------------------------------------------------------------------------------------------------- building blocks

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = npu_op(x, "npu_rms_norm")
        if fused is not None:  # one kernel instead of five; input in the weight's dtype (fp32), like the code below
            return fused(x.to(self.weight.dtype), self.weight, epsilon=self.eps)[0]
        # Normalise in fp32: in fp16 the mean of squares overflows once activations pass ~256.
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def rope_inv_freq(head_dim: int, theta: float, rope_scaling: Optional[dict] = None) -> torch.Tensor:
    """Inverse frequencies per rotary pair, YaRN-adjusted when `rope_scaling` is given.

    YaRN keeps the fast-rotating dims (index < low) as trained, divides the slow ones (index > high) by `factor`,
    and ramps linearly in between; low/high are where a dim completes beta_fast / beta_slow turns over the
    original context length.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if rope_scaling:
        orig = rope_scaling["original_max_position_embeddings"]
        factor = rope_scaling["factor"]

        def turns_to_dim(turns: float) -> float:
            return head_dim * math.log(orig / (turns * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(turns_to_dim(rope_scaling["beta_fast"])), 0)
        high = min(math.ceil(turns_to_dim(rope_scaling["beta_slow"])), head_dim // 2 - 1)
        ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / max(high - low, 1e-3)).clamp(0, 1)
        inv_freq = inv_freq * (1 - ramp) + inv_freq / factor * ramp
    return inv_freq.float()


def precompute_rope(head_dim: int, end: int, theta: float, rope_scaling: Optional[dict] = None):
    """cos/sin tables of shape [end, head_dim] in the rotate-half layout (each frequency repeated for both halves)."""
    inv_freq = rope_inv_freq(head_dim, theta, rope_scaling)
    angles = torch.outer(torch.arange(end, dtype=torch.float32), inv_freq)
    scale = rope_scaling.get("attention_factor", 1.0) if rope_scaling else 1.0
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1) * scale
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1) * scale
    return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q, k: [B, heads, T, D]; cos, sin: [B or 1, T, D]."""
    cos, sin = cos.unsqueeze(1).to(q.dtype), sin.unsqueeze(1).to(q.dtype)
    fused = npu_op(q, "npu_rotary_mul")
    if fused is not None:  # x * cos + rotate_half(x) * sin in one kernel (the same rotate-half layout)
        return fused(q, cos, sin), fused(k, cos, sin)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, kv_heads, T, D] -> [B, kv_heads * n_rep, T, D], each KV head shared by n_rep query heads."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def build_attention_mask(attention_mask: Optional[torch.Tensor], q_len: int, kv_len: int,
                         device: torch.device) -> Optional[torch.Tensor]:
    """Boolean [B|1, 1, q_len, kv_len] mask (True = may attend), or None when plain causal attention suffices.

    `attention_mask` is the usual 2D 0/1 padding mask over all kv positions (cache + new tokens). Query i sits at
    kv position kv_len - q_len + i. A query whose every key is padding (a left-pad slot) is allowed to see itself,
    so no softmax row is empty: an all -inf row would give NaN, and NaN * 0 still poisons the real rows' sums.
    """
    offset = kv_len - q_len
    if attention_mask is None:
        if offset == 0 or q_len == 1:
            return None
        return torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(offset)[None, None]
    causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(offset)
    mask = causal[None] & attention_mask[:, None, :kv_len].bool()
    self_key = torch.zeros_like(causal)
    self_key[torch.arange(q_len, device=device), torch.arange(q_len, device=device) + offset] = True
    return (mask | self_key[None])[:, None]


class Attention(nn.Module):
    # Training forward: SDPA's enable_gqa (KV heads read in place) or expanded KV heads (MiniMind's way; on CUDA it
    # may pick another SDPA kernel). Decoding always uses enable_gqa. A switch for scripts/bench_round3.py step.
    sdpa_gqa = True

    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.use_sdpa = config.flash_attn

    def forward(self, x, cos, sin, mask, past_key_values=None):
        b, t, _ = x.shape
        qkv = getattr(past_key_values, "qkv_weights", None)  # the engine's decode step: one matmul for all three
        if qkv is not None:
            kv_width = self.n_kv_heads * self.head_dim
            q, k, v = F.linear(x, qkv[self.layer_idx]).split([self.n_heads * self.head_dim, kv_width, kv_width], -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        n_rep = self.n_heads // self.n_kv_heads
        # Causal without an explicit mask only when queries and keys line up (no cache offset).
        # an `if`, not an expression: under torch.compile with dynamic shapes the comparison is symbolic, and SDPA
        # takes a plain bool (a branch makes Dynamo guard on it and pass a constant)
        is_causal = False
        if mask is None and t > 1 and k.shape[2] == t:
            is_causal = True
        fused = npu_op(q, "npu_fusion_attention") if q.dtype in (torch.float16, torch.bfloat16) else None
        if self.use_sdpa and fused is not None and past_key_values is None:
            out = self._npu_fusion_attention(fused, q, k, v, mask, is_causal)
        elif self.use_sdpa:
            dropout = self.dropout if self.training else 0.0
            backends = sdpa_kernel(DECODE_SDPA_BACKENDS) if past_key_values is not None and x.is_cuda else nullcontext()
            if x.device.type in ("cpu", "cuda") and (self.sdpa_gqa or past_key_values is not None):
                # enable_gqa reads the shared KV heads in place instead of materialising 4x copies of the cache.
                with backends:
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                         is_causal=is_causal, enable_gqa=n_rep > 1)
            else:  # NPU / MPS kernels, and training with sdpa_gqa off: expand KV heads explicitly
                out = F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), attn_mask=mask,
                                                     dropout_p=dropout, is_causal=is_causal)
        else:
            out = self._plain_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask, is_causal)
        out = out.transpose(1, 2).reshape(b, t, -1)
        return self.resid_dropout(self.o_proj(out))

    def _npu_fusion_attention(self, fused, q, k, v, mask, is_causal):
        """Ascend's flash attention (BNSD layout, shared KV heads read in place). Its mask is True where a score is
        dropped, the opposite of SDPA's; causal attention uses the kernel's own lower-triangular mode
        (sparse_mode=2), which wants a 2048 x 2048 upper-triangular mask whatever the sequence length."""
        if is_causal:
            drop, sparse_mode = torch.ones(2048, 2048, dtype=torch.bool, device=q.device).triu(1), 2
        else:
            drop, sparse_mode = (None if mask is None else ~mask), 0
        keep = 1.0 - self.dropout if self.training else 1.0
        return fused(q, k, v, self.n_heads, "BNSD", atten_mask=drop, scale=1.0 / math.sqrt(self.head_dim),
                     keep_prob=keep, sparse_mode=sparse_mode)[0]

    def _plain_attention(self, q, k, v, mask, is_causal):
        """Reference matmul attention (`flash_attn=False`); must match SDPA, which the tests check."""
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.head_dim)
        if is_causal:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.dropout(scores.softmax(-1), p=self.dropout, training=self.training).type_as(q)
        return probs @ v


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act {config.hidden_act!r} is not supported; MiniMind uses 'silu'")

    def forward(self, x, gate_up: Optional[torch.Tensor] = None):
        """`gate_up`: gate and up weights stacked [2 * intermediate, hidden] (the engine's decode step), one matmul."""
        fused = npu_op(x, "npu_swiglu")
        if gate_up is None and fused is not None:
            gate_up = torch.cat([self.gate_proj.weight, self.up_proj.weight])
        if gate_up is None:
            return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))
        h = F.linear(x, gate_up)
        if fused is not None:  # silu(first half) * second half in one kernel
            return self.dropout(self.down_proj(fused(h, dim=-1)))
        gate, up = h.chunk(2, dim=-1)
        return self.dropout(self.down_proj(F.silu(gate) * up))


def grouped_mm_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype in which torch._grouped_mm can run the experts for `x`, or None to use the per-expert loop.

    CPU runs it in fp32/bf16; CUDA needs bf16 on Hopper or newer (under autocast the input is still fp32, so the
    autocast dtype decides). NPU and MPS use the loop.
    """
    if not hasattr(torch, "_grouped_mm"):
        return None
    if x.device.type == "cpu":  # torch.compile traces grouped_mm in bf16 only (its meta function checks)
        allowed = (torch.bfloat16,) if torch.compiler.is_compiling() else (torch.float32, torch.bfloat16)
        return x.dtype if x.dtype in allowed else None
    if x.device.type == "cuda" and torch.cuda.get_device_capability(x.device)[0] >= 9:
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
        return torch.bfloat16 if dtype == torch.bfloat16 else None
    return None


class MoEFeedForward(nn.Module):
    """Top-k routed experts plus always-on shared experts (DeepSeek-MoE style, as in MiniMind2-MoE).

    Tokens are dispatched by sorting their routing slots by expert, so each expert works on one contiguous slice
    (grouped GEMM where available, else a loop over the slices). Training and inference share this path, and every expert joins the graph even with zero
    tokens (an empty slice still produces zero gradients), so DDP never sees an unused parameter.
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_experts = config.n_routed_experts
        self.norm_topk_prob = config.norm_topk_prob
        self.alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        self.dropout = config.dropout
        self.use_grouped_mm = True  # set False to force the per-expert loop (the tests compare both)
        self.gate = nn.Linear(config.hidden_size, self.n_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(config) for _ in range(self.n_experts))
        self.shared_experts = nn.ModuleList(FeedForward(config) for _ in range(config.n_shared_experts))

    def forward(self, x: torch.Tensor):
        b, t, h = x.shape
        flat = x.reshape(-1, h)
        scores = self.gate(flat).float().softmax(dim=-1)  # [N, E]
        weights, experts = torch.topk(scores, self.top_k, dim=-1)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        aux_loss = self.load_balance_loss(scores, experts, b, t) if self.training and self.alpha > 0 else None
        out = self.dispatch(flat, experts, weights.to(x.dtype))
        for shared in self.shared_experts:
            out = out + shared(flat)
        return out.view(b, t, h), aux_loss

    def dispatch(self, flat: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        slot_expert = experts.reshape(-1)
        order = torch.argsort(slot_expert, stable=True)
        slot_token = order // self.top_k
        routed = flat[slot_token]
        # slots per expert by scatter_add: torch.bincount reads its input's max on the host (a sync per layer on
        # CUDA, and a graph break under torch.compile)
        counts = torch.zeros(self.n_experts, dtype=torch.long, device=flat.device).scatter_add_(
            0, slot_expert, torch.ones_like(slot_expert))
        if self.use_grouped_mm and grouped_mm_dtype(routed) is not None and not (self.training and self.dropout):
            routed_out = self.grouped_experts(routed, counts)
        else:
            routed_out = self.looped_experts(routed, counts)
        routed_out = routed_out.to(flat.dtype) * weights.reshape(-1)[order, None]
        return torch.zeros_like(flat).index_add_(0, slot_token, routed_out)

    def looped_experts(self, routed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One matmul chain per expert slice; needs the slice sizes on the host (a sync per layer)."""
        pieces, start = [], 0
        for expert, n in zip(self.experts, counts.tolist()):
            pieces.append(expert(routed[start:start + n]))
            start += n
        return torch.cat(pieces)

    def grouped_experts(self, routed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """All experts in three grouped GEMMs with device-side offsets: no host sync, one kernel per projection.

        The per-expert weights stay separate modules (MiniMind2 key names) and are stacked per call; for the
        145M preset that is 4 x 3 x 1728 x 640 values per layer, small next to the matmuls themselves.
        """
        dtype = grouped_mm_dtype(routed)
        offs = counts.cumsum(0).to(torch.int32)

        def stacked(name):  # [E, in, out] views of nn.Linear weights [out, in]
            return torch.stack([getattr(e, name).weight for e in self.experts]).to(dtype).transpose(1, 2)

        x = routed.to(dtype)
        h = F.silu(torch._grouped_mm(x, stacked("gate_proj"), offs=offs)) * \
            torch._grouped_mm(x, stacked("up_proj"), offs=offs)
        return torch._grouped_mm(h, stacked("down_proj"), offs=offs)

    def load_balance_loss(self, scores: torch.Tensor, experts: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """alpha * sum_e f_e * P_e, with f_e = E * (share of routing slots sent to e), P_e = mean gate prob.

        seq_aux=True computes it per sequence and averages over the batch (MiniMind's default).
        """
        e, k = self.n_experts, self.top_k
        if self.seq_aux:
            counts = torch.zeros(b, e, device=scores.device).scatter_add_(
                1, experts.view(b, t * k), torch.ones(b, t * k, device=scores.device))
            load = counts / (t * k / e)
            return (load * scores.view(b, t, e).mean(dim=1)).sum(dim=1).mean() * self.alpha
        load = F.one_hot(experts.reshape(-1), e).float().mean(0) * e
        return (load * scores.mean(0)).sum() * self.alpha


class MiniMindBlock(GradientCheckpointingLayer):
    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MoEFeedForward(config) if config.use_moe else FeedForward(config)

    def forward(self, x, cos, sin, mask=None, past_key_values=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key_values)
        gate_up = getattr(past_key_values, "gate_up_weights", None)
        if gate_up is not None:
            out = self.mlp(self.post_attention_layernorm(x), gate_up[self.self_attn.layer_idx])
        else:
            out = self.mlp(self.post_attention_layernorm(x))
        out, aux = out if isinstance(out, tuple) else (out, None)
        return x + out, aux


# ------------------------------------------------------------------------------------------------------------ KV cache

class StaticKVCache:
    """Preallocated KV cache written in place: [batch, kv_heads, max_len, head_dim] per layer.

    Appending with torch.cat copies the whole cache every token (O(T^2) bytes per sequence); here each step writes
    only its new slice. Implements the `update`/`get_seq_length` subset of transformers' Cache that the model uses.
    """

    def __init__(self, config: MiniMindConfig, batch_size: int, max_len: int,
                 device=None, dtype: torch.dtype = torch.float32):
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.max_len = max_len
        self.length = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int):
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        self.keys[layer_idx][:, :, self.length:end] = k
        self.values[layer_idx][:, :, self.length:end] = v
        if layer_idx == len(self.keys) - 1:
            self.length = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only these batch rows (finished rows leave the decode batch)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]

    def repeat_interleave(self, n: int) -> None:
        """Give each row n copies, e.g. to decode n samples from one prefilled prompt."""
        self.keys = [k.repeat_interleave(n, dim=0) for k in self.keys]
        self.values = [v.repeat_interleave(n, dim=0) for v in self.values]


# --------------------------------------------------------------------------------------------------------------- model

class MiniMindPreTrainedModel(PreTrainedModel):
    config_class = MiniMindConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiniMindBlock"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, MiniMindModel):
            cos, sin = precompute_rope(self.config.head_dim, self.config.max_position_embeddings,
                                       self.config.rope_theta, self.config.yarn_parameters)
            module.freqs_cos.copy_(cos)
            module.freqs_sin.copy_(sin)


class MiniMindModel(MiniMindPreTrainedModel):
    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MiniMindBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        cos, sin = precompute_rope(config.head_dim, config.max_position_embeddings,
                                   config.rope_theta, config.yarn_parameters)
        # Not persistent: MiniMind2 checkpoints have no rope tables, and they are cheap to rebuild.
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, inputs_embeds=None, **kwargs):
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        h = self.dropout(h)
        b, t = h.shape[:2]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        start = past_key_values.get_seq_length() if past_key_values is not None else 0
        ready_mask = attention_mask is not None and attention_mask.dim() == 4
        if ready_mask and (attention_mask.dtype != torch.bool or position_ids is None):
            raise ValueError("a 4D attention_mask must be a bool [batch, 1, new, kv] mask and come with position_ids")
        if attention_mask is not None and attention_mask.dim() not in (2, 4):
            raise ValueError("attention_mask must be a 2D [batch, past + new] 0/1 padding mask "
                             "(or the engine's 4D bool mask)")
        if position_ids is None:
            if attention_mask is not None:  # left padding: each row counts positions from its first real token
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:start + t]
            else:
                position_ids = torch.arange(start, start + t, device=h.device)[None]
        # (a host read, so skipped while torch.compile traces: it would split the graph in two)
        if position_ids.device.type == "cpu" and not torch.compiler.is_compiling() and \
                int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(f"position {int(position_ids.max())} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        cos, sin = self.freqs_cos[position_ids], self.freqs_sin[position_ids]
        # the engine's batch decoder passes a ready 4D mask (rows that joined at different steps)
        mask = attention_mask if ready_mask else build_attention_mask(attention_mask, t, start + t, h.device)
        aux_losses = []
        for layer in self.layers:
            h, aux = layer(h, cos, sin, mask, past_key_values)
            if aux is not None:
                aux_losses.append(aux)
        aux_loss = torch.stack(aux_losses).sum() if aux_losses else h.new_zeros(())
        return self.norm(h), past_key_values, aux_loss


LOSS_IMPLS = ("logprobs", "cross_entropy", "chunked")


class MiniMindForCausalLM(MiniMindPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # How a forward with `labels` computes the loss (set on an instance to compare; scripts/bench_round3.py step):
    # "logprobs": full logits, per-token log-probs, their masked mean (every stage can use them; the default);
    # "cross_entropy": F.cross_entropy on the full logits, loss only (token_logprobs None: pretrain/SFT only);
    # "chunked": model/fused_loss.py, log-probs through the lm_head in row chunks, logits never whole (logits None).
    loss_impl = "logprobs"

    def __init__(self, config: Optional[MiniMindConfig] = None):
        config = config or MiniMindConfig()
        super().__init__(config)
        self.model = MiniMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = self.model.embed_tokens.weight
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                labels=None, use_cache=False, logits_to_keep: Union[int, torch.Tensor] = 0,
                inputs_embeds=None, cache=None, logprob_len: int = 0, **kwargs) -> "MiniMindCausalLMOutput":
        """`labels` are the input ids themselves (-100 = ignore); the shift by one happens here, as in HF models.

        The KV cache comes as `past_key_values` (transformers < 5.24, our Engine) or `cache` (transformers >= 5.24).

        Per-token log-probs, the one computation SFT, DPO, reasoning SFT and RL share (`token_logprobs` of the output):
        - with `labels`: log p(labels[:, t+1] | ids[:, :t+1]) for t < T-1, 0 where the label is -100; `loss` is
          their negated mean over labelled tokens (0, not NaN, when none is labelled);
        - with `logprob_len=n`: log p of the last n input tokens given what precedes each, computing logits for the
          last n + 1 positions only (RL scores a response this way without the prompt's vocab-sized rows).
        `loss` is the token cross-entropy only; MoE models report the load-balancing term in `aux_loss`
        (zero for dense models and in eval mode), which the trainers add.
        """
        if cache is not None:
            past_key_values = cache
        hidden, past_key_values, aux_loss = self.model(input_ids, attention_mask, position_ids, past_key_values,
                                                       use_cache, inputs_embeds)
        if labels is None and logprob_len > 0:
            logits_to_keep = logprob_len + 1
        if labels is None and isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif labels is None and isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        if labels is not None and self.loss_impl not in LOSS_IMPLS:
            raise ValueError(f"loss_impl {self.loss_impl!r}: use one of {', '.join(LOSS_IMPLS)}")
        chunked = labels is not None and self.loss_impl == "chunked"
        logits = None if chunked else self.lm_head(hidden)
        loss = logprobs = None
        if labels is not None:
            targets = labels[:, 1:]
            labelled = targets != -100
            if chunked:
                logprobs = chunked_logprobs(hidden[:, :-1], self.lm_head.weight, targets.clamp(min=0)) * labelled
            elif self.loss_impl == "cross_entropy":
                loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=-100, reduction="sum") / labelled.sum().clamp(min=1)
            else:
                logprobs = gather_logprobs(logits[:, :-1], targets.clamp(min=0)) * labelled
            if logprobs is not None:
                loss = -logprobs.sum() / labelled.sum().clamp(min=1)
        elif logprob_len > 0:
            logprobs = gather_logprobs(logits[:, :-1], input_ids[:, -logprob_len:])
        return MiniMindCausalLMOutput(loss=loss, aux_loss=aux_loss, logits=logits, token_logprobs=logprobs,
                                      **{CACHE_FIELD: past_key_values if use_cache else None})

    def token_logprobs(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every t: shape [B, T-1] (mask it to reduce)."""
        return self(input_ids, attention_mask=attention_mask, logprob_len=input_ids.shape[1] - 1).token_logprobs


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., target] without materialising the full log-softmax tensor twice."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (the tied embedding/lm_head counted once), as MiniMind reports them."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


AutoConfig.register("minimind", MiniMindConfig, exist_ok=True)
AutoModelForCausalLM.register(MiniMindConfig, MiniMindForCausalLM, exist_ok=True)
