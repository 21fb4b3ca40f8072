"""What both converters share: finding and loading a native checkpoint, writing an output folder atomically,
the tokenizer and generation files, and the logit comparison that proves a converted model equals the native one.

scripts/convert/minimind.py (MiniMind's own transformers format), scripts/convert/hf.py (Llama / Qwen2-MoE for
vLLM, llama.cpp and plain transformers) and scripts/convert/gguf.py import it as scripts.convert.common.
"""
import argparse
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig
from transformers.utils import logging as hf_logging

from model.checkpoint import (
    TOKENIZER_DIR,
    TOKENIZER_FILES,
    load_weights,
    missing_weight_message,
    read_sidecar,
    resolve_weight,
    sidecar_path,
    sizes_from_state_dict,
    weights_tokenizer,
    train_command,
)
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from model.runtime import UserError, repo_path

# eval_llm.py's sampling defaults, so `generate()` / vLLM without arguments behave like our chat.
GENERATION_DEFAULTS = dict(do_sample=True, temperature=0.85, top_p=0.85)
# A converted model must reproduce the native logits. fp32 summation-order noise is ~1e-6 for the tiny test models
# and ~1e-5 at 768/16; a wrong mapping (a transposed or mis-scaled tensor, a wrong RoPE) is off by ~0.1 or more.
VERIFY_TOLERANCE = 1e-3

hf_logging.disable_progress_bar()  # from_pretrained's per-tensor "Loading weights" bar is noise in a converter's log


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    """The flags that name a native weight file; sizes default to its .json sidecar."""
    add = p.add_argument
    add("--weight", default="full_sft", help="stage name of the weights: {save_dir}/{weight}_{hidden}[_moe].pth")
    add("--save_dir", default="out", help="folder with the .pth weights and their .json sidecars")
    add("--hidden_size", type=int, default=None, help="model width; default: from the sidecar")
    add("--num_hidden_layers", type=int, default=None, help="transformer blocks; default: from the sidecar")
    add("--use_moe", type=int, default=None, choices=[0, 1], help="1 = MoE weights; default: from the sidecar")
    add("--inference_rope_scaling", type=int, default=None, choices=[0, 1],
        help="1 = export with YaRN (2048 trained positions x16), as eval_llm.py --inference_rope_scaling runs it; "
             "default: the sidecar's setting")
    add("--tokenizer_path", default=None,
        help="tokenizer folder to export with the weights; default: the one their sidecar records (model/ without "
             "one); a different vocabulary than the recorded one is refused")


# ------------------------------------------------------------------------------------------------------ checkpoints

def resolve_checkpoint(args) -> tuple:
    """(weight path, MiniMindConfig) for the flags; refuses what would give a silently wrong config.

    A sidecar-less file needs its sizes on the command line: head counts cannot be read off the tensor shapes
    (q_proj is [heads x head_dim, hidden] for any split), and a wrong guess converts without error into a model
    that produces garbage.
    """
    path, cfg, _ = resolve_weight(args)
    if not path.is_file():
        raise UserError(missing_weight_message(path, f"train it with: {train_command(args.weight, cfg, args.save_dir)}"))
    try:
        sidecar = read_sidecar(path)
    except ValueError as e:
        raise UserError(f"cannot read sidecar {sidecar_path(path)}: {e}") from None
    if sidecar is None and (args.hidden_size is None or args.num_hidden_layers is None):
        raise UserError(f"{path} has no sidecar {sidecar_path(path).name}, so its sizes are unknown; pass them: "
                        f"--hidden_size N --num_hidden_layers N [--use_moe 1] (head counts and the rest are then "
                        f"MiniMind2's defaults: 8 heads, 2 KV heads)")
    if sidecar is None:  # keep only what the user gave; MiniMindConfig supplies MiniMind2's defaults for the rest
        cfg = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "use_moe")}
    if args.inference_rope_scaling is not None:
        cfg["inference_rope_scaling"] = bool(args.inference_rope_scaling)
    check_layout(path, cfg)
    try:
        return path, MiniMindConfig(**cfg)
    except ValueError as e:
        raise UserError(f"invalid model config for {path}: {e}") from None


