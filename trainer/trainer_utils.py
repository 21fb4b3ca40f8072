"""What every training stage shares: the CLI, model setup, data order, the LR schedule, logging, resume, the loop.

A stage script (train_pretrain.py, train_full_sft.py, ...) builds its parser with `build_parser`, its model with
`start_stage`, its dataset, and a loss function `loss_fn(model, batch) -> (loss, {name: value})`, then calls
`train`. Everything else (accumulation, clipping, LR schedule, logging, atomic saves, exact resume) lives here.
Device/distributed setup and UserError come from model/runtime.py, weight files from model/checkpoint.py; the
names below are re-exported so a stage imports everything it needs from one module.

Paths are resolved from the repository root, so `python trainer/train_pretrain.py` and
`cd trainer && python train_pretrain.py` behave the same.
"""
import argparse
import functools
import json
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from model.checkpoint import (  # noqa: F401
    SIDECAR_CONFIG_KEYS,
    TOKENIZER_DIR,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    check_state_matches,
    ensure_writable_dir,
    jsonable,
    load_tokenizer,
    load_resume_state,
    load_weights,
    nonfinite_tensors,
    read_sidecar,
    resume_path,
    save_weights,
    sidecar_path,
    stage_script,
    unwrap,
    weight_path,
    weight_stem,
    weights_tokenizer,
)
from model.distributed_checkpoint import dcp_folder
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM, count_parameters
from model.runtime import (  # noqa: F401
    DTYPES,
    ROOT,
    Context,
    UserError,
    detect_device_type,
    display_path,
    init_distributed_mode,
    npu_available,
    repo_path,
    user_errors,
)
from trainer import fsdp


