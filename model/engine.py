"""The one generation engine: batched sampling with a preallocated KV cache.

Chat (eval_llm.py), the API server and RL rollouts all decode through `Engine.generate` / `Engine.stream`.
Prompts of different lengths are left-padded into one batch, prefilled once, then decoded one token per step
for every row; `num_samples=G` prefills each prompt once and decodes G rows from copies of its cache
(what GRPO needs). The tests check it against a naive full forward and against `model.generate()`.
"""
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch

from .model_minimind import StaticKVCache


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.85  # <= 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or the output
    stop_ids: Optional[Sequence[int]] = None  # default: the model's eos id
    seed: Optional[int] = None


@dataclass
class Completion:
    prompt_index: int
    sample_index: int
    token_ids: list = field(default_factory=list)
    finish_reason: str = "length"  # "stop" when a stop id was produced (the stop id is not included)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive logits of seen tokens by `penalty`, multiply negative ones (the CTRL / HF convention)."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k and outside the smallest nucleus with mass >= top_p to -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p; the most likely token always stays
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams, seen: Optional[torch.Tensor],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """Pick one token per row from [rows, vocab] logits."""
    logits = logits.float()
    if seen is not None and params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature <= 0:
        return logits.argmax(-1)
    logits = filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


class Engine:
    def __init__(self, model, eos_token_id: Optional[int] = None, pad_token_id: int = 0):
        self.model = model
        self.eos_token_id = model.config.eos_token_id if eos_token_id is None else eos_token_id
        self.pad_token_id = pad_token_id

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def stream(self, prompts: Sequence[Sequence[int]], params: Optional[SamplingParams] = None,
               num_samples: int = 1) -> Iterator[list]:
        """Yield, after every decoding step, a list of (row, token_id) for the rows still running.

        Row r belongs to prompt r // num_samples. A row stops at its first stop id (not yielded) or after
        max_new_tokens; the generator ends when every row has stopped.
        """
        params = params or SamplingParams()
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        model, device = self.model, self.device
        stop_ids = torch.tensor(list(params.stop_ids) if params.stop_ids is not None else [self.eos_token_id],
                                device=device)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device).manual_seed(params.seed)

        n_prompts, longest = len(prompts), max(len(p) for p in prompts)
        total = longest + params.max_new_tokens
        if total > model.config.max_position_embeddings:
            raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                             f"max_position_embeddings {model.config.max_position_embeddings}")
        ids = torch.full((n_prompts, longest), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((n_prompts, total), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = torch.tensor(list(p), dtype=torch.long, device=device)
            mask[i, longest - len(p):longest] = 1
        padded = any(len(p) != longest for p in prompts)  # without padding the mask-free SDPA paths apply

        dtype = next(model.parameters()).dtype
        cache = StaticKVCache(model.config, n_prompts, total, device=device, dtype=dtype)
        positions = (mask[:, :longest].cumsum(-1) - 1).clamp(min=0)
        logits = model(ids, attention_mask=mask[:, :longest] if padded else None, position_ids=positions,
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]

        rows = n_prompts * num_samples
        if num_samples > 1:
            cache.repeat_interleave(num_samples)
            mask = mask.repeat_interleave(num_samples, dim=0)
            ids = ids.repeat_interleave(num_samples, dim=0)
            positions = positions.repeat_interleave(num_samples, dim=0)
            logits = logits.repeat_interleave(num_samples, dim=0)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(rows, logits.shape[-1], dtype=torch.bool, device=device)
            seen.scatter_(1, ids, mask[:, :longest].bool())
        next_pos = positions[:, -1] + 1
        running = torch.ones(rows, dtype=torch.bool, device=device)

        for step in range(params.max_new_tokens):
            token = sample_next(logits, params, seen, generator)
            stopped = torch.isin(token, stop_ids)
            emitted = running & ~stopped
            out = [(r, t) for r, (t, e) in enumerate(zip(token.tolist(), emitted.tolist())) if e]
            running = emitted
            if out:
                yield out
            if not out or step == params.max_new_tokens - 1:
                return
            if seen is not None:
                seen[torch.arange(rows, device=device), token] = True
            cur = longest + step
            mask[:, cur] = 1  # finished rows keep decoding garbage that is never yielded; rows do not interact
            logits = model(token[:, None], attention_mask=mask[:, :cur + 1] if padded else None,
                           position_ids=next_pos[:, None], past_key_values=cache, use_cache=True).logits[:, -1]
            next_pos = next_pos + 1

    def generate(self, prompts: Sequence[Sequence[int]], params: Optional[SamplingParams] = None,
                 num_samples: int = 1, on_token: Optional[Callable[[int, int], None]] = None) -> list:
        """Run `stream` to the end and return one Completion per row (prompt-major order).

        `on_token(row, token_id)` is called for each produced token, for streaming output.
        """
        params = params or SamplingParams()
        rows = [Completion(i // num_samples, i % num_samples) for i in range(len(prompts) * num_samples)]
        for step in self.stream(prompts, params, num_samples):
            for r, t in step:
                rows[r].token_ids.append(t)
                if on_token is not None:
                    on_token(r, t)
        for c in rows:
            if len(c.token_ids) < params.max_new_tokens:
                c.finish_reason = "stop"
        return rows
