"""MiniMind .pth <-> transformers folder in MiniMind's own format (model_type "minimind", remote code included);
scripts/convert_model.py is the command.

`to_hf` writes config.json with `auto_map`, a copy of model/model_minimind.py, model.safetensors (the .pth tensors
unchanged, lm_head left out because it is tied), the tokenizer and generation_config.json, so
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` works without this repository.
`to_pth` turns such a folder (e.g. a downloaded MiniMind2) back into a MiniMind2-layout .pth + sidecar that the
trainers fine-tune with `--from_weight`. The round trip .pth -> folder -> .pth is bit-identical.
For vLLM / llama.cpp, which do not run remote code, use scripts/convert_to_hf.py.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch

from model.checkpoint import save_weights, weight_path
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from model.runtime import ROOT, UserError, repo_path
from scripts.convert.common import (
    TOKENIZER_FILES,
    add_checkpoint_args,
    atomic_output_dir,
    check_output_dir,
    copy_tokenizer,
    describe,
    load_checkpoint,
    output_dir,
    save_safetensors,
    write_generation_config,
)

MODEL_FILE = ROOT / "model" / "model_minimind.py"
# the model file and the project modules it imports relatively (`from .x import ...`): remote code needs them all
MODEL_FILES = (MODEL_FILE, ROOT / "model" / "fused_loss.py")
AUTO_MAP = {"AutoConfig": "model_minimind.MiniMindConfig", "AutoModelForCausalLM": "model_minimind.MiniMindForCausalLM"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="MiniMind .pth <-> MiniMind-format transformers folder",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="direction", required=True)
    to_hf = sub.add_parser("to_hf", help=".pth -> transformers folder (remote code)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_args(to_hf)
    to_hf.add_argument("--output_dir", default=None, help="default: out/MiniMind2-hf (out/MiniMind2-MoE-hf for MoE)")
    to_hf.add_argument("--force", action="store_true", help="replace a non-empty --output_dir")
    to_pth = sub.add_parser("to_pth", help="transformers folder -> .pth + .json sidecar",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    to_pth.add_argument("--load_from", required=True, help="folder with config.json (model_type minimind) and weights")
    to_pth.add_argument("--save_weight", default="full_sft",
                        help="stage name of the written file: {save_dir}/{save_weight}_{hidden}[_moe].pth")
    to_pth.add_argument("--save_dir", default="out", help="folder for the .pth and its sidecar")
    to_pth.add_argument("--force", action="store_true", help="overwrite an existing .pth")
    return p


# ------------------------------------------------------------------------------------------------------------ to_hf

def to_hf(args) -> Path:
    path, model, state = load_checkpoint(args)
    config = model.config
    out = output_dir(args.output_dir, "out/MiniMind2-MoE-hf" if config.use_moe else "out/MiniMind2-hf")
    check_output_dir(out, args.force)
    tied = state.get("lm_head.weight")
    if tied is not None and not torch.equal(tied, state["model.embed_tokens.weight"]):
        raise UserError(f"{path}: lm_head.weight differs from model.embed_tokens.weight, but MiniMind ties them; "
                        f"the file was not written by MiniMind")
    print(f"converting {path} ({describe(config)}) -> {out}", flush=True)
    with atomic_output_dir(out, args.force) as tmp:
        config.architectures = ["MiniMindForCausalLM"]
        config.auto_map = AUTO_MAP
        config.dtype = str(state["model.embed_tokens.weight"].dtype).replace("torch.", "")
        config.save_pretrained(tmp)
        for source in MODEL_FILES:
            shutil.copyfile(source, tmp / source.name)
        # The tensors exactly as stored in the .pth (fp16 for trainer output): the round trip stays bit-identical.
        save_safetensors({k: v for k, v in state.items() if k != "lm_head.weight"}, tmp / "model.safetensors")
        copy_tokenizer(tmp, path, args.tokenizer_path)
        write_generation_config(tmp, config)
    print(f"wrote {out}\n  load it with AutoModelForCausalLM.from_pretrained('{out}', trust_remote_code=True), "
          f"or: python eval_llm.py auto --load_from {out}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------- to_pth

def load_minimind_folder(folder: Path) -> MiniMindForCausalLM:
    """This repository's MiniMind class over the folder's config and weights (no remote code is run)."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"--load_from {folder}: no config.json there; pass a MiniMind transformers folder "
                        f"(e.g. one written by 'convert_model.py to_hf' or downloaded MiniMind2)")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    if model_type != "minimind":
        raise UserError(f"--load_from {folder}: model_type is {model_type!r}, not 'minimind'; this converter reads "
                        f"MiniMind-format folders only (written by 'convert_model.py to_hf', or a MiniMind2 "
                        f"download); a convert_to_hf.py export was made from a .pth, convert that one instead")
    config = MiniMindConfig.from_pretrained(str(folder))
    try:
        return MiniMindForCausalLM.from_pretrained(str(folder), config=config, dtype=torch.float32).eval()
    except (OSError, ValueError) as e:
        raise UserError(f"--load_from {folder}: cannot load the weights: {e}") from None


def to_pth(args) -> Path:
    folder = repo_path(args.load_from)
    model = load_minimind_folder(folder)
    config = model.config
    path = weight_path(args.save_dir, args.save_weight, config.hidden_size, config.use_moe)
    if path.exists() and not args.force:
        raise UserError(f"{path} exists; pass --force to overwrite it, or choose another --save_weight / --save_dir")
    print(f"converting {folder} ({describe(config)}) -> {path}", flush=True)
    tokenizer = None
    if (folder / "tokenizer.json").is_file():  # the folder's own vocabulary travels with the weights (MiniMind2's
        tokenizer = path.parent / f"{path.stem}_tokenizer"  # differs from model/), recorded in the sidecar
        with atomic_output_dir(tokenizer, force=True) as tmp:
            for name in TOKENIZER_FILES:
                if (folder / name).is_file():
                    shutil.copyfile(folder / name, tmp / name)
    save_weights(model, path, argparse.Namespace(converted_from=str(folder), save_weight=args.save_weight,
                                                 tokenizer_path=str(tokenizer) if tokenizer else None))
    print(f"tokenizer: {tokenizer or 'model/ (the folder has no tokenizer.json)'}", flush=True)
    print(f"wrote {path} and {path.with_suffix('.json').name}\n"
          f"  fine-tune it with e.g. python trainer/train_full_sft.py --from_weight {args.save_weight} "
          f"--hidden_size {config.hidden_size} --num_hidden_layers {config.num_hidden_layers}"
          f"{' --use_moe 1' if config.use_moe else ''}", flush=True)
    return path