class TrainingDiverged(UserError):
    """The loss, gradients or weights became NaN/inf: the run stops (exit code 2) without saving."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------- CLI

class DeviceDefault:
    """A flag default that depends on the device, e.g. `DeviceDefault(32, cuda=128)`.

    argparse leaves a non-string default untouched, so after parsing a flag still holding a DeviceDefault is one the
    user did not type; `resolve_device_defaults` replaces it with the value for the device once that is known, and
    --help prints "32; cuda: 128". A value the user types always wins, so MiniMind's exact flags mean what they
    meant there. `linked` names flags whose device values only make sense together (batch size and accumulation:
    typing `--batch_size 32` alone must not pair it with CUDA's accumulation 2): if any of them was typed, this
    one takes its plain default.
    """

    def __init__(self, default, linked: tuple = (), **per_device):
        self.default, self.linked, self.per_device = default, tuple(linked), per_device

    def value(self, device_type: str):
        return self.per_device.get(device_type, self.default)

    def __repr__(self) -> str:
        return "; ".join([str(self.default)] + [f"{k}: {v}" for k, v in self.per_device.items()])


# DataLoader workers on an accelerator: with 0, every micro-batch was tokenized in the training process while the GPU
# waited (H200, 512/8 pretrain defaults: 160k tokens/s vs MiniMind's 264k with its 8 workers). One worker tokenizes
# ~2,400 pretraining rows/s (0.42 ms per 340-token row, measured on this repo's CPU), so 8 feed ~6M tokens/s.
DEFAULT_WORKERS = DeviceDefault(0, cuda=8, npu=8)
# a log line at least this often (seconds; MINIMIND_LOG_SECONDS overrides), whatever --log_interval says: with
# MiniMind's 100 steps a default pretrain on 2 CPU cores printed its first loss after ~30 minutes
LOG_SECONDS = 60.0
# the learning signal at the end of a run compares the mean of the first and of the last steps, this many at most
# (a quarter of a short run): one step's DPO margin or RL reward comes from 4-16 samples and swung by 0.2-0.5 between
# neighbouring steps of the demo recipes, more than a 20-step run moves it
SIGNAL_WINDOW = 10


def resolve_device_defaults(args, device_type: str, log: Callable = print, local_world_size: int = 1) -> dict:
    """Turn every DeviceDefault left in `args` into its value for `device_type`; returns {flag: value} of those that
    differ from the plain default (logged in one line, so a run says what it chose and which flag overrides it).

    Default worker counts are capped at the CPU cores per process minus one (the training process needs one).
    """
    chosen = {}
    given = {name for name, value in vars(args).items() if not isinstance(value, DeviceDefault)}
    for name, value in list(vars(args).items()):
        if not isinstance(value, DeviceDefault):
            continue
        resolved = value.default if given & set(value.linked) else value.value(device_type)
        if name == "num_workers" and resolved:
            resolved = max(0, min(resolved, (os.cpu_count() or 1) // max(1, local_world_size) - 1))
        setattr(args, name, resolved)
        if resolved != value.default:
            chosen[name] = resolved
    if chosen:
        note = ""
        if "batch_size" in chosen or "accumulation_steps" in chosen:
            rows = args.batch_size * args.accumulation_steps
            note = f" ({args.batch_size} x {args.accumulation_steps} = {rows} rows per optimizer step and process)"
        log(f"{device_type} defaults: " + ", ".join(f"--{k} {v}" for k, v in chosen.items()) + note
            + "; pass a flag to set it yourself")
    return chosen


def build_parser(description: str, **defaults) -> argparse.ArgumentParser:
    """The flags every stage has (MiniMind's names), grouped under headers in --help, with the stage's own defaults;
    stages add their own flags (`parser.add_argument_group(...)` for a header of their own)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p._optionals.title = "this stage / 本阶段"  # where each stage's own flags (added with add_argument) are listed
    add = p.add_argument_group("weights and resume / 权重与续训").add_argument
    add("--save_dir", default="out", help="folder for weight files out/{save_weight}_{hidden}[_moe].pth + .json")
    add("--checkpoint_dir", default="checkpoints", help="folder for resume states {name}_resume.pth")
    add("--save_weight", default="pretrain", help="stage name used in the output file name")
    add("--from_weight", default="none", help="stage weights to start from (e.g. pretrain), or none")
    add("--from_resume", type=int, default=0, choices=[0, 1], help="1 = continue from the resume checkpoint")
    add("--tokenizer_path", default=None,
        help="tokenizer folder; default: the one --from_weight's sidecar records, else model/ (recorded in the "
             "sidecar of every weight this stage writes; a different vocabulary than the start weights is refused)")
    add = p.add_argument_group("model size / 模型尺寸").add_argument
    add("--hidden_size", type=int, default=512, help="model width (512 = MiniMind2-Small, 768 = MiniMind2)")
    add("--num_hidden_layers", type=int, default=8, help="transformer blocks")
    add("--use_moe", type=int, default=0, choices=[0, 1], help="1 = mixture-of-experts feed-forward")
    add = p.add_argument_group("data / 数据").add_argument
    add("--data_path", default=None, help="training JSONL; default: MiniMind's file if in dataset/, else the demo")
    add("--max_seq_len", type=int, default=340, help="tokens per training row")
    add("--skip_bad_lines", type=int, default=0, choices=[0, 1],
        help="1 = skip and count malformed JSONL lines instead of stopping at the first one")
    add = p.add_argument_group("optimisation / 优化").add_argument
    add("--epochs", type=int, default=1, help="passes over the data")
    add("--batch_size", type=int, default=32, help="sequences per micro-batch per process")
    add("--learning_rate", type=float, default=5e-4, help="peak learning rate")
    add("--warmup_steps", type=int, default=0, help="linear warmup (optimizer steps) before the cosine decay")
    add("--accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    add("--grad_clip", type=float, default=1.0, help="max global gradient norm (0 = off)")
    add("--max_steps", type=int, default=0, help="stop after N optimizer steps (0 = run all epochs)")
    add("--max_nonfinite_steps", type=int, default=5,
        help="skip up to N optimizer steps in a row whose loss or gradient norm is NaN/inf, then stop with exit code "
             "2 keeping the last good save (0 = stop at the first; fp16's GradScaler skips overflowing gradients "
             "itself, so there only a non-finite loss counts)")
    add("--seed", type=int, default=42, help="seed for init, data order and dropout")
    add = p.add_argument_group("device / 设备").add_argument
    add("--device", default=None, help="npu[:i] / cuda[:i] / mps / cpu; default: auto-detect (NPU > CUDA > MPS > CPU)")
    add("--dtype", default=None, choices=sorted(DTYPES), help="autocast dtype; default bf16 CUDA, fp16 NPU, fp32 CPU")
    add("--num_workers", type=int, default=DEFAULT_WORKERS,
        help="DataLoader worker processes (kept alive across epochs); the default is capped at CPU cores - 1")
    add("--use_compile", type=int, default=0, choices=[0, 1],
        help="torch.compile the model on CUDA; the first step compiles and is left out of tokens/s. Other devices: "
             "set MINIMIND_COMPILE_BACKEND (inductor needs a C compiler; eager/aot_eager do not). "
             "MINIMIND_COMPILE_MODE picks the mode (e.g. reduce-overhead)")
    add("--fsdp", type=int, default=0, choices=[0, 1],
        help="1 = FSDP2: shard weights, gradients and AdamW state across the processes (models past one card's "
             "memory); resume state becomes a DCP folder {name}_resume.dcp that resumes at any process count. "
             "Pretrain, SFT, DPO, reason, distillation; see docs/multi_gpu_en.md")
    add = p.add_argument_group("logging and saving / 日志与保存").add_argument
    add("--log_interval", type=int, default=100, help="log every N optimizer steps")
    add("--save_interval", type=int, default=1000, help="save weights and resume state every N optimizer steps")
    add("--use_wandb", type=int, default=0, choices=[0, 1],
        help="1 = log to SwanLab / W&B (offline runs under logs/ unless SWANLAB_MODE=cloud / WANDB_MODE=online)")
    add("--wandb_backend", default="swanlab", choices=["swanlab", "wandb"], help="experiment tracker")
    add("--wandb_project", default="MiniMind", help="tracker project name")
    add("--log_dir", default="logs", help="where the tracker writes its offline runs")
    p.set_defaults(**defaults)
    return p


def pick_data_path(given: Optional[str], minimind_name: str, demo_name: str) -> Path:
    """The user's file, else MiniMind's full dataset when downloaded into dataset/, else the bundled demo."""
    if given:
        return repo_path(given)
    full = ROOT / "dataset" / minimind_name
    return full if full.is_file() else ROOT / "dataset" / "demo" / demo_name


def model_config_from_args(args) -> MiniMindConfig:
    try:
        return MiniMindConfig(hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
                              use_moe=bool(args.use_moe), inference_rope_scaling=False)
    except ValueError as e:  # e.g. --hidden_size 100 with 8 heads
        raise UserError(f"invalid model size: {e}") from None


def init_model(args, ctx: Optional[Context] = None, log: Callable = print):
    """Model (random init or `--from_weight`) on the context's device in fp32, and the tokenizer."""
    model = MiniMindForCausalLM(model_config_from_args(args))
    if args.from_weight and args.from_weight != "none":
        path = weight_path(args.save_dir, args.from_weight, args.hidden_size, args.use_moe)
        load_weights(model, path, hint=f"produce it with the '{args.from_weight}' stage, e.g. "
                                       f"python trainer/train_{stage_script(args.from_weight)}.py")
        log(f"loaded {path}")
        tokenizer = weights_tokenizer(path, args.tokenizer_path)  # the weights' own vocabulary, or a clear refusal
    else:
        tokenizer = repo_path(args.tokenizer_path) if args.tokenizer_path else TOKENIZER_DIR
    args.tokenizer_path = display_path(tokenizer)  # recorded in the sidecar of everything this stage writes
    log(f"model: {count_parameters(model) / 1e6:.2f}M parameters; tokenizer {args.tokenizer_path}")
    return model.to(ctx.device if ctx else "cpu"), load_tokenizer(tokenizer)


def load_frozen_model(args, stage: str, ctx: Context, log: Callable = print, **sizes):
    """A no-grad eval-mode copy of `out/{stage}_...pth` (DPO/RL reference, distillation teacher, reward trunk).

    Sizes default to the stage's own (`--hidden_size`, ...); pass hidden_size=/num_hidden_layers=/use_moe= for a
    model of another size. Kept in fp32 and run under the same autocast as the policy.
    """
    shape = argparse.Namespace(hidden_size=sizes.get("hidden_size", args.hidden_size),
                               num_hidden_layers=sizes.get("num_hidden_layers", args.num_hidden_layers),
                               use_moe=sizes.get("use_moe", args.use_moe))
    model = MiniMindForCausalLM(model_config_from_args(shape))
    path = weight_path(args.save_dir, stage, shape.hidden_size, shape.use_moe)
    load_weights(model, path, hint=f"produce it with: python trainer/train_{stage_script(stage)}.py "
                                   f"--hidden_size {shape.hidden_size} --num_hidden_layers {shape.num_hidden_layers}"
                                   f"{' --use_moe 1' if shape.use_moe else ''}")
    weights_tokenizer(path, args.tokenizer_path)  # a reference / teacher must share the policy's vocabulary
    log(f"loaded frozen {path}")
    model.requires_grad_(False)
    return model.to(ctx.device).eval()


# -------------------------------------------------------------------------------------------------------- data order

PAD_ROW = -1  # a batch-sampler index meaning "a row that trains nothing" (see PaddedRows)


class ResumableBatchSampler(Sampler):
    """Seeded shuffle per epoch, cut into global batches of batch_size x world_size; rank r takes the r-th slice.

    So N processes with batch_size B see exactly the rows one process sees with batch_size N x B (the DDP test
    relies on it), every rank gets the same number of batches (no rank waits at the end of an epoch), and
    `set_epoch(epoch, skip)` resumes after the batches already trained. One process keeps a last partial
    batch unless `drop_last`; several drop the partial global batch. `pad_last` instead fills the last global
    batch up to full size with PAD_ROW (every row trained once per epoch, every batch the same shape).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 drop_last: bool = False, pad_last: bool = False):
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.drop_last = drop_last  # also for one process: every batch full (static shapes for torch.compile)
        self.pad_last = pad_last
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        per_step = self.batch_size * self.world_size
        keep_partial = self.pad_last or (self.world_size == 1 and not self.drop_last)
        return math.ceil(self.n / per_step) if keep_partial else self.n // per_step

    def padding_rows(self, batch: int) -> int:
        """PAD_ROW entries in this rank's batch number `batch` of an epoch."""
        if not self.pad_last:
            return 0
        start = batch * self.batch_size * self.world_size + self.rank * self.batch_size
        return min(self.batch_size, max(0, start + self.batch_size - self.n))

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        per_step = self.batch_size * self.world_size
        for b in range(self.skip, len(self)):
            start = b * per_step + self.rank * self.batch_size
            rows = order[start:start + self.batch_size]
            yield rows + [PAD_ROW] * (self.batch_size - len(rows)) if self.pad_last else rows


class PaddedRows(torch.utils.data.Dataset):
    """The dataset as the DataLoader sees it when the last batch is padded: PAD_ROW gives `dataset.padding_row()`,
    a row whose labels are all -100. The loss is a mean over labelled tokens, so such rows change neither the loss
    nor the gradient of the real rows in their batch: the batch trains exactly as the smaller batch would, at the
    compiled shape (no recompile)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.padding_row() if index == PAD_ROW else self.dataset[index]

    def __getitems__(self, indices: list) -> list:
        if PAD_ROW in indices or not hasattr(self.dataset, "__getitems__"):
            return [self[i] for i in indices]
        return self.dataset.__getitems__(indices)


# ------------------------------------------------------------------------------------------------------ LR and speed

def lr_at(step: int, total: int, peak: float, warmup: int = 0) -> float:
    """Linear warmup, then cosine from peak to 10% of peak (MiniMind's curve when warmup is 0)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


# Dense bf16/fp16 tensor peak FLOP/s per device, from vendor datasheets; MFU is omitted for anything else.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
              "4090": 165e12, "3090": 71e12, "910B": 313e12}


def peak_flops(device: torch.device) -> Optional[float]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "npu":
        name = torch.npu.get_device_name(device)
    else:
        return None
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 x active parameters + attention scores (12 x layers x width x seq_len)."""
    cfg = unwrap(model).config
    params = count_parameters(unwrap(model)) - cfg.vocab_size * cfg.hidden_size  # embedding lookup is free
    if cfg.use_moe:  # only top-k of the routed experts run per token
        per_expert = 3 * cfg.hidden_size * cfg.intermediate_size
        params -= cfg.num_hidden_layers * per_expert * (cfg.n_routed_experts - cfg.num_experts_per_tok)
    params += cfg.vocab_size * cfg.hidden_size  # but the lm_head matmul is not
    return 6 * params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def make_adamw(groups, lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; on CUDA the fused kernel (one launch for all parameters instead of a few per tensor group; the same
    update up to float rounding), elsewhere PyTorch's default (foreach) implementation."""
    fused = device.type == "cuda" and all(p.is_cuda and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, **({"fused": True} if fused else {}))


def dynamo_frames() -> int:
    """Frames torch.compile has compiled in this process so far (each recompile adds one)."""
    from torch._dynamo.utils import counters
    return int(counters["frames"]["total"])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)


# ---------------------------------------------------------------------------------------------------------- the loop

def rng_state() -> dict:
    """Every RNG's state as tensors and plain Python data, so resume files load with weights_only=True (numpy's
    key array is stored as a list of 624 ints; set_rng_state also accepts the arrays of older files)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ExperimentTracker:
    """SwanLab (MiniMind's default) or Weights & Biases, in their no-account modes unless told otherwise.

    Runs are written under --log_dir (logs/) as offline runs (`swanlab sync` / `wandb sync` uploads them later); set
    SWANLAB_MODE=cloud or WANDB_MODE=online to stream to the service instead. The run id is kept in the
    resume state, so `--from_resume 1` appends to the same run.
    """

    def __init__(self, args, run_id: Optional[str] = None):
        self.backend = args.wandb_backend
        try:
            module = __import__(self.backend)
        except ImportError:
            raise UserError(f"--use_wandb 1 --wandb_backend {self.backend}: the '{self.backend}' package is not "
                            f"installed; pip install {self.backend}") from None
        logdir = repo_path(args.log_dir)
        ensure_writable_dir(logdir)
        name = f"{args.save_weight}_{args.hidden_size}{'_moe' if args.use_moe else ''}"
        config = {k: v for k, v in vars(args).items() if jsonable(v)}
        if self.backend == "swanlab":
            self.run = module.init(project=args.wandb_project, experiment_name=name, config=config,
                                   logdir=str(logdir), mode=os.environ.get("SWANLAB_MODE", "offline"),
                                   id=run_id, resume="allow" if run_id else None)
        else:
            self.run = module.init(project=args.wandb_project, name=name, config=config, dir=str(logdir),
                                   mode=os.environ.get("WANDB_MODE", "offline"), id=run_id,
                                   resume="allow" if run_id else None)
        self.run_id = self.run.id

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        self.run.finish()


class Trainer:
    """The parts of a run every stage shares: AdamW, GradScaler, LR schedule, data position, logging, saving, resume.

    `train()` below is the supervised loop built from these pieces; RL stages drive them from their own loop
    (rollout, then `updates_per_group` optimizer steps per accumulated group of prompt batches). Objects in
    `extra_state` (a critic, a baseline tracker) must have state_dict()/load_state_dict() and travel in the
    resume state.
    """

    def __init__(self, args, ctx: Context, model, dataset, collate_fn=None, log: Callable = print,
                 param_groups=None, extra_state: Optional[dict] = None, updates_per_group: int = 1,
                 save_fn: Optional[Callable] = None, fsdp_supported: bool = False, signal_keys: tuple = ()):
        self.args, self.ctx, self.model, self.dataset, self.collate_fn, self.log = (
            args, ctx, model, dataset, collate_fn, log)
        resolve_device_defaults(args, ctx.device.type, log)  # no-op after start_stage; for direct callers
        self.compile_options = self._compile_options()
        self.fsdp = bool(getattr(args, "fsdp", 0))
        if self.fsdp:
            check_fsdp_supported(fsdp_supported, save_fn, param_groups, extra_state)
        # what a periodic/final save writes besides the resume state; LoRA writes an adapter folder instead
        self.save_fn = save_fn or (lambda m: save_weights(m, self.out_path, self.args))
        self.extra_state = extra_state or {}
        if len(dataset) < args.batch_size * ctx.world_size:
            raise UserError(f"{args.data_path}: {len(dataset)} rows, fewer than one batch "
                            f"(batch_size {args.batch_size} x {ctx.world_size} processes); lower --batch_size")
        self.out_path = weight_path(args.save_dir, args.save_weight, args.hidden_size, args.use_moe)
        self.ckpt_path = resume_path(args.checkpoint_dir, args.save_weight, args.hidden_size, args.use_moe)
        if ctx.is_main:  # fail now, not after an hour of training
            ensure_writable_dir(self.out_path.parent)
            ensure_writable_dir(self.ckpt_path.parent)

        # compiled: a last partial batch would recompile (76 s at 59k tokens/s measured on an H200 at 128 x 512).
        # Datasets with a `padding_row` (labels all -100) fill it up to the compiled shape instead, so every row is
        # trained (dropping it skipped 123 of 3,451 demo pretrain rows per epoch); others drop it.
        pad_last = self.compile_options is not None and hasattr(dataset, "padding_row")
        drop_last = self.compile_options is not None and not pad_last
        self.sampler = ResumableBatchSampler(len(dataset), args.batch_size, ctx.rank, ctx.world_size, args.seed,
                                             drop_last=drop_last, pad_last=pad_last)
        self.batches_per_epoch = len(self.sampler)
        dropped = len(dataset) - self.batches_per_epoch * args.batch_size * ctx.world_size
        if drop_last and dropped and ctx.world_size == 1:
            log(f"torch.compile: the last {dropped} rows of each epoch (a partial batch) are skipped so every batch "
                f"has the same shape (no recompiles)")
        if pad_last and dropped < 0:
            log(f"torch.compile: the last batch of each epoch is filled with {-dropped} rows that carry no loss, so "
                f"every batch has the same shape (no recompiles) and every row is trained")
        self.pad_tokens = 0  # tokens of padding rows in the current micro-batch (not counted in tokens/s)
        self.pad_row_tokens = dataset.padding_row()[0].numel() if pad_last else 0
        steps_per_epoch = math.ceil(self.batches_per_epoch / args.accumulation_steps) * updates_per_group
        self.total_steps = args.epochs * steps_per_epoch
        if args.max_steps:
            self.total_steps = min(self.total_steps, args.max_steps)

        if self.fsdp:  # before the optimizer: sharding replaces every Parameter by a DTensor one
            fsdp.shard_model(model, ctx, self.compile_options)
            log(f"FSDP2: {len(model.model.layers)} blocks + root sharded over {dist.get_world_size()} process(es), "
                f"{str(fsdp.mixed_precision(ctx).param_dtype or torch.float32)[6:]} compute, fp32 gradient "
                f"reduction")
        groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = make_adamw(groups, args.learning_rate, ctx.device)
        self.scaler = (fsdp.make_grad_scaler(ctx) if self.fsdp
                       else torch.amp.GradScaler(ctx.device.type, enabled=ctx.dtype == torch.float16))
        self.epoch, self.batches_done, self.step, run_id = 0, 0, 0, None
        self.last_saved_step = None  # what the divergence message points back to
        if args.from_resume:
            run_id = self._load_resume()
        self.tracker = ExperimentTracker(args, run_id) if args.use_wandb and ctx.is_main else None
        self.train_model = self._wrap(model)
        self.peak = peak_flops(ctx.device)
        self.fpt = flops_per_token(model, args.max_seq_len)
        self.tokens, self.timer, self.t_start, self.step_at_start = 0, None, time.perf_counter(), self.step
        self.metrics_path = self.out_path.parent / f"{self.out_path.stem}.metrics.jsonl"
        self.tokens_seen = self._start_metrics_log() if ctx.is_main else 0
        self.bar = None
        self.loss_ema, self.ema_weight = 0.0, 0.0
        self.lr = lr_at(self.step, self.total_steps, args.learning_rate, args.warmup_steps)  # set per optimizer step
        self.throughput = {"tokens_per_s": 0.0, "mfu_percent": None}  # of the last log line (scripts/bench_train.py)
        self.frames_after_warmup = None  # dynamo frames compiled by the end of the first step (see `recompiles`)
        self._recompiles_reported = 0
        self._loader = None  # built on first use by `loader()`
        self.nonfinite_steps = 0  # optimizer steps in a row skipped for a NaN/inf loss or gradient norm
        self.last_step_finite = True
        self.last_log_time, self.logged_step = None, None
        self.first_step_s, self.first_step_tokens, self.t_timed = None, 0, None
        self.batches_at_step = (self.epoch, self.batches_done)  # the position a resume state saved now continues from
        self._updating, self._interrupt_pending = False, False  # Ctrl-C during an optimizer step waits for its end
        # the run's learning signal: every step's logged values for the first steps and the last ones (see
        # learning_signal); `signal_keys` are the values that show it (DPO margin, RL reward), else all but rates
        window = max(1, min(SIGNAL_WINDOW, (self.total_steps - self.step) // 4))
        self.signal_keys, self.signal_head, self.signal_tail = tuple(signal_keys), [], deque(maxlen=window)
        self._announce_run()
        if ctx.is_main and sys.stderr.isatty():  # a live bar (stderr) for people; plain lines (stdout) always
            from tqdm import tqdm
            self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def _compile_options(self) -> dict | None:
        """torch.compile keyword arguments when the model is compiled, else None.

        CUDA compiles with --use_compile 1 (inductor). Other devices only when MINIMIND_COMPILE_BACKEND names a
        backend: inductor on CPU needs a C compiler, `eager` / `aot_eager` trace with Dynamo only (what the CPU tests
        use to count recompiles). MINIMIND_COMPILE_MODE sets the mode (e.g. reduce-overhead = CUDA graphs).
        """
        if not self.args.use_compile:
            return None
        backend, mode = os.environ.get("MINIMIND_COMPILE_BACKEND"), os.environ.get("MINIMIND_COMPILE_MODE")
        if self.ctx.device.type != "cuda" and not backend:
            self.log(f"--use_compile 1 ignored: torch.compile is only used on CUDA (device is "
                     f"{self.ctx.device.type}; set MINIMIND_COMPILE_BACKEND=inductor to compile anyway)")
            return None
        options = {"backend": backend or "inductor"}
        if mode:
            options["mode"] = mode
        return options

    def _wrap(self, model):
        if self.fsdp:  # sharded (and its blocks compiled) in __init__, before the optimizer was built
            return model
        if self.compile_options is not None:
            model = torch.compile(model, **self.compile_options)
            self.log(f"torch.compile ({', '.join(f'{k}={v}' for k, v in self.compile_options.items())}): the first "
                     f"optimizer step compiles (about a minute on a GPU); tokens/s is timed from the end of it")
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.ctx.device.index] if self.ctx.device.type in ("cuda", "npu") else None
            model = DistributedDataParallel(model, device_ids=ids)
        return model

    def micro_batches(self):
        """Yield (batch on device, group_size, last_micro) from the resume position until the run is done.

        group_size is the number of micro-batches in this accumulation group (smaller for an epoch's last group).
        """
        args = self.args
        self.model.train()
        for epoch in range(self.epoch, args.epochs):
            if self.done:
                return
            skip = self.batches_done if epoch == self.epoch else 0
            self.epoch = epoch
            self.sampler.set_epoch(epoch, skip)
            group_start = skip
            for b, batch in enumerate(self.loader(), start=skip):
                group_size = min(args.accumulation_steps, self.batches_per_epoch - group_start)
                last_micro = b - group_start + 1 == group_size
                if last_micro:
                    group_start = b + 1
                self.batches_done = b + 1
                self.pad_tokens = self.sampler.padding_rows(b) * self.pad_row_tokens
                yield _to_device(batch, self.ctx.device), group_size, last_micro
                if self.done:
                    return
            self.batches_done = 0
        self.epoch = args.epochs

    def loader(self) -> DataLoader:
        """One DataLoader for the whole run: its workers stay alive across epochs (starting 8 workers, each
        importing torch and copying the dataset, took seconds per epoch); the batch sampler runs in this process,
        so `set_epoch` before each `iter()` still decides the order. Pinned memory on CUDA lets `non_blocking`
        copies overlap the previous step."""
        if self._loader is None:
            workers = self.args.num_workers
            dataset = PaddedRows(self.dataset) if self.sampler.pad_last else self.dataset
            self._loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                      collate_fn=self.collate_fn, pin_memory=self.ctx.device.type == "cuda",
                                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
        return self._loader

    def no_sync(self, last_micro: bool):
        """Skip DDP's gradient all-reduce (FSDP2's reduce-scatter) on all but the last micro-batch of a group."""
        if self.fsdp:
            return fsdp.gradient_sync(self.train_model, last_micro)
        return self.train_model.no_sync() if self.ctx.distributed and not last_micro else nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def count_tokens(self, n: int) -> None:
        """Tokens this process processed (less those of padding rows); multiplied by the world size for the
        throughput line."""
        n -= self.pad_tokens
        self.tokens += n * self.ctx.world_size
        self.tokens_seen += n * self.ctx.world_size  # cumulative, for the metrics log (never reset)

    def optimizer_step(self, loss=None) -> float:
        """LR for this step (groups may carry an `lr_scale`), unscale, clip, step, zero; returns the LR.

        `loss` (this step's mean loss, tensor or float) and the gradient norm go through `check_finite_step`: a
        NaN/inf step is skipped, too many in a row stop the run."""
        self._updating = True  # a Ctrl-C now waits for the step to finish (a half-updated model is not saved)
        lr = lr_at(self.step, self.total_steps, self.args.learning_rate, self.args.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16's GradScaler
        if self.args.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.args.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        if self.check_finite_step(loss, grad_norm):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.lr = lr
        self.batches_at_step = (self.epoch, self.batches_done)  # where a resume state saved now continues from
        if self.step == self.step_at_start + 1:  # time from after the first (warm-up, compile) step
            synchronize(self.ctx.device)
            self.timer = time.perf_counter()
            self.t_timed = self.timer
            self.first_step_s, self.first_step_tokens, self.tokens = self.timer - self.t_start, self.tokens, 0
            self.frames_after_warmup = dynamo_frames()
        self._updating = False
        if self._interrupt_pending:
            raise KeyboardInterrupt
        return lr

    def check_finite_step(self, loss, grad_norm) -> bool:
        """True when this step's loss and gradient norm are finite (on every rank). Otherwise the update is skipped
        with a warning, and after more than --max_nonfinite_steps such steps in a row the run stops (TrainingDiverged,
        exit code 2) before anything is saved, so the last good weights and resume state stay on disk.

        One host sync per optimizer step (fp16's GradScaler already makes one); a NaN reaches every weight within
        one AdamW step, so checking only at log or save time would be too late to skip it. Under GradScaler an
        overflowing gradient is its normal signal to lower the scale (it skips that step itself), so only the loss
        counts there."""
        if hasattr(grad_norm, "full_tensor"):  # --fsdp 1: the norm over sharded grads is a DTensor (collective)
            grad_norm = grad_norm.full_tensor()
        checks = [] if self.scaler.is_enabled() else [torch.isfinite(grad_norm)]
        if loss is not None:
            loss = loss.detach() if torch.is_tensor(loss) else torch.tensor(float(loss), device=grad_norm.device)
            checks.append(torch.isfinite(loss).all())
        if not checks:
            return True
        bad = (~torch.stack([c.to(grad_norm.device) for c in checks]).all()).to(torch.int32)
        if self.ctx.distributed:  # the loss is per rank: all ranks must skip (or stop) together
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        self.last_step_finite = not bool(bad)
        if self.last_step_finite:
            self.nonfinite_steps = 0
            return True
        self.nonfinite_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        what = (f"loss {float(loss):.4g}, " if loss is not None else "") + f"gradient norm {float(grad_norm):.4g}"
        if self.nonfinite_steps > self.args.max_nonfinite_steps:
            raise TrainingDiverged(
                f"training diverged: step {self.step + 1} is not finite ({what}), "
                f"{self.nonfinite_steps} step(s) in a row (--max_nonfinite_steps {self.args.max_nonfinite_steps}); "
                f"stopped without saving. {self._last_good()} Lower --learning_rate (now "
                f"{self.args.learning_rate:g}), keep --grad_clip on, or check the data around this step.")
        self._say(f"warning: step {self.step + 1} is not finite ({what}); update skipped "
                  f"({self.nonfinite_steps}/{self.args.max_nonfinite_steps} in a row before the run stops)")
        return False

    def check_weights_finite(self, gathered: Optional[dict] = None) -> None:
        """Stop (TrainingDiverged) when a weight holds NaN/inf, e.g. before a save: a bad file never replaces a good
        one. Under DDP every rank checks its (identical) copy, so all stop together; under --fsdp 1 rank 0 checks
        the `gathered` full state and the verdict is all-reduced."""
        weights = unwrap(self.model).state_dict() if gathered is None else gathered
        bad = nonfinite_tensors(weights, torch.float16)  # as the weight file stores them
        if gathered is not None and self.ctx.distributed:
            flag = torch.tensor(int(bool(bad)), device=self.ctx.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = bad or (["(on rank 0)"] if flag.item() else [])
        if bad:
            total = sum(1 for v in weights.values() if v.is_floating_point()) or "all"
            raise TrainingDiverged(
                f"training diverged: after step {self.step} {len(bad)} of {total} weight tensors hold NaN/inf "
                f"(e.g. {bad[0]}); not saved. {self._last_good()} Lower --learning_rate (now "
                f"{self.args.learning_rate:g}) or keep --grad_clip on.")

    def _last_good(self) -> str:
        if self.last_saved_step is None:
            return (f"This run saved nothing, so {display_path(self.out_path)} and {display_path(self.ckpt_path)} "
                    f"are as they were before it.")
        return (f"The last good save (step {self.last_saved_step}) is kept: {display_path(self.out_path)} and "
                f"{display_path(self.ckpt_path)}.")

    def after_step(self, loss, parts: dict) -> None:
        """Log every `log_interval` steps and at the end; save every `save_interval` steps and at the end."""
        final = self.done
        if self.bar is not None:
            self.bar.update(1)
        # exponential moving average of the loss (0.9 per step, bias-corrected): the trend under a noisy loss
        loss = loss.detach() if torch.is_tensor(loss) else loss
        if self.last_step_finite:  # a skipped NaN step would poison the average for good
            self.loss_ema = 0.9 * self.loss_ema + 0.1 * loss
            self.ema_weight = 0.9 * self.ema_weight + 0.1
            self._record_signal({"loss": loss, **parts})
        if self.ctx.is_main and self._log_due(final):
            self._check_recompiles()
            smooth = float(self.loss_ema / self.ema_weight)
            self._log_line(float(loss), {**{k: float(v) for k, v in parts.items()}, "loss_smooth": smooth})
        if self.step % self.args.save_interval == 0 or final:
            self.save()

    def _log_due(self, final: bool) -> bool:
        """The first step (so a slow CPU run shows a loss at once), every `log_interval` steps, every
        `log_seconds` of wall time (MiniMind's default of 100 steps is ~30 min apart on 2 CPU cores), the end."""
        if final or self.step == self.step_at_start + 1 or self.step % self.args.log_interval == 0:
            return True
        return self.last_log_time is not None and time.perf_counter() - self.last_log_time >= self.log_seconds

    @property
    def log_seconds(self) -> float:
        return float(os.environ.get("MINIMIND_LOG_SECONDS", LOG_SECONDS))

    def _announce_run(self) -> None:
        """One line before the first step: how much work a step is and when the first loss line comes, and for a
        multi-process run how many processes and which backend (the first step on a CPU can take a minute)."""
        a = self.args
        if self.ctx.distributed and dist.is_initialized():
            self.log(f"distributed: {self.ctx.world_size} processes, backend {dist.get_backend()}, "
                     f"device {self.ctx.device.type}; batch {a.batch_size} per process")
        if self.done:
            return
        self.log(f"training {self.total_steps - self.step} steps (of {self.total_steps}): {a.batch_size} rows x "
                 f"{a.accumulation_steps} micro-batches x {self.ctx.world_size} process(es) per step, up to "
                 f"{a.max_seq_len} tokens a row; a line after step {self.step + 1}, then every {a.log_interval} "
                 f"steps or {self.log_seconds:g} s / 首步后输出一行，之后按步数或秒数")

    @property
    def recompiles(self) -> int:
        """torch.compile frames compiled after the warm-up step (0 when shapes stay static; 0 uncompiled)."""
        start = self.frames_after_warmup
        return 0 if self.compile_options is None or start is None else dynamo_frames() - start

    def _check_recompiles(self) -> None:
        if self.recompiles > self._recompiles_reported:
            self._recompiles_reported = self.recompiles
            self._say(f"warning: torch.compile recompiled {self.recompiles} time(s) after the first step; each "
                      f"stalls training (TORCH_LOGS=recompiles names the changed shape)")

    def _log_line(self, loss: float, parts: dict) -> None:
        synchronize(self.ctx.device)
        now = time.perf_counter()
        elapsed = now - self.timer if self.timer and now > self.timer else 0.0
        first = self.step == self.step_at_start + 1
        if first:  # nothing is timed yet after warm-up: the first step's own rate, warm-up (and compile) included
            tps = self.first_step_tokens / self.first_step_s if self.first_step_s else 0.0
        else:
            tps = self.tokens / elapsed if elapsed > 0 else 0.0
        mfu = 100 * tps * self.fpt / (self.peak * self.ctx.world_size) if self.peak and tps and not first else None
        steps_done = self.step - self.step_at_start
        if steps_done > 1 and self.timer:  # ETA from the steps after the first, which carries the warm-up
            eta = (now - self.t_timed) / (steps_done - 1) * (self.total_steps - self.step)
        else:
            eta = (now - self.t_start) / max(1, steps_done) * (self.total_steps - self.step)
        msg = (f"epoch {self.epoch + 1}/{self.args.epochs} step {self.step}/{self.total_steps} loss {loss:.4f} "
               + "".join(f"{k} {v:.4f} " for k, v in parts.items()) + f"lr {self.lr:.3e} tokens/s {tps:,.0f}")
        msg += f" (first step, {self.first_step_s:.1f} s incl. warm-up)" if first and self.first_step_s else ""
        msg += f" MFU {mfu:.1f}%" if mfu is not None else ""
        msg += f" ETA {_fmt_seconds(eta)}"
        self._say(msg)
        self.last_log_time, self.logged_step = now, self.step
        self.throughput = {"tokens_per_s": tps, "mfu_percent": mfu}
        if self.tracker:
            metrics = {"loss": loss, **parts, "lr": self.lr, "tokens_per_s": tps}
            if mfu is not None:
                metrics["mfu_percent"] = mfu
            self.tracker.log(metrics, step=self.step)
        self._append_metrics({"step": self.step, "total_steps": self.total_steps, "epoch": self.epoch + 1,
                              "tokens": self.tokens_seen, "loss": loss, **parts, "lr": self.lr, "tokens_per_s": tps,
                              "mfu_percent": mfu, "elapsed_s": now - self.t_start, "eta_s": eta,
                              "time": time.time(), "stage": self.args.save_weight})
        if not first:
            self.timer, self.tokens = now, 0

    def _start_metrics_log(self) -> int:
        """Start {save_dir}/{stem}.metrics.jsonl, one JSON line per log line (scripts/report.py plots it): a fresh run
        empties it; a resume keeps the lines up to the resumed step (atomic rewrite, so steps logged after the last
        save are logged again, not twice) and counts tokens on from the last kept line (tokens of steps between
        that line and the save are not recounted when --save_interval is not a multiple of --log_interval)."""
        kept, tokens = [], 0
        if self.args.from_resume and self.metrics_path.is_file():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    step = int(row["step"])
                except (ValueError, KeyError, TypeError):
                    continue  # a partial last line of a killed run
                if step <= self.step:
                    kept.append(line + "\n")
                    tokens = int(row.get("tokens", tokens))
        atomic_write_text("".join(kept), self.metrics_path)
        return tokens

    def _append_metrics(self, row: dict) -> None:
        """One full JSON line, flushed and fsynced: a kill leaves at most a partial last line, which readers skip."""
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @contextmanager
    def interruptible(self):
        """Ctrl-C stops the run with one line (no traceback): a single-process run first saves the weights and
        resume state of the last finished optimizer step (a 26M model saves in about a second), and the line
        says what was saved and the command that resumes. Exit code 130, as for any SIGINT."""
        old = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the save in half
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if self.ctx.is_main:
                print(self._interrupted(), file=sys.stderr, flush=True)
            raise SystemExit(130)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def _on_sigint(self, signum, frame) -> None:
        if self._updating:
            self._interrupt_pending = True
        else:
            raise KeyboardInterrupt

    def resume_command(self) -> str:
        """This run's command line with --from_resume 1 (what to type to go on)."""
        argv, i = list(sys.argv[1:]), 0
        while i < len(argv):
            if argv[i] == "--from_resume":
                del argv[i:i + 2]
            elif argv[i].startswith("--from_resume="):
                del argv[i]
            else:
                i += 1
        return shlex.join(["python", display_path(Path(sys.argv[0]).resolve()), *argv, "--from_resume", "1"])

    def _interrupted(self) -> str:
        """Save what a Ctrl-C leaves (see interruptible) and return the one line that tells the user."""
        head = f"已中断 / interrupted at step {self.step}/{self.total_steps}"
        saved = self.last_saved_step or 0
        if self.step > saved and not self.ctx.distributed and not self.fsdp:  # FSDP saves are collective
            self.epoch, self.batches_done = self.batches_at_step
            written = self._write_state()
            return (f"{head}: saved {display_path(written)} and {display_path(self.ckpt_path)}; "
                    f"resume: {self.resume_command()}")
        if saved > 0 and self.ckpt_path.is_file():
            why = "" if self.step == saved else \
                f" (multi-process runs save every --save_interval only; steps after {saved} are lost)"
            return (f"{head}: the last save is step {saved} at {display_path(self.ckpt_path)}{why}; "
                    f"resume: {self.resume_command()}")
        return f"{head}: nothing saved (no optimizer step finished since the start)"

    def save(self) -> None:
        if self.fsdp:
            return self._save_sharded()
        self.check_weights_finite()  # on every rank, before rank 0 writes anything
        if not self.ctx.is_main:
            return
        written = self._write_state()
        self._say(f"saved {written} and {self.ckpt_path} (step {self.step})")

    def _write_state(self) -> Path:
        """Weights (+ sidecar) and the resume state of the current step; returns the weight path written."""
        written = self.save_fn(self.model) or self.out_path
        atomic_save({"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                     **self._position_state()}, self.ckpt_path)
        self.last_saved_step = self.step
        return Path(written)

    def _position_state(self) -> dict:
        """Everything in a resume state besides the model and optimizer."""
        return {"scaler": self.scaler.state_dict(), "epoch": self.epoch, "batches_done": self.batches_done,
                "step": self.step, "world_size": self.ctx.world_size, "rng": rng_state(),
                "extra": {k: v.state_dict() for k, v in self.extra_state.items()},
                "run_id": self.tracker.run_id if self.tracker else None,
                "args": {k: v for k, v in vars(self.args).items() if jsonable(v)}}  # plain data: weights_only

    def _save_sharded(self) -> None:
        """--fsdp 1, on every rank: full .pth + sidecar gathered to rank 0, resume state as a DCP folder."""
        full = fsdp.gather_full_state(self.model)
        self.check_weights_finite(full)  # rank 0 holds the gathered tensors; every rank learns the verdict
        written = self.out_path
        if self.ctx.is_main:
            written = self.save_fn(fsdp.GatheredModel(full, unwrap(self.model).config)) or self.out_path
        del full
        fsdp.save_resume(self, self._position_state())
        self.last_saved_step = self.step
        self._say(f"saved {written} and {dcp_folder(self.ckpt_path)} (step {self.step})")

    def _say(self, msg: str) -> None:
        """A log line that does not break the progress bar."""
        if self.bar is not None:
            self.bar.write(msg)
        else:
            self.log(msg)

    def _load_resume(self) -> Optional[str]:
        if self.fsdp:
            state = fsdp.load_resume(self)  # model + AdamW resharded to this run's world size
            path = state["path"]
            self.scaler.load_state_dict(state["scaler"])
        else:
            path = self.ckpt_path
            if not path.is_file():
                sharded = dcp_folder(path)
                hint = (f"; {sharded} exists: it was written with --fsdp 1, so resume with --fsdp 1"
                        if sharded.is_dir() else "; run once without it first")
                raise UserError(f"--from_resume 1 but no resume state at {path}{hint}")
            state = load_resume_state(path, allowed=(DeviceDefault,))  # older files kept unresolved flag defaults
            check_state_matches(self.model, state["model"], path, what="resume state")
            unwrap(self.model).load_state_dict(state["model"])
            try:
                self.optimizer.load_state_dict(state["optimizer"])
                self.scaler.load_state_dict(state["scaler"])
            except (ValueError, KeyError, RuntimeError) as e:  # e.g. LoRA's resume state for a full fine-tune
                raise UserError(f"resume state {path} does not fit this run's optimizer ({e}); it was written by "
                                f"another stage or with other trained parameters; delete it to start fresh") from None
        for name, obj in self.extra_state.items():
            if name not in state.get("extra", {}):
                raise UserError(f"resume state {path} has no '{name}' state; it was written by another stage")
            obj.load_state_dict(state["extra"][name])
        set_rng_state(state["rng"])
        epoch, batches_done, self.step = state["epoch"], state["batches_done"], state["step"]
        if state["world_size"] != self.ctx.world_size:  # same number of samples seen, counted in this run's batches
            batches_done = batches_done * state["world_size"] // self.ctx.world_size
            self.log(f"world size changed {state['world_size']} -> {self.ctx.world_size}: "
                     f"resuming after {batches_done} batches")
        if batches_done >= self.batches_per_epoch:
            epoch, batches_done = epoch + 1, 0
        self.epoch, self.batches_done = epoch, batches_done
        self.last_saved_step = self.step
        self.log(f"resumed from {path}: epoch {epoch + 1}, step {self.step}, "
                 f"{batches_done} batches of this epoch done")
        return state.get("run_id")

    def _record_signal(self, values: dict) -> None:
        """Keep this step's values (device tensors stay on the device: no host sync per step) for learning_signal."""
        row = {k: v.detach() if torch.is_tensor(v) else v for k, v in values.items()}
        if len(self.signal_head) < self.signal_tail.maxlen:
            self.signal_head.append(row)
        self.signal_tail.append(row)

    def learning_signal(self) -> str:
        """'(mean of steps 1-5 -> 16-20): margin: 0.000 -> 0.412, accuracy: 0.200 -> 0.850, loss: ...': the mean of
        each signal value over the first and the last steps of this run (windows of up to SIGNAL_WINDOW steps that
        do not overlap), so the end of a run says whether its stage learned; "" for a run of one step."""
        head, tail = self.signal_head, list(self.signal_tail)
        n = min(len(head), len(tail), (self.step - self.step_at_start) // 2)
        if n < 1:
            return ""
        head, tail = head[:n], tail[-n:]
        keys = [k for k in (self.signal_keys or head[0]) if k in head[0] and k not in NOT_SIGNALS]
        if self.signal_keys and "loss" not in keys:
            keys.append("loss")
        mean = lambda rows, k: sum(float(r[k]) for r in rows) / len(rows)  # noqa: E731
        first = self.step_at_start + 1
        span = (f"step {first} -> {self.step}" if n == 1 else
                f"mean of steps {first}-{first + n - 1} -> {self.step - n + 1}-{self.step}")
        # "loss:" with a colon, so log parsers that read " loss 1.23" from the step lines do not take this line
        return f"({span}): " + ", ".join(f"{k}: {_fmt_signal(mean(head, k))} -> {_fmt_signal(mean(tail, k))}"
                                         for k in keys)

    def finish(self) -> None:
        learned = self.learning_signal() if self.ctx.is_main else ""
        if learned:
            self._say(f"学习信号 / learning signal {learned}")
        if self.bar is not None:
            self.bar.close()
        if self.tracker:
            self.tracker.finish()
        if self.ctx.distributed:
            dist.barrier()


def train(args, ctx: Context, model, dataset, loss_fn: Callable, collate_fn=None, log: Callable = print,
          **trainer_kwargs) -> Trainer:
    """The supervised loop: accumulated micro-batches, clipped AdamW steps, logging, saves and resume.

    loss_fn(model, batch) returns (loss, parts): `loss` is what is minimised for this micro-batch (a mean over
    its tokens), `parts` are floats to log. The final step is always saved.
    """
    trainer = Trainer(args, ctx, model, dataset, collate_fn, log, fsdp_supported=True, **trainer_kwargs)
    group_loss, group_parts = 0.0, {}
    with trainer.interruptible():
        for batch, group_size, last_micro in trainer.micro_batches():
            with trainer.no_sync(last_micro):
                with ctx.autocast():
                    loss, parts = loss_fn(trainer.train_model, batch)
                trainer.backward(loss / group_size)
            trainer.count_tokens(_count_tokens(batch))
            # the logged loss is the mean over the accumulation group, kept on the device (no host sync per
            # micro-batch)
            group_loss = group_loss + loss.detach() / group_size
            for k, v in parts.items():
                group_parts[k] = group_parts.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v) / group_size
            if last_micro:
                trainer.optimizer_step(group_loss)
                trainer.after_step(group_loss, group_parts)
                group_loss, group_parts = 0.0, {}
    trainer.finish()
    return trainer


def check_fsdp_supported(supported: bool, save_fn, param_groups, extra_state) -> None:
    """--fsdp 1 covers the stages that train one model with `train()`; refuse the others with the reason."""
    if save_fn is not None:
        raise UserError("--fsdp 1 does not apply to LoRA: it trains only the small adapter matrices on a frozen base "
                        "(which fits wherever DDP fits), and peft's save_pretrained cannot write sharded (DTensor) "
                        "adapters; use plain torchrun (DDP)")
    if not supported or param_groups is not None or extra_state:
        raise UserError("--fsdp 1 is for the stages that train one model (pretrain, full_sft, dpo, reason, "
                        "distillation); the RL stages decode rollouts from full weights with the KV-cache engine "
                        "and train a critic or baseline beside the policy, so they run with DDP: drop --fsdp")


def stops_cleanly(loop: Callable) -> Callable:
    """Decorate a training loop whose first argument is its Trainer: Ctrl-C goes through Trainer.interruptible."""
    @functools.wraps(loop)
    def run(trainer: Trainer, *args, **kwargs):
        with trainer.interruptible():
            return loop(trainer, *args, **kwargs)
    return run


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _count_tokens(batch) -> int:
    """Tokens through the model: the first tensor of a tuple batch, every *input_ids tensor of a dict batch."""
    if isinstance(batch, (list, tuple)):
        return batch[0].numel()
    return sum(v.numel() for k, v in batch.items() if k.endswith("input_ids") and torch.is_tensor(v))


# logged values that are rates, not something a stage learns
NOT_SIGNALS = {"gen_tok_s", "loss_smooth"}


def _fmt_signal(v: float) -> str:
    return f"{v:.3f}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.3g}"


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def causal_lm_loss(model, batch):
    """(input_ids, labels) -> next-token cross-entropy, plus the MoE load-balancing term when present."""
    input_ids, labels = batch
    out = model(input_ids, labels=labels)
    parts = {"aux_loss": out.aux_loss} if unwrap(model).config.use_moe else {}
    return out.loss + out.aux_loss, parts


def label_logprobs(model, input_ids, labels, attention_mask=None):
    """Per-token log-probs of the labelled next tokens from the (DDP-wrapped) model's own forward.

    Returns (logp [B, T-1], mask [B, T-1] float, aux_loss): mask is 1 where labels[:, 1:] is a trained token
    (assistant tokens in chat data), logp is 0 elsewhere. Calling `model(...)` keeps DDP's gradient hooks and the
    MoE aux loss; the log-probs are the forward's `token_logprobs`, the same numbers its `loss` is made of.
    """
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    return out.token_logprobs, (labels[:, 1:] != -100).float(), out.aux_loss


def reduce_logprobs(logp: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Sequence log-prob from masked token log-probs: 'sum' or 'mean' over the labelled tokens."""
    total = (logp * mask).sum(-1)
    return total if how == "sum" else total / mask.sum(-1).clamp(min=1)


# flag -> smallest value that makes sense; 0 for these would divide by zero or never log / save
MINIMUM_FLAG_VALUES = {"batch_size": 1, "accumulation_steps": 1, "epochs": 1, "max_seq_len": 2, "log_interval": 1,
                       "save_interval": 1, "max_steps": 0, "warmup_steps": 0, "num_workers": 0, "grad_clip": 0,
                       "learning_rate": 0, "hidden_size": 1, "num_hidden_layers": 1,
                       "max_nonfinite_steps": 0}


# flag -> largest value that makes sense for these 26M-145M models; past it a typo would only fail later (out of
# memory, an overflow deep in torch) or run for ever
MAXIMUM_FLAG_VALUES = {"batch_size": 65536, "accumulation_steps": 65536, "epochs": 100000, "max_seq_len": 1 << 20,
                       "hidden_size": 16384, "num_hidden_layers": 512, "num_workers": 1024, "max_steps": 1 << 40,
                       "log_interval": 1 << 40, "save_interval": 1 << 40, "warmup_steps": 1 << 40}


def check_common_args(args) -> None:
    """Refuse values of the shared flags that cannot work, naming the flag (before any model or data is built).

    Every float flag, the stage's own included, must be finite: `--learning_rate inf` trained NaN weights and
    `nan` crashed inside AdamW. The training manager runs this same check before it starts a run."""
    for flag, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{flag} {value}: must be a finite number")
    for flag, low in MINIMUM_FLAG_VALUES.items():
        value = getattr(args, flag, None)
        if isinstance(value, (int, float)) and value < low:  # a DeviceDefault is checked once resolved
            raise UserError(f"--{flag} {value}: must be at least {low}")
    for flag, high in MAXIMUM_FLAG_VALUES.items():
        value = getattr(args, flag, None)
        if isinstance(value, (int, float)) and value > high:
            raise UserError(f"--{flag} {value}: must be at most {high}")


def start_stage(args):
    """Device/distributed context, rank-0 logger, seeded model (from `--from_weight`) and tokenizer for a stage."""
    check_common_args(args)
    ctx = init_distributed_mode(args.device, args.dtype)
    log = main_logger(ctx)
    resolve_device_defaults(args, ctx.device.type, log, int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)))
    seed_everything(args.seed)
    model, tokenizer = init_model(args, ctx, log)
    return ctx, log, model, tokenizer


def main_logger(ctx: Context) -> Callable:
    """print on rank 0 only, flushed so logs interleave correctly when piped."""
    return (lambda msg: print(msg, flush=True)) if ctx.is_main else (lambda msg: None)
