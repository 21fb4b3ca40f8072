"""LoRA for MiniMind through `peft`, so adapters are standard PEFT folders.

An adapter saved here (`adapter_config.json` + `adapter_model.safetensors`) uses the same module names as the
Hugging Face Llama export, so it loads onto the converted model too. Trainers call `apply_lora`, then
`save_lora`; eval and serving call `load_lora`; `merge_lora` folds the adapter into plain weights.
"""
import shutil
from pathlib import Path
from typing import Optional, Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

# Every attention and MLP projection. The MoE router is named `gate` (not `gate_proj`), so it is not adapted.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model, rank: int = 8, alpha: Optional[float] = None, dropout: float = 0.0,
               targets: Sequence[str] = DEFAULT_TARGETS) -> PeftModel:
    """Wrap `model` with fresh LoRA adapters; the base weights are frozen, only adapter weights train.

    alpha defaults to 2 * rank (update scale alpha/rank = 2), a common choice for small ranks.
    """
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                        target_modules=list(targets), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def lora_parameters(model) -> list:
    """The parameters that train under LoRA (what the optimizer should get)."""
    return [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]


def save_lora(model: PeftModel, directory) -> Path:
    """Write the adapter in PEFT format (config + safetensors), replacing an older one only once complete."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def load_lora(model, directory, trainable: bool = False) -> PeftModel:
    """Attach a saved adapter to a base model; a missing folder names the path and how to make one."""
    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no LoRA adapter at {directory} (adapter_config.json missing); "
                                f"train one with: python trainer/train_lora.py")
    return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)


def merge_lora(model: PeftModel):
    """Fold the adapter into the base weights and return the plain model (same class and keys as before)."""
    with torch.no_grad():
        return model.merge_and_unload()

