"""The one generation engine: batched sampling with a preallocated KV cache.

Chat (eval_llm.py), the API server and RL rollouts all decode through `Engine.generate` / `Engine.stream`.
Prompts of different lengths are left-padded into one batch, prefilled once, then decoded one token per step
for every running row; `num_samples=G` prefills each prompt once and decodes G rows from copies of its cache
(what GRPO needs). Each step reports its tokens and which rows ended and why (stop id, length, cancelled); ended
rows leave the batch, so an RL batch whose answers stop early no longer pays for its longest one on every row.
The tests check it against a naive full forward and against `model.generate()`.
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
    finish_reason: str = "length"  # "stop": a stop id was produced (not included); "cancelled"


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


@dataclass
class Step:
    """What one decoding step produced: `tokens` [(row, token_id)] for rows still running, and `finished`
    [(row, reason)] for rows that ended at this step: "stop" (a stop id, which is not yielded), "length"
    (max_new_tokens reached; its last token is in `tokens` of the same step) or "cancelled"."""
    tokens: list = field(default_factory=list)
    finished: list = field(default_factory=list)

    def __iter__(self):  # `for row, token_id in step` reads the tokens
        return iter(self.tokens)


class Decoding:
    """A running `Engine.stream`: iterate it for `Step`s; `cancel(row)` ends a row before the next step.

    Ended rows (stopped, at their length, cancelled) leave the decode batch: the KV cache and per-row state are
    compacted to the rows still running, so a batch costs what its live rows cost, not its longest row.
    """

    def __init__(self, engine: "Engine", prompts, params: "SamplingParams", num_samples: int):
        self._cancelled = set()
        self.forward_rows = []  # rows in each forward pass (prefill first): what cancelling saves is visible here
        self._gen = engine._decode(prompts, params, num_samples, self._cancelled, self.forward_rows)

    def cancel(self, row: int) -> None:
        self._cancelled.add(row)

    def __iter__(self):
        return self

    def __next__(self) -> Step:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()


class Engine:
    def __init__(self, model, eos_token_id: Optional[int] = None, pad_token_id: int = 0):
        self.model = model
        self.eos_token_id = model.config.eos_token_id if eos_token_id is None else eos_token_id
        self.pad_token_id = pad_token_id

    @property
    def device(self):
        return next(self.model.parameters()).device

    def stream(self, prompts: Sequence[Sequence[int]], params: Optional[SamplingParams] = None,
               num_samples: int = 1) -> Decoding:
        """Decode every prompt (num_samples rows each; row r belongs to prompt r // num_samples), one `Step` per
        decoding step, until every row has finished; each row's end comes as a (row, reason) in `Step.finished`.
        """
        params = params or SamplingParams()
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        longest = max(len(p) for p in prompts)
        if longest + params.max_new_tokens > self.model.config.max_position_embeddings:
            raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                             f"max_position_embeddings {self.model.config.max_position_embeddings}")
        return Decoding(self, prompts, params, num_samples)

    @torch.inference_mode()
    def _decode(self, prompts, params: SamplingParams, num_samples: int, cancelled: set,
                forward_rows: list) -> Iterator[Step]:
        model, device = self.model, self.device
        stop_ids = torch.tensor(list(params.stop_ids) if params.stop_ids is not None else [self.eos_token_id],
                                device=device)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device).manual_seed(params.seed)

        n_prompts, longest = len(prompts), max(len(p) for p in prompts)
        total = longest + params.max_new_tokens
        ids = torch.full((n_prompts, longest), self.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((n_prompts, total), dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = torch.tensor(list(p), dtype=torch.long, device=device)
            mask[i, longest - len(p):longest] = 1
        padded = any(len(p) != longest for p in prompts)  # without padding the mask-free SDPA paths apply

        dtype = next(model.parameters()).dtype
        cache = StaticKVCache(model.config, n_prompts, total, device=device, dtype=dtype)
        positions = (mask[:, :longest].cumsum(-1) - 1).clamp(min=0)
        forward_rows.append(n_prompts)
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
        live = list(range(rows))  # batch index -> row id of the rows still decoding

        for step in range(params.max_new_tokens):
            token = sample_next(logits, params, seen, generator)
            stopped = torch.isin(token, stop_ids).tolist()  # the one host sync per step
            out = Step()
            for b, (r, t, s) in enumerate(zip(live, token.tolist(), stopped)):
                if r in cancelled:
                    out.finished.append((r, "cancelled"))
                elif s:
                    out.finished.append((r, "stop"))
                else:
                    out.tokens.append((r, t))
                    if step == params.max_new_tokens - 1:
                        out.finished.append((r, "length"))
            yield out
            if step == params.max_new_tokens - 1:
                return
            ended = {r for r, _ in out.finished}
            late = [r for r in live if r in cancelled and r not in ended]  # cancelled while this step was out
            if late:
                yield Step(finished=[(r, "cancelled") for r in late])
                ended.update(late)
            keep = [b for b, r in enumerate(live) if r not in ended]
            if not keep:
                return
            if len(keep) < len(live):  # drop ended rows from the batch: their compute stops here
                index = torch.tensor(keep, device=device)
                cache.select_rows(index)
                token, mask, next_pos = token[index], mask[index], next_pos[index]
                seen = seen[index] if seen is not None else None
                live = [live[b] for b in keep]
                padded = True  # rows of different lengths may remain; the mask handles any mix
            if seen is not None:
                seen[torch.arange(len(live), device=device), token] = True
            cur = longest + step
            mask[:, cur] = 1
            forward_rows.append(len(live))
            logits = model(token[:, None], attention_mask=mask[:, :cur + 1] if padded else None,
                           position_ids=next_pos[:, None], past_key_values=cache, use_cache=True).logits[:, -1]
            next_pos = next_pos + 1

    def generate(self, prompts: Sequence[Sequence[int]], params: Optional[SamplingParams] = None,
                 num_samples: int = 1, on_token: Optional[Callable[[int, int], None]] = None) -> list:
        """Run `stream` to the end and return one Completion per row (prompt-major order).

        `on_token(row, token_id)` is called for each produced token, for streaming output.
        """
        rows = [Completion(i // num_samples, i % num_samples) for i in range(len(prompts) * num_samples)]
        for step in self.stream(prompts, params, num_samples):
            for r, t in step.tokens:
                rows[r].token_ids.append(t)
                if on_token is not None:
                    on_token(r, t)
            for r, reason in step.finished:
                rows[r].finish_reason = reason
        return rows