def check_layout(path: Path, cfg: dict) -> None:
    """Dense/MoE, width and depth of the file against the config, named in words before any tensor is loaded."""
    found = sizes_from_state_dict(path)
    if bool(found["use_moe"]) != bool(cfg["use_moe"]):
        kind = "a MoE" if found["use_moe"] else "a dense"
        flag = 1 if found["use_moe"] else 0
        raise UserError(f"{path} holds {kind} model (its keys {'include' if found['use_moe'] else 'lack'} "
                        f"mlp.experts.*), but it is being converted as {'MoE' if cfg['use_moe'] else 'dense'}; "
                        f"pass --use_moe {flag} (and fix the sidecar {sidecar_path(path).name} if it says otherwise)")
    for key in ("hidden_size", "num_hidden_layers"):
        if found[key] != cfg[key]:
            raise UserError(f"{path} has {key} {found[key]} but the config says {cfg[key]}; "
                            f"pass --{key} {found[key]} or fix the sidecar {sidecar_path(path).name}")


def load_checkpoint(args) -> tuple:
    """(path, native model in fp32 eval mode, state_dict as stored in the file)."""
    path, config = resolve_checkpoint(args)
    model = MiniMindForCausalLM(config)
    load_weights(model, path)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return path, model.eval(), state


def describe(config: MiniMindConfig) -> str:
    kind = (f"MoE {config.n_routed_experts} experts top-{config.num_experts_per_tok} + {config.n_shared_experts} "
            f"shared" if config.use_moe else "dense")
    return (f"hidden_size {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads}/"
            f"{config.num_key_value_heads} heads, {kind}{', YaRN x16' if config.inference_rope_scaling else ''}")


# ---------------------------------------------------------------------------------------------------- output folders

def check_output_dir(out: Path, force: bool) -> None:
    """Refuse a non-empty folder unless --force: a conversion must not silently mix with or wipe other files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder; choose another --output_dir")
    if out.is_dir() and not force:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            raise UserError(f"output folder {out} is not empty ({len(entries)} entries, e.g. {entries[0]}); "
                            f"pass --force to replace it, or choose another --output_dir")


@contextmanager
def atomic_output_dir(out: Path, force: bool):
    """Yield a temporary sibling folder; on success it replaces `out` in one rename, on error it is removed.

    An interrupted conversion therefore never leaves a half-written folder that vLLM would try to load. With
    --force the previous folder is moved aside first and deleted only once the new one is in place.
    """
    check_output_dir(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out.parent}: {e.strerror}") from None
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


def output_dir(given, default: str) -> Path:
    return repo_path(given or default)


# ---------------------------------------------------------------------------------------- files in every HF folder

def copy_tokenizer(dst: Path, weights: Optional[Path] = None, given: Optional[str] = None) -> None:
    """The tokenizer the weights were trained with (their sidecar's record, or --tokenizer_path checked against it;
    model/ without either) into dst."""
    folder = weights_tokenizer(weights, given) if weights is not None else TOKENIZER_DIR
    for name in TOKENIZER_FILES:
        src = folder / name
        if not src.is_file():
            raise UserError(f"tokenizer file {src} is missing; restore it with git checkout, or retrain it with "
                            f"python trainer/train_tokenizer.py")
        shutil.copyfile(src, dst / name)


def write_generation_config(dst: Path, config) -> None:
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, **GENERATION_DEFAULTS).save_pretrained(dst)


def save_safetensors(state: dict, path: Path) -> None:
    """One shard: MiniMind's largest preset (145M parameters) is ~290 MB in 16-bit, far below the usual 5 GB shard."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~current_umask())  # safetensors creates it 0600; a vLLM container may run as another user


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------- proof

def probe_ids(vocab_size: int, batch: int = 2, length: int = 48, seed: int = 0) -> torch.Tensor:
    """Fixed pseudo-random token ids: every position and most of the vocabulary's rows take part."""
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def max_logit_diff(native, converted, ids: torch.Tensor) -> float:
    """Largest absolute difference between the two models' fp32 logits on `ids`."""
    a = native(ids).logits.float()
    b = converted(ids).logits.float()
    if a.shape != b.shape:
        raise UserError(f"converted model gives logits of shape {tuple(b.shape)}, native {tuple(a.shape)}")
    return (a - b).abs().max().item()


def native_in_dtype(model, dtype: torch.dtype):
    """A copy of `model` whose weights went through `dtype` and back to fp32: the values a `dtype` export holds,
    so the comparison tests the mapping, not the rounding."""
    copy = MiniMindForCausalLM(model.config)
    copy.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
    return copy.eval()
