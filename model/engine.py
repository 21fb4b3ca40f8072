"""The one generation engine: batched sampling over a preallocated KV cache that rows join and leave.

Chat (eval_llm.py), the API server and RL rollouts all decode through `Engine`:
- `Engine.stream(prompts)` / `Engine.generate(prompts)`: one batch that starts together (evaluation, RL; with
  `num_samples=G` each prompt is prefilled once and decoded G times from copies of its cache, what GRPO needs);
- `Engine.batch(max_rows, max_len)`: a `BatchDecoder` that new prompts join between decoding steps (continuous
  batching, the API server), each row with its own sampling settings and budget.
Both are the same code: `stream` is a BatchDecoder whose rows all join at step 0.

The cache layout: every row writes its next key/value at one shared column (the timeline T); a row's tokens sit
in columns [start_r, T), so a row that joins later is a left-padded row of the same batch and one slice write per
layer serves every row. A joining prompt is prefilled on its own and its cache copied in so that it ends at T.
Ended rows (stop id, length, cancelled) leave the batch: rows are compacted in place, so a batch costs what its
live rows cost. When T reaches the end of the buffer, the columns before the oldest live row are dropped.

On CUDA the decode forward is replayed from CUDA graphs captured per (batch bucket, column bucket), and stop
checks stay on the device: tokens are copied to the host every `sync_every` steps, not every token. Batch-1
decoding of a small model is pure kernel-launch overhead, which is what the graphs remove. Every buffer a graph
reads is preallocated and updated in place. The tests check greedy output against a naive full forward, against
`model.generate()`, and the bucketed (graph-shaped) path against the exact-shaped one.
The graph also holds the greedy pick and stop check, so an all-greedy batch launches almost nothing else per step.
On CUDA the decode step is also torch.compile'd by default (layers' small ops fused: about 2x at batch 1), without
making anyone wait for it: a background thread compiles it (a minute cold, seconds from the disk cache of
model/compile_cache.py) while the graphs of the plain step serve; at the next chunk boundary after it is ready the
decoders drop their graphs and capture the compiled step. `MINIMIND_DECODE=graphs` keeps the plain step (no compile),
`MINIMIND_DECODE=compile` compiles in the first call instead (the old opt-in, for benchmarks). Accelerators also
stack each layer's q/k/v and gate/up weights (StackedProjections): two matmuls per layer instead of five.
`MINIMIND_DECODE=eager` turns graphs, compile, stacking and chunked reads off (a host read every step): the plain
path, for comparisons and for debugging a graph problem.
"""
import atexit
import ctypes
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.fx.experimental._config as fx_config

from .compile_cache import artifact_key, cache_root, load_artifacts, save_artifacts, use_inductor_cache
from .model_minimind import FeedForward, MiniMindBlock, StaticKVCache

log = logging.getLogger("minimind.engine")


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.85  # <= 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the prompt or the output
    stop_ids: Optional[Sequence[int]] = None  # default: the model's eos id
    seed: Optional[int] = None
    # grammar-constrained decoding (model/constrain.py): an object whose start() gives each row its own state, with
    # needs_mask(), fill(bitmask, index) and consume(token_id); None decodes freely
    constraint: Optional[object] = None


@dataclass
class Completion:
    prompt_index: int
    sample_index: int
    token_ids: list = field(default_factory=list)
    finish_reason: str = "length"  # "stop": a stop id was produced (not included); "cancelled"


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty) -> torch.Tensor:
    """Divide positive logits of seen tokens by `penalty`, multiply negative ones (the CTRL / HF convention).
    `penalty` is a number or a [rows, 1] tensor (one per row)."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k, top_p) -> torch.Tensor:
    """Set logits outside the top-k and outside the smallest nucleus with mass >= top_p to -inf.

    `top_k` / `top_p` are numbers or per-row tensors ([rows] long / float; top_k 0 and top_p 1 mean no filter).
    """
    vocab = logits.shape[-1]
    if not torch.is_tensor(top_k):
        top_k = torch.full(logits.shape[:-1], int(top_k), dtype=torch.long, device=logits.device)
    if not torch.is_tensor(top_p):
        top_p = torch.full(logits.shape[:-1], float(top_p), device=logits.device)
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    rank = torch.arange(vocab, device=logits.device)
    k = torch.where((top_k > 0) & (top_k < vocab), top_k, vocab)
    drop = rank >= k[..., None]
    probs = sorted_logits.softmax(-1)
    # drop a token when the mass before it already reaches top_p; the most likely token always stays
    nucleus = (top_p > 0) & (top_p < 1)
    drop |= nucleus[..., None] & ((probs.cumsum(-1) - probs) >= top_p[..., None])
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def sample_next(logits: torch.Tensor, params: SamplingParams, seen: Optional[torch.Tensor],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """Pick one token per row from [rows, vocab] logits, all rows with the same settings."""
    logits = logits.float()
    if seen is not None and params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.temperature <= 0:
        return logits.argmax(-1)
    logits = filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


_SHIFTS: Dict[torch.device, torch.Tensor] = {}


def unpack_token_bitmask(bits: torch.Tensor, vocab: int) -> torch.Tensor:
    """[rows, words] int32 bitmasks (token t allowed when bit t % 32 of word t // 32 is set, the layout llguidance
    and xgrammar fill) -> [rows, vocab] bool."""
    shifts = _SHIFTS.get(bits.device)
    if shifts is None:  # made once per device: on CUDA each small op is a kernel launch, paid every step
        shifts = _SHIFTS[bits.device] = 1 << torch.arange(32, device=bits.device, dtype=torch.int32)
    return (bits[:, :, None] & shifts).ne(0).flatten(1)[:, :vocab]


@dataclass
class Step:
    """What one decoding step produced: `tokens` [(row, token_id)] for rows still running, and `finished`
    [(row, reason)] for rows that ended at this step: "stop" (a stop id, which is not yielded), "length"
    (max_new_tokens reached; its last token is in `tokens` of the same step) or "cancelled"."""
    tokens: list = field(default_factory=list)
    finished: list = field(default_factory=list)

    def __iter__(self):  # `for row, token_id in step` reads the tokens
        return iter(self.tokens)


# ------------------------------------------------------------------------------------------------------ the cache

class TimelineKVCache:
    """[max_rows, kv_heads, max_len, head_dim] keys and values per layer, written at one shared column per step.

    A decode forward reaches it through a `_Window` (the rows and columns that step reads); growing, compacting
    and shifting happen here, between steps. One spare column past `length` is never used: a window then never
    spans the whole buffer, so its slices have one layout and one compiled decode step serves every size.
    """

    def __init__(self, config, max_rows: int, length: int, device, dtype):
        shape = (max_rows, config.num_key_value_heads, length + 1, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_hidden_layers)]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] - 1

    def grow(self, length: int, rows: int, lo: int, hi: int) -> None:
        """Reallocate with `length` columns, keeping columns [lo, hi) of the first `rows` rows."""
        def bigger(t):
            new = t.new_zeros(t.shape[0], t.shape[1], length + 1, t.shape[3])
            new[:rows, :, lo:hi] = t[:rows, :, lo:hi]
            return new
        self.keys = [bigger(t) for t in self.keys]
        self.values = [bigger(t) for t in self.values]

    def move_rows(self, keep: torch.Tensor, lo: int, hi: int) -> None:
        """Rows `keep` (in order) become rows 0..len(keep)-1; only columns [lo, hi) hold live data."""
        n = keep.numel()
        for t in self.keys + self.values:
            t[:n, :, lo:hi] = t[keep, :, lo:hi]

    def shift(self, rows: int, lo: int, hi: int, by: int) -> None:
        """Move columns [lo, hi) of the first `rows` rows by `by` columns (left when negative)."""
        for t in self.keys + self.values:
            t[:rows, :, lo + by:hi + by] = t[:rows, :, lo:hi].clone()

    def place(self, row0: int, prefill: StaticKVCache, end: int, index: torch.Tensor) -> None:
        """Copy prefilled rows `index` (repeats allowed) into rows row0.. so their last column lands at end - 1."""
        width = prefill.length
        for dst, src in zip(self.keys + self.values, prefill.keys + prefill.values):
            dst[row0:row0 + index.numel(), :, end - width:end] = src.index_select(0, index)[:, :, :width]


class StackedProjections:
    """A dense model's q/k/v weights and gate/up weights stacked per layer: the decode step then runs two matmuls
    per layer where the modules run five. At batch 1 each matmul is a kernel whose launch and ramp-up cost more
    than its arithmetic (a 26M model's weights stream in about 15 us on an H200).

    The stacks are copies. `refresh()` copies again, in place (captured CUDA graphs keep their addresses), any
    layer whose weights changed since: RL trains the policy between rollouts, and a load_state_dict replaces them.
    `of(model)` returns None where stacking would bypass something, so the modules' own forward runs: MoE
    feed-forwards keep theirs, and a LoRA-wrapped or hooked projection disables stacking altogether.
    """

    def __init__(self, attn_sources: list, mlp_sources: list):
        self.sources = attn_sources + mlp_sources
        self.qkv_weights = [self._stack(ws) for ws in attn_sources]
        self.gate_up_weights = [self._stack(ws) for ws in mlp_sources] if mlp_sources else None
        self.stacks = self.qkv_weights + (self.gate_up_weights or [])
        self.seen = [self._stamp(ws) for ws in self.sources]

    @staticmethod
    def of(model) -> Optional["StackedProjections"]:
        blocks = sorted((m for m in model.modules() if isinstance(m, MiniMindBlock)),
                        key=lambda m: m.self_attn.layer_idx)

        def plain(module) -> bool:  # exactly nn.Linear without bias or hooks: its forward is F.linear(x, weight)
            return (type(module) is torch.nn.Linear and module.bias is None and not module._forward_hooks
                    and not module._forward_pre_hooks)

        attn = [[b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj] for b in blocks]
        dense = all(type(b.mlp) is FeedForward for b in blocks)
        mlp = [[b.mlp.gate_proj, b.mlp.up_proj] for b in blocks] if dense else []
        if not blocks or not all(plain(m) for group in attn + mlp for m in group) or \
                [b.self_attn.layer_idx for b in blocks] != list(range(len(blocks))):
            return None
        if dense and any(b.mlp.down_proj._forward_hooks or b.mlp.down_proj._forward_pre_hooks for b in blocks):
            mlp = []
        return StackedProjections([[m.weight for m in g] for g in attn], [[m.weight for m in g] for g in mlp])

    @staticmethod
    def _stamp(weights: list) -> tuple:
        return tuple((w._version, w.data_ptr(), w.dtype) for w in weights)

    @staticmethod
    @torch.no_grad()
    def _stack(weights: list) -> torch.Tensor:
        return torch.cat([w.detach() for w in weights])

    @torch.no_grad()
    def refresh(self) -> int:
        """Re-copy the layers whose weights changed; returns how many stacks were copied."""
        copied = 0
        for i, weights in enumerate(self.sources):
            stamp = self._stamp(weights)
            if stamp != self.seen[i]:
                if self.stacks[i].dtype != weights[0].dtype:
                    raise RuntimeError("the model's weights changed dtype under a running engine; make a new Engine")
                torch.cat([w.detach() for w in weights], out=self.stacks[i])
                self.seen[i] = stamp
                copied += 1
        return copied


class _Window:
    """What one decode forward sees of the cache: rows 0..rows-1, columns 0..cols-1, writing at `column`; and the
    stacked projection weights the layers use instead of their separate ones (None: the modules' own).

    Built inside `decode_logits`, so under torch.compile `rows` and `cols` are symbolic sizes of its inputs and one
    compiled graph serves every batch and column bucket. `column` is a 1-element device tensor: a captured CUDA
    graph reads it at replay.
    """

    def __init__(self, keys: list, values: list, column: torch.Tensor, rows: int, cols: int,
                 qkv_weights: Optional[list] = None, gate_up_weights: Optional[list] = None):
        self.keys, self.values, self.column, self.rows, self.cols = keys, values, column, rows, cols
        self.qkv_weights, self.gate_up_weights = qkv_weights, gate_up_weights

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.cols - 1

    def update(self, k: torch.Tensor, v: torch.Tensor, layer_idx: int):
        keys, values = self.keys[layer_idx][:self.rows], self.values[layer_idx][:self.rows]
        keys.index_copy_(2, self.column, k.to(keys.dtype))  # no-op unless autocast changed the dtype
        values.index_copy_(2, self.column, v.to(values.dtype))
        return keys[:, :, :self.cols], values[:, :, :self.cols]


def decode_logits(model, rows: int, cols: int, token: torch.Tensor, pos: torch.Tensor, start: torch.Tensor,
                  column: torch.Tensor, columns: torch.Tensor, keys: list, values: list,
                  qkv_weights: Optional[list] = None, gate_up_weights: Optional[list] = None) -> torch.Tensor:
    """One decode forward for rows 0..rows-1 of the per-row buffers: each row's last `token` at position `pos`
    writes cache column `column` and attends to its columns [start, column] among 0..cols-1 (`columns` is
    arange(max_len)); returns next-token logits [rows, vocab]. `qkv_weights` / `gate_up_weights`: a
    `StackedProjections`' lists, or None.

    A plain function of whole buffers and two sizes, so `torch.compile(decode_logits, dynamic=True)` fuses the
    layers' small ops once for every batch and column size (slices passed in would be views whose base size gets
    guarded on); the eager path calls it as it is.
    """
    token, pos, start, columns = token[:rows], pos[:rows], start[:rows], columns[:cols]
    window = _Window(keys, values, column, rows, cols, qkv_weights, gate_up_weights)
    mask = (columns[None, :] >= start[:, None]) & (columns[None, :] <= column)
    out = model(token[:, None], attention_mask=mask[:, None, None, :], position_ids=pos[:, None],
                past_key_values=window, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1]


PREFILL_TOKENS = 16384  # padded prompt tokens per prefill forward when several prompts join at once
# torch.compile of the decode step doubles batch-1 speed on an H200, but a cold compile took 55 s (26M) to 147 s (104M)
# there, too long to make a chat's first reply wait for: on CUDA it is built in a background thread (BackgroundCompile)
COMPILE_IN_BACKGROUND_ON_CUDA = True
DECODE_BACKEND = "inductor"  # tests put a counting backend here (Dynamo only) to check the switch-over in seconds
_told_compiling = False


def _offsets(chunk: list) -> list:
    """Index of each queued add()'s first prompt in the chunk's prompt list."""
    out, n = [], 0
    for _, prompts, _, _ in chunk:
        out.append(n)
        n += len(prompts)
    return out


def _bucket(n: int, limit: int, smallest: int = 1) -> int:
    """The next power of two >= n (at least `smallest`), capped at `limit`: the shapes CUDA graphs are kept for."""
    b = smallest
    while b < n:
        b *= 2
    return min(b, limit)


@dataclass
class _Row:
    id: int
    group: int  # rows added by one add() call share sampling settings and a seeded generator
    max_new: int
    produced: int = 0
    done: bool = False  # a stop id came while tokens stayed on the device (not yielded past it)
    constraint: Optional[object] = None  # this row's grammar state (SamplingParams.constraint.start())
    fed_step: int = -1  # the last step of the current chunk whose token the constraint has consumed


@dataclass
class _Group:
    params: SamplingParams
    generator: Optional[torch.Generator]
    sampled: bool


class BatchDecoder:
    """A decoding batch that prompts join between steps: `add()` queues prompts, each `step()` returns one `Step`.

    Row ids are handed out by `add` and never reused. `cancel(row)` ends a row at the next step. At most
    `max_rows` rows decode at once; `free_rows` says how many more fit. A row's prompt + max_new_tokens must fit in
    `max_len`. `sync_every` > 1 keeps up to that many steps on the device between host reads (on CUDA); joins and
    cancels then take effect at those boundaries.
    """

    def __init__(self, engine: "Engine", max_rows: int, max_len: int, sync_every: int = 1,
                 cuda_graphs: bool = False, static_shapes: Optional[bool] = None):
        model = engine.model
        self.engine, self.model, self.config = engine, model, model.config
        self.max_rows, self.max_len, self.sync_every = max_rows, max_len, max(1, sync_every)
        device = self.device = engine.device
        dtype = next(model.parameters()).dtype
        if torch.is_autocast_enabled(device.type):  # RL: an fp32 policy decoding under bf16 autocast
            dtype = torch.get_autocast_dtype(device.type)  # the k/v the layers produce, at half the cache memory
        self.vocab = model.config.vocab_size
        # columns are allocated as needed up to max_len (a server with --max_model_len 32768 must not reserve
        # 32768 columns per row up front); growing drops captured graphs, which point at the old buffers
        self.cache = TimelineKVCache(model.config, max_rows, min(max_len, 512), device, dtype)
        z = dict(device=device)
        # per-row state, preallocated and updated in place (a captured graph reads these addresses)
        self.start = torch.zeros(max_rows, dtype=torch.long, **z)  # first live column of each row
        self.pos = torch.zeros(max_rows, dtype=torch.long, **z)  # RoPE position of each row's next token
        self.token = torch.zeros(max_rows, dtype=torch.long, **z)  # each row's last sampled token
        self.temperature = torch.ones(max_rows, **z)
        self.top_p = torch.ones(max_rows, **z)
        self.top_k = torch.zeros(max_rows, dtype=torch.long, **z)
        self.penalty = torch.ones(max_rows, **z)
        self.stop = torch.zeros(max_rows, self.vocab, dtype=torch.bool, **z)
        self.seen: Optional[torch.Tensor] = None  # [max_rows, vocab] once a row uses repetition_penalty
        self.column = torch.zeros(1, dtype=torch.long, **z)
        self.columns = torch.arange(max_len, **z)
        self.rows: List[_Row] = []  # batch index -> row
        self.starts: List[int] = []  # host copy of start
        self.T = 0  # the shared write column
        self.pending = 0  # rows 0..pending-1 have a sampled token whose forward has not run yet
        self.queue: list = []  # (ids, prompts, group, num_samples) waiting for the next step
        self.groups: Dict[int, _Group] = {}
        self.cancelled: set = set()
        self.forward_rows: List[int] = []  # rows in each forward pass: what leaving the batch saves is visible here
        self.ready: list = []  # Steps computed on the device and read back, not yet returned
        self._next_id = self._next_group = 0
        self.graphs: Dict[tuple, tuple] = {}
        self._captured_fn = engine.decode_fn  # the decode step the graphs hold
        self.use_graphs = cuda_graphs and device.type == "cuda"
        # graph-shaped decode forwards (rows and columns rounded up to buckets); on without graphs only in tests,
        # to check on CPU that the padded rows and masked columns a graph computes change no output
        self.static_shapes = self.use_graphs if static_shapes is None else static_shapes
        self._graph_pool = None
        self._sample_plan = None
        self.greedy: Optional[torch.Tensor] = None  # [2, rows] tokens and stop flags the decode step computed
        self._bitmask: Optional[torch.Tensor] = None  # [max_rows, ceil(vocab / 32)] int32 allowed-token bits (host)
        self._fed: Optional[tuple] = None  # the last step's tokens on their way to the host, for the constraints
        self._host_fed: Optional[tuple] = None  # (pinned [max_rows, 2] tokens and stop flags, its CUDA event)

    # ------------------------------------------------------------------------------------------ adding rows

    @property
    def active(self) -> int:
        """Rows decoding or queued to join. A running row that was cancelled no longer counts: the next step
        drops it (`_leave`) before it prefills anything queued (`_join`), so the batch never holds more than
        max_rows, and a scheduler that preempts a row can hand its place to a waiting request in the same step.
        A cancelled row still in the queue counts until that step (it may join with its group, then leave)."""
        return sum(not r.done and r.id not in self.cancelled for r in self.rows) + \
            sum(len(q[1]) * q[3] for q in self.queue)

    @property
    def free_rows(self) -> int:
        return self.max_rows - self.active

    @property
    def idle(self) -> bool:
        """Nothing left to report: no queued prompt, no unread step, every row ended (and not awaiting a cancel)."""
        return not self.queue and not self.ready and all(r.done for r in self.rows)

    def reset(self) -> None:
        """Forget every row (a reused decoder starts empty; its cache and captured graphs stay)."""
        self.rows, self.starts, self.queue, self.ready = [], [], [], []
        self.groups, self.cancelled, self.forward_rows = {}, set(), []
        self.T = self.pending = self._next_id = self._next_group = 0  # row ids count from 0 per use
        self._fed = None
        self.start.zero_()
        self.pos.zero_()
        self.token.zero_()
        self._sample_plan = None

    def add(self, prompts: Sequence[Sequence[int]], params: Optional[SamplingParams] = None,
            num_samples: int = 1) -> List[int]:
        """Queue prompts (num_samples rows each) to join at the next step; returns their row ids."""
        params = params or SamplingParams()
        if self.engine.stacked is not None:
            self.engine.stacked.refresh()  # the weights may have been trained since the last add
        if self.engine.background is not None:
            self.engine.background.start()  # once per engine; here because add() knows the caller's autocast
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        n = len(prompts) * num_samples
        if n > self.free_rows:
            raise ValueError(f"{n} rows do not fit: {self.free_rows} of {self.max_rows} free")
        longest = max(len(p) for p in prompts)
        if longest + params.max_new_tokens > self.max_len:
            raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                             f"the {self.max_len} positions of this batch")
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        group = self._next_group
        self._next_group += 1
        self.groups[group] = _Group(params, generator, params.temperature > 0)
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        self.queue.append((ids, [list(p) for p in prompts], group, num_samples))
        return ids

    def cancel(self, row: int) -> None:
        self.cancelled.add(row)

    def warm_up(self) -> None:
        """Run a few greedy steps at a batch of 1 and of 2 rows, then forget them: with CUDA graphs this compiles
        the decode step (one graph serves 1 row, another every larger batch) and captures its first graphs, so
        a server's first requests do not wait for that. Nothing to do without graph-shaped steps."""
        if not (self.use_graphs or self.static_shapes) or not self.idle:
            return
        params = SamplingParams(max_new_tokens=2, temperature=0, stop_ids=[])
        for rows in sorted({1, min(2, self.max_rows)}):
            self.add([[1, 2]] * rows, params)
            while not self.idle:
                self.step()
            self.reset()

    # ------------------------------------------------------------------------------------------ stepping

    def step(self) -> Step:
        """One decoding step: tokens of every running row, and the rows that ended."""
        if not self.ready:
            self._advance()
        return self.ready.pop(0) if self.ready else Step()

    @torch.inference_mode()
    def _advance(self) -> None:
        """Leave, join, then run up to `sync_every` steps on the device and read their tokens back at once.

        Leave comes first so that rows a scheduler cancelled (a client gone, a preempted row) free their places
        before anything queued is prefilled into them: the batch never holds more than max_rows, and a row given
        back by a preemption is reused in the same step. Joins happen only at the first of the `sync_every` steps:
        a prefill mid-chunk would need a host read to know the new rows' starts, which is what the chunk avoids
        (sync_every 8 on CUDA: one read per 8 tokens)."""
        if self.engine.background is not None:
            self.engine.take_compiled()
        if self.engine.decode_fn is not self._captured_fn:  # compiled step ready (or compile failed): recapture
            self._captured_fn = self.engine.decode_fn
            self.graphs.clear()
            self._graph_pool = None
        ended = self._leave()
        if not self.rows and not self.queue:
            if ended:
                self.ready.append(Step(finished=ended))
            return
        # no row may pass its budget inside a chunk (stop ids may: those rows idle until the read-back)
        steps = max(1, min([self.sync_every] + [r.max_new - r.produced for r in self.rows if not r.done]
                           + [self.groups[q[2]].params.max_new_tokens for q in self.queue]))
        chunk = []
        for i in range(steps):
            if self.pending:
                self._decode_forward()
            if i == 0:
                self._join()
            elif self._fed is not None:
                # the previous step's tokens, read while this step's forward runs (CUDA): constrained rows need them
                # for their next mask, so a constrained batch reads one small copy per step, not per chunk
                self._feed_constraints(self._fed_tokens(), i - 1)
            chunk.append(self._sample())
        self._read_back(chunk, ended)

    def _leave(self) -> list:
        """Drop rows that ended or were cancelled; returns the cancelled ones' finish events."""
        ended = [(r.id, "cancelled") for r in self.rows if r.id in self.cancelled and not r.done]
        for r in self.rows:
            if r.id in self.cancelled:
                r.done = True
        for ids, _, _, _ in self.queue:  # cancelled before joining (partly cancelled ones join, then leave)
            if all(i in self.cancelled for i in ids):
                ended += [(i, "cancelled") for i in ids]
        self.queue = [q for q in self.queue if not all(i in self.cancelled for i in q[0])]
        keep = [b for b, r in enumerate(self.rows) if not r.done]
        if len(keep) < len(self.rows):
            if keep:
                if keep != list(range(len(keep))):
                    self._compact(keep)
            self.rows = [self.rows[b] for b in keep]
            self.starts = [self.starts[b] for b in keep]
            n = len(self.rows)
            self.start[n:] = 0  # unused rows see column 0 only, so a graph's spare rows never make NaN
            self.pos[n:] = 0
            self.token[n:] = 0
            self.pending = min(self.pending, n)
            self._sample_plan = None
        if not self.rows:
            self.T = self.pending = 0
        live_groups = {r.group for r in self.rows} | {q[2] for q in self.queue}
        self.groups = {g: v for g, v in self.groups.items() if g in live_groups}
        live_ids = {r.id for r in self.rows} | {i for q in self.queue for i in q[0]}
        self.cancelled &= live_ids
        return ended

    def _compact(self, keep: list) -> None:
        index = torch.tensor(keep, device=self.device)
        lo = min(self.starts[b] for b in keep)
        self.cache.move_rows(index, lo, self.T)
        n = len(keep)
        for t in (self.start, self.pos, self.token, self.temperature, self.top_p, self.top_k, self.penalty,
                  self.stop) + ((self.seen,) if self.seen is not None else ()):
            t[:n] = t[index]

    def _make_room(self, need: int) -> None:
        """Make T >= need (shift right) with column T free to write: grow the buffer, or drop the columns before
        the oldest live row. Row budgets (prompt + max_new <= max_len) guarantee one of them works."""
        n = len(self.rows)
        lo = min(self.starts) if self.starts else self.T
        target = max(need, self.T)
        if target + 1 > self.cache.length and lo > 0 and (lo >= self.cache.length // 4
                                                           or self.cache.length >= self.max_len):
            self.cache.shift(n, lo, self.T, -lo)  # compact: cheaper than growing when much of it is dead
            self._shift_starts(-lo)
            self.T -= lo
            lo, target = 0, max(need, self.T)
        if target + 1 > self.cache.length:
            length = _bucket(target + 1, self.max_len)
            if target + 1 > length:
                raise RuntimeError("KV cache full: a row outgrew max_len")  # budgets prevent this
            self.cache.grow(length, n, lo, self.T)
            # the graphs point at the old buffers; their memory pool dies with the last of them, so a later
            # capture needs a new pool (reusing the dead handle trips an allocator assert)
            self.graphs.clear()
            self._graph_pool = None
        if self.T < need:
            if n:
                self.cache.shift(n, lo, self.T, need - self.T)
            self._shift_starts(need - self.T)
            self.T = need

    def _shift_starts(self, by: int) -> None:
        self.starts = [s + by for s in self.starts]
        n = len(self.rows)
        if n:
            self.start[:n] += by

    def _decode_forward(self) -> None:
        """Feed each pending row its last token: writes column T, leaves next-token logits for rows 0..pending-1."""
        self._make_room(0)
        b, T = self.pending, self.T
        self.column.fill_(T)
        self.forward_rows.append(b)
        self.greedy = None
        if self.use_graphs:
            self.logits, self.greedy = self._graph_forward(b, T)
        elif self.static_shapes:
            logits = self._forward(_bucket(b, self.max_rows), _bucket(T + 1, self.cache.length, 64))
            self.logits, self.greedy = logits[:b], self._greedy_head(logits)[:, :b]
        else:
            self.logits = self._forward(b, T + 1)
        self.pos[:b] += 1
        self.T = T + 1

    def _forward(self, rows: int, cols: int) -> torch.Tensor:
        """The decode forward for rows 0..rows-1 reading `cols` columns (T + 1, or a graph's bucket)."""
        stacked = self.engine.stacked
        return self.engine.decode_fn(self.model, rows, cols, self.token, self.pos, self.start, self.column,
                                     self.columns, self.cache.keys, self.cache.values,
                                     *((stacked.qkv_weights, stacked.gate_up_weights) if stacked else ()))

    def _graph_forward(self, rows: int, T: int) -> torch.Tensor:
        b, cols = _bucket(rows, self.max_rows), _bucket(T + 1, self.cache.length, 64)
        entry = self.graphs.get((b, cols))
        if entry is None:
            try:
                entry = self.graphs[(b, cols)] = self._capture(b, cols)
            except Exception as e:  # e.g. an op that syncs with the host; decode eagerly from here on
                torch.cuda.synchronize()
                if self.engine.compiled:
                    self.engine.uncompile(e)
                    return self._graph_forward(rows, T)
                log.warning("CUDA graph capture failed (%s: %s); decoding without graphs", type(e).__name__, e)
                self.use_graphs = self.static_shapes = False
                return self._forward(rows, T + 1), None
        graph, logits, greedy = entry
        graph.replay()
        return logits[:rows], greedy[:, :rows]

    def _greedy_head(self, logits: torch.Tensor) -> torch.Tensor:
        """[2, rows]: greedy next tokens and their stop flags (0/1) for a graph-shaped forward's rows, computed on
        the device, the tokens already written to `token`. Captured in the graph: an all-greedy batch launches
        one copy per step besides the replay."""
        rows = logits.shape[0]
        token = logits.float().argmax(-1)
        self.token[:rows] = token
        return torch.stack((token, self.stop[:rows].gather(1, token[:, None]).squeeze(1).long()))

    def _capture(self, rows: int, cols: int) -> tuple:
        """Warm up on a side stream (the same write the replay would do), then capture the decode forward."""
        global _told_compiling
        if self.engine.compiled and self.engine.compile_seconds is None and not _told_compiling:
            _told_compiling = True
            log.warning("decode: compiling the decode step (torch.compile), about a minute per batch shape the first "
                        "time on a machine, then from the disk cache; MINIMIND_DECODE=graphs skips it")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward(rows, cols)
        torch.cuda.current_stream().wait_stream(stream)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: a background compile may allocate, load kernels or synchronise in its own thread meanwhile,
        # which the default ("global") mode would count as an error in this capture
        with torch.cuda.graph(graph, pool=self._graph_pool, capture_error_mode="thread_local"):
            logits = self._forward(rows, cols)
            greedy = self._greedy_head(logits)
        return graph, logits, greedy

    def _join(self) -> None:
        """Prefill the queued prompts and append their rows after the running ones.

        Prompts of every queued add() share prefill forwards (up to PREFILL_TOKENS padded tokens each): prefill does
        not depend on sampling settings, and 64 short prompts in one forward cost about what a few do alone on CPU.
        """
        if not self.queue:
            return
        queue, self.queue = self.queue, []
        chunk: list = []
        for entry in queue:
            prompts = chunk_prompts = [p for e in chunk + [entry] for p in e[1]]
            if chunk and len(chunk_prompts) * max(len(p) for p in prompts) > PREFILL_TOKENS:
                self._prefill(chunk)
                chunk = []
            chunk.append(entry)
        self._prefill(chunk)
        self._sample_plan = None

    def _prefill(self, chunk: list) -> None:
        prompts = [p for _, group_prompts, _, _ in chunk for p in group_prompts]
        longest = max(len(p) for p in prompts)
        ids_t = torch.full((len(prompts), longest), self.engine.pad_token_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long, device=self.device)
        for i, p in enumerate(prompts):
            ids_t[i, longest - len(p):] = torch.tensor(p, dtype=torch.long, device=self.device)
            mask[i, longest - len(p):] = 1
        padded = any(len(p) != longest for p in prompts)  # without padding the mask-free SDPA paths apply
        prefill = StaticKVCache(self.config, len(prompts), longest, device=self.device, dtype=self.cache.keys[0].dtype)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.forward_rows.append(len(prompts))
        logits = self.model(ids_t, attention_mask=mask if padded else None, position_ids=positions,
                            past_key_values=prefill, use_cache=True, logits_to_keep=1).logits[:, -1]
        # each final row's prompt: prompt-major, num_samples copies in a row (row r of a group -> r // num_samples)
        source = [first + i for first, (_, ps, _, k) in zip(_offsets(chunk), chunk) for i in range(len(ps))
                  for _ in range(k)]
        index = torch.tensor(source, device=self.device)
        lengths = [len(prompts[i]) for i in source]
        self._make_room(longest)
        row0, m, T = len(self.rows), len(source), self.T
        self.cache.place(row0, prefill, T, index)
        rows = slice(row0, row0 + m)
        starts = [T - n for n in lengths]
        self.start[rows] = torch.tensor(starts, device=self.device)
        self.pos[rows] = torch.tensor(lengths, device=self.device)
        self.stop[rows] = False
        b = row0
        for ids, _, group, _ in chunk:
            params = self.groups[group].params
            sl = slice(b, b + len(ids))
            self.temperature[sl] = max(params.temperature, 1e-6)
            self.top_p[sl] = params.top_p
            self.top_k[sl] = params.top_k
            self.penalty[sl] = params.repetition_penalty
            stop_ids = list(params.stop_ids) if params.stop_ids is not None else [self.engine.eos_token_id]
            stop_ids = [i for i in stop_ids if i is not None and 0 <= i < self.vocab]
            if stop_ids:
                self.stop[sl, torch.tensor(stop_ids, device=self.device)] = True
            if params.repetition_penalty != 1.0 and self.seen is None:
                self.seen = torch.zeros(self.max_rows, self.vocab, dtype=torch.bool, device=self.device)
            self.rows += [_Row(i, group, params.max_new_tokens,
                               constraint=params.constraint.start() if params.constraint is not None else None)
                          for i in ids]
            b += len(ids)
        if self.seen is not None:
            self.seen[rows] = False
            self.seen[rows] = self.seen[rows].scatter(1, ids_t[index], mask[index].bool())
        self.starts += starts
        logits = logits[index]
        self.logits = torch.cat([self.logits[:self.pending], logits]) if self.pending else logits
        self.greedy = None  # the decode step's greedy tokens cover the rows that were running, not the joined ones
        self.pending = len(self.rows)  # everyone now has logits; after sampling, everyone has a token

    def _plan(self) -> tuple:
        """Which rows sample (not greedy), grouped by generator; rebuilt only when the batch changes."""
        if self._sample_plan is None:
            by_gen: Dict[int, list] = {}
            for b, r in enumerate(self.rows):
                g = self.groups[r.group]
                if g.sampled:
                    by_gen.setdefault(r.group if g.generator is not None else -1, []).append(b)
            draws = [(self.groups[k].generator if k >= 0 else None, torch.tensor(v, device=self.device))
                     for k, v in by_gen.items()]
            rows = [self.groups[r.group].params for r in self.rows]
            self._sample_plan = (draws, any(p.repetition_penalty != 1.0 for p in rows),
                                 any(p.temperature > 0 and (p.top_k > 0 or 0 < p.top_p < 1) for p in rows))
        return self._sample_plan

    def _sample(self) -> tuple:
        """Sample every row's next token (on the device); returns (tokens, stopped) for the host read."""
        n = len(self.rows)
        draws, penalise, filtered = self._plan()
        masked = self._constraint_masks(n)
        if self.greedy is not None and not draws and not penalise and masked is None and self.greedy.shape[1] == n:
            token, stopped = self.greedy.clone()  # every row greedy: the decode step picked and wrote them (a
            self.greedy = None  # copy: the graph's output buffer is rewritten by the next replay in this chunk)
            if self.seen is not None:
                self.seen[torch.arange(n, device=self.device), token] = True
            return self._send_to_constraints(token, stopped)
        self.greedy = None
        logits = self.logits[:n].float()
        if masked is not None:  # outside any captured graph: the graph's logits buffer is read, never written
            logits = torch.where(masked, logits, float("-inf"))
        if penalise:
            logits = apply_repetition_penalty(logits, self.seen[:n], self.penalty[:n, None])
        token = logits.argmax(-1)
        if draws:
            scaled = logits / self.temperature[:n, None]
            if filtered:
                scaled = filter_top_k_top_p(scaled, self.top_k[:n], self.top_p[:n])
            probs = scaled.softmax(-1)
            for generator, index in draws:
                token[index] = torch.multinomial(probs[index], 1, generator=generator).squeeze(-1)
        self.token[:n] = token
        if self.seen is not None:
            self.seen[torch.arange(n, device=self.device), token] = True
        return self._send_to_constraints(token, self.stop[:n].gather(1, token[:, None]).squeeze(1))

    # ------------------------------------------------------------------------------------------ constraints

    def _constraint_masks(self, n: int) -> Optional[torch.Tensor]:
        """[n, vocab] allowed tokens when some row's grammar restricts this step, else None (no cost).

        Each constrained row's state fills its bits on the host (llguidance: tens of microseconds for this 6400-token
        vocabulary); one copy moves them to the device, where they become a boolean mask. Free rows keep every token,
        so a free row samples exactly what it would without constrained neighbours."""
        rows = [b for b, r in enumerate(self.rows[:n]) if r.constraint is not None and not r.done
                and r.constraint.needs_mask()]
        if not rows:
            return None
        words = (self.vocab + 31) // 32
        if self._bitmask is None:
            self._bitmask = torch.empty(self.max_rows, words, dtype=torch.int32,
                                        pin_memory=self.device.type == "cuda")
        bits = self._bitmask[:n]
        bits.fill_(-1)  # all 32 bits set: every token allowed
        for b in rows:
            self.rows[b].constraint.fill(bits, b)
        return unpack_token_bitmask(bits.to(self.device, non_blocking=True), self.vocab)

    def _send_to_constraints(self, token: torch.Tensor, stopped: torch.Tensor) -> tuple:
        """Start copying the step's tokens to the host when a row has a grammar; `_feed_constraints` reads them."""
        self._fed = None
        if any(r.constraint is not None and not r.done for r in self.rows):
            if self.device.type == "cuda":  # non-blocking into pinned memory: the next forward is queued meanwhile
                if self._host_fed is None:  # one buffer is enough: it is read before the next step writes it
                    self._host_fed = (torch.empty(self.max_rows, 2, dtype=torch.long, pin_memory=True),
                                      torch.cuda.Event())
                buf, event = self._host_fed
                n = token.shape[0]
                buf[:n].copy_(torch.stack((token, stopped.long()), 1), non_blocking=True)
                event.record()
                self._fed = (buf[:n, 0], buf[:n, 1], event)
            else:
                self._fed = (token, stopped, None)
        return token, stopped

    def _fed_tokens(self) -> tuple:
        host, stops, event = self._fed
        if event is not None:
            event.synchronize()
        return host.tolist(), stops.tolist()

    def _feed_constraints(self, read: tuple, step: int) -> None:
        """Advance each constrained row's grammar by its token of chunk step `step` (once per row and step)."""
        tokens, stops = read
        self._fed = None
        for b, r in enumerate(self.rows):
            if r.constraint is None or r.done or b >= len(tokens) or r.fed_step >= step:
                continue
            r.fed_step = step
            if stops[b]:
                r.constraint = None  # the row ends here; nothing more to constrain
            else:
                r.constraint.consume(tokens[b])

    def _read_back(self, chunk: list, ended: list) -> None:
        """One host read for the chunk's steps; turn them into Steps, ending rows at stop ids and budgets."""
        tokens = torch.stack([t for t, _ in chunk], 1)
        stops = torch.stack([s for _, s in chunk], 1)
        tokens, stops = tokens.tolist(), stops.tolist()  # the one host sync per chunk
        if self._fed is not None:  # the chunk's last step (earlier ones were fed inside the chunk)
            self._feed_constraints(([t[-1] for t in tokens], [s[-1] for s in stops]), len(chunk) - 1)
        for r in self.rows:
            r.fed_step = -1
        for i in range(len(chunk)):
            out = Step(finished=ended if i == 0 else [])
            for b, r in enumerate(self.rows):
                if r.done or b >= len(tokens):
                    continue
                if stops[b][i]:
                    out.finished.append((r.id, "stop"))
                    r.done = True
                    continue
                out.tokens.append((r.id, tokens[b][i]))
                r.produced += 1
                if r.produced >= r.max_new:
                    out.finished.append((r.id, "length"))
                    r.done = True
            self.ready.append(out)


class Decoding:
    """A running `Engine.stream`: iterate it for `Step`s; `cancel(row)` ends a row before the next step.

    Ended rows (stopped, at their length, cancelled) leave the decode batch: the KV cache and per-row state are
    compacted to the rows still running, so a batch costs what its live rows cost, not its longest row.
    """

    def __init__(self, decoder: BatchDecoder):
        self.decoder = decoder
        self.forward_rows = decoder.forward_rows  # prefill first, then one entry per decode forward

    def cancel(self, row: int) -> None:
        self.decoder.cancel(row)

    def __iter__(self):
        return self

    def __next__(self) -> Step:
        if self.decoder.idle:
            raise StopIteration
        return self.decoder.step()

    def close(self) -> None:
        self.decoder.reset()


DECODE_MODES = ("eager", "graphs", "compile", "auto")


def compile_decode_step(fn=decode_logits, backend: Optional[str] = None):
    """`fn` compiled once for every batch and column size (dynamic shapes; a batch of 1 gets its own graph).

    Inductor keeps eager's bf16 roundings between the ops it fuses (emulate_precision_casts), so greedy output
    stays what the eager path gives. Sizes that happen to be equal are not assumed equal (no duck sizing), or a
    batch of 64 reading 64 columns would compile again. On CUDA it is called only to warm up and capture graphs.
    """
    backend = backend or DECODE_BACKEND
    options = {"emulate_precision_casts": True} if backend == "inductor" else None
    compiled = torch.compile(fn, dynamic=True, fullgraph=True, backend=backend, options=options)

    def step(*args):
        with fx_config.patch(use_duck_shape=False):
            return compiled(*args)
    return step


def run_only(step):
    """`step` that never compiles again: a call its compiled graphs do not cover runs the plain step instead
    (the graphs path's speed, the same tokens). A decoder must never stall on a compile after the switch-over."""
    def call(*args):
        with torch.compiler.set_stance("eager_on_recompile"):
            return step(*args)
    return call


class BackgroundCompile:
    """Compiles the decode step in a daemon thread while the engine decodes with the plain one.

    The thread loads the disk cache (model/compile_cache.py), compiles, and runs the compiled step on its own
    scratch buffers for the shapes decoders use: 1 row and 2+ rows of a buffer of 2+ rows (two graphs; dynamic sizes
    cover every other batch and column count; a server started with --max_batch_size 1 has 1-row buffers, which
    the graphs do not cover: it decodes with the plain step). It copies the caller's autocast and inference
    mode, which the compiled code is guarded on (RL decodes an fp32 policy under bf16 autocast). Then it saves the
    cache and sets `step`. A failure is a warning: decoding simply stays on the plain step.

    While it traces, the thread holds the GIL in long stretches; the switch interval is lowered from 5 ms to 0.5 ms
    meanwhile so the decoding thread waits less for it between steps.
    """

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self.thread: Optional[threading.Thread] = None
        self.done = threading.Event()
        self.step = None
        self.error: Optional[Exception] = None
        self.seconds: Optional[float] = None
        self.cache_file = None
        self.cache_loaded = False

    def start(self) -> None:
        if self.thread is not None:
            return
        kind = self.engine.device.type
        mode = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind), torch.is_inference_mode_enabled())
        self.thread = threading.Thread(target=self._run, args=mode, name="minimind-decode-compile", daemon=True)
        self.thread.start()
        _compiling.add(self)

    def stop(self, timeout: float) -> bool:
        """End a compile still running (the process is exiting): raise SystemExit in the thread at its next Python
        step and wait up to `timeout` s; True if it ended. A daemon thread left inside torch's C++ code while the
        interpreter shuts down aborted the process ("terminate called without an active exception", seen on CPU)."""
        thread = self.thread
        if thread is None or not thread.is_alive():
            return True
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit))
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self, autocast: bool, autocast_dtype: torch.dtype, inference: bool) -> None:
        started = time.perf_counter()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.0005))
        try:
            engine = self.engine
            root = cache_root()
            dtype = autocast_dtype if autocast else next(engine.model.parameters()).dtype
            if root is not None:
                use_inductor_cache(root)
                self.cache_file = root / artifact_key(engine.model.config, dtype, engine.device,
                                                      engine.stacked is not None)
                self.cache_loaded = load_artifacts(self.cache_file)
            step = compile_decode_step()
            self._warm(step, dtype, autocast, autocast_dtype, inference)
            if self.cache_file is not None:
                save_artifacts(self.cache_file)
            self.seconds = time.perf_counter() - started
            self.step = step
        except Exception as e:  # noqa: BLE001 -- any compile failure leaves the plain step serving
            self.error = e
            log.warning("background torch.compile of the decode step failed (%s: %s); decoding goes on without it",
                        type(e).__name__, e)
        finally:
            sys.setswitchinterval(interval)
            self.done.set()
            _compiling.discard(self)

    def _warm(self, step, dtype, autocast: bool, autocast_dtype, inference: bool) -> None:
        engine = self.engine
        device, config = engine.device, engine.model.config
        stacked = engine.stacked
        weights = (stacked.qkv_weights, stacked.gate_up_weights) if stacked else ()
        cuda = device.type == "cuda"
        stream = torch.cuda.Stream(device) if cuda else None
        with (torch.cuda.device(device) if cuda else _nothing()), \
                (torch.cuda.stream(stream) if cuda else _nothing()), \
                torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast):
            for max_rows in (2,):  # decoders keep at least 2 rows of buffers (Engine.stream)
                # buffers made as a decoder makes its own (in the caller's mode), the step run as `_advance` runs it
                # (inference mode): both are in the compiled code's guards
                with torch.inference_mode(inference):
                    cache = TimelineKVCache(config, max_rows, 128, device, dtype)
                    z = dict(dtype=torch.long, device=device)
                    token, pos, start = (torch.zeros(max_rows, **z) for _ in range(3))
                    column, columns = torch.zeros(1, **z), torch.arange(256, device=device)
                with torch.inference_mode():
                    for rows in sorted({1, max_rows}):
                        for cols in (64, 128):
                            column.fill_(cols - 1)
                            step(engine.model, rows, cols, token, pos, start, column, columns, cache.keys,
                                 cache.values, *weights)
            if cuda:
                stream.synchronize()


_compiling: set = set()  # BackgroundCompiles whose thread runs


@atexit.register
def _stop_background_compiles() -> None:
    for bg in list(_compiling):
        if not bg.stop(30):
            log.warning("the background decode compile did not stop within 30 s; exiting anyway")


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class Engine:
    def __init__(self, model, eos_token_id: Optional[int] = None, pad_token_id: int = 0,
                 cuda_graphs: Optional[bool] = None, sync_every: Optional[int] = None,
                 compile_decode: Optional[bool] = None, stack_projections: Optional[bool] = None):
        """Defaults on CUDA: CUDA graphs on and a host read every 8 steps; elsewhere both off. `MINIMIND_DECODE` in
        the environment picks instead: `eager` (none of it), `graphs` (the CUDA default) or `compile` (the decode
        step torch.compile'd inside the graphs). The arguments win over both. `stack_projections` (default: on
        CUDA and NPU, off with MINIMIND_DECODE=eager) decodes with `StackedProjections`, a copy of the attention
        and feed-forward input weights."""
        self.model = model
        self.eos_token_id = model.config.eos_token_id if eos_token_id is None else eos_token_id
        self.pad_token_id = pad_token_id
        mode = os.environ.get("MINIMIND_DECODE", "").strip().lower()
        if mode and mode not in DECODE_MODES:
            raise ValueError(f"MINIMIND_DECODE={mode!r}: use one of {', '.join(DECODE_MODES)} (or leave it unset)")
        cuda = self.device.type == "cuda"
        fast = cuda and mode != "eager"
        self.cuda_graphs = fast if cuda_graphs is None else cuda_graphs
        self.sync_every = (8 if fast else 1) if sync_every is None else sync_every
        if compile_decode is None:
            background = COMPILE_IN_BACKGROUND_ON_CUDA and fast and mode in ("", "auto")
            compile_decode = True if mode == "compile" else "background" if background else False
        if compile_decode not in (True, False, "background"):
            raise ValueError(f"compile_decode={compile_decode!r}: use True, False, 'background' or None")
        self.compiled = compile_decode is True  # the decode step in use is the compiled one
        self.decode_fn = compile_decode_step() if compile_decode is True else decode_logits
        # compile_decode="background": plain step now, compiled one once BackgroundCompile has built it
        self.background = BackgroundCompile(self) if compile_decode == "background" else None
        self.compile_seconds: Optional[float] = None  # how long the background compile took, once it is done
        if stack_projections is None:
            stack_projections = self.device.type in ("cuda", "npu") and mode != "eager"
        self.stacked = StackedProjections.of(model) if stack_projections else None
        self._decoders: Dict[tuple, BatchDecoder] = {}  # with graphs: kept per shape bucket, graphs and all

    def take_compiled(self) -> bool:
        """Switch to the background-compiled decode step if it is ready (decoders call this between chunks);
        True when this call switched."""
        bg = self.background
        if bg is None or not bg.done.is_set():
            return False
        self.background = None
        self.compile_seconds = bg.seconds
        if bg.step is None:
            return False
        self.compiled, self.decode_fn = True, run_only(bg.step)
        log.info("decode: compiled step ready after %.1f s (disk cache %s); switching to it", bg.seconds,
                 "loaded" if bg.cache_loaded else "cold")
        return True

    def wait_compiled(self, timeout: Optional[float] = None) -> bool:
        """Block until a background compile (if any) has finished, then switch; True if the compiled step is in
        use. For benchmarks and tests; serving never waits."""
        if self.background is not None:
            if self.background.thread is None:
                self.background.start()
            self.background.done.wait(timeout)
            self.take_compiled()
        return self.compiled

    def uncompile(self, error: Exception) -> None:
        """Go on with the plain decode step after torch.compile failed on it."""
        log.warning("torch.compile of the decode step failed (%s: %s); decoding without it",
                    type(error).__name__, error)
        self.compiled, self.decode_fn = False, decode_logits
        self.background = None  # nor switch to a background-compiled step later

    @property
    def device(self):
        return next(self.model.parameters()).device

    def batch(self, max_rows: int, max_len: Optional[int] = None) -> BatchDecoder:
        """A decoder that prompts join between steps (the API server's continuous batching)."""
        max_len = max_len or self.model.config.max_position_embeddings
        if max_len > self.model.config.max_position_embeddings:
            raise ValueError(f"max_len {max_len} exceeds max_position_embeddings "
                             f"{self.model.config.max_position_embeddings}")
        return BatchDecoder(self, max_rows, max_len, self.sync_every, self.cuda_graphs)

    def stream(self, prompts: Sequence[Sequence[int]], params=None, num_samples: int = 1) -> Decoding:
        """Decode every prompt (num_samples rows each; row r belongs to prompt r // num_samples), one `Step` per
        decoding step, until every row has finished; each row's end comes as a (row, reason) in `Step.finished`.
        `params`: one SamplingParams for all, or a list with one per prompt (e.g. each with its own constraint).
        """
        each = list(params) if isinstance(params, (list, tuple)) else [params or SamplingParams()] * len(prompts)
        if len(each) != len(prompts):
            raise ValueError(f"{len(each)} SamplingParams for {len(prompts)} prompts: give one, or one per prompt")
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        longest = max(len(p) for p in prompts)
        budget = max(p.max_new_tokens for p in each)
        if longest + budget > self.model.config.max_position_embeddings:
            raise ValueError(f"prompt ({longest} tokens) + max_new_tokens ({budget}) exceeds "
                             f"max_position_embeddings {self.model.config.max_position_embeddings}")
        rows, need = len(prompts) * num_samples, longest + budget
        if self.cuda_graphs:  # reuse a decoder (its cache and captured graphs) per power-of-two shape bucket
            limit = self.model.config.max_position_embeddings
            # at least 2 rows of buffers: a 1-row buffer is a shape of its own to torch.compile (size-1
            # specialisation), i.e. one more graph to compile, for one spare row of cache
            key = (_bucket(rows, 1 << 20, 2), _bucket(need, limit, 256))
            decoder = self._decoders.get(key)
            if decoder is None:
                decoder = self._decoders[key] = BatchDecoder(self, *key, self.sync_every, True)
            decoder.reset()
        else:
            decoder = BatchDecoder(self, max(rows, 2), need, self.sync_every, False)
        if isinstance(params, (list, tuple)):  # one add() per prompt; rows keep prompt-major order
            for prompt, p in zip(prompts, each):
                decoder.add([prompt], p, num_samples)
        else:
            decoder.add(prompts, each[0], num_samples)
        return Decoding(decoder)

    def generate(self, prompts: Sequence[Sequence[int]], params=None, num_samples: int = 1,
                 on_token: Optional[Callable[[int, int], None]] = None) -> list:
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
