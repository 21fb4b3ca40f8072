"""Compiled decode steps kept on disk, so torch.compile's minute is paid once per machine, not once per process.

Two layers, both under one folder (`MINIMIND_COMPILE_CACHE`, default `.cache/compile/` in the repository,
git-ignored):
- `inductor/`: Inductor's own FX-graph, AOTAutograd and Triton caches (`TORCHINDUCTOR_CACHE_DIR`, set here unless
  the user set it). Torch's default is /tmp/torchinductor_$USER, which a reboot or a tmp cleaner empties.
- `decode-<key>.bin`: the bytes of `torch.compiler.save_cache_artifacts()` after the engine compiled its decode
  step, keyed by the model's shape, the dtype, the torch version and the device name. Loading them before the next
  compile fills Inductor's caches even when `inductor/` was wiped or lives elsewhere.

A second process then only re-traces (Dynamo) and loads compiled kernels: seconds instead of a minute. Every
failure here (read-only folder, a file from another torch build) is a warning and a normal compile, never an error.
"""
import logging
import os
import re
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger("minimind.compile_cache")

CACHE_ENV = "MINIMIND_COMPILE_CACHE"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".cache" / "compile"


def cache_root() -> Optional[Path]:
    """The cache folder (created), or None when it cannot be created or MINIMIND_COMPILE_CACHE is `off`."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "none"):
        return None
    root = Path(value).expanduser() if value else DEFAULT_ROOT
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("compile cache folder %s cannot be created (%s); compiling without a disk cache "
                    "(set %s to a writable folder)", root, e, CACHE_ENV)
        return None
    return root


def _torch_default_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        return os.path.abspath(default_cache_dir())
    except (ImportError, AttributeError):  # another torch layout: then only an unset variable is replaced
        return ""


def use_inductor_cache(root: Path) -> None:
    """Point Inductor's caches into `root` unless the user chose a folder. Importing transformers already sets
    TORCHINDUCTOR_CACHE_DIR to torch's default (/tmp/torchinductor_$USER, measured with transformers 5.24), so that
    value counts as unset; Inductor reads the variable at each use, so changing it before the compile is enough."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == _torch_default_dir():
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")


def artifact_key(config, dtype: torch.dtype, device: torch.device, stacked: bool) -> str:
    """File name of the saved artifacts for one decode step: everything the compiled code depends on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    parts = [f"h{config.hidden_size}", f"l{config.num_hidden_layers}", f"q{config.num_attention_heads}",
             f"kv{config.num_key_value_heads}", f"d{config.head_dim}", f"v{config.vocab_size}",
             "moe" if config.use_moe else "dense", "stacked" if stacked else "modules",
             str(dtype).replace("torch.", ""), f"torch{torch.__version__}", name]
    return "decode-" + re.sub(r"[^A-Za-z0-9.+_-]+", "_", "-".join(parts)) + ".bin"


def load_artifacts(path: Path) -> bool:
    """Hot-load saved artifacts into this process's compile caches; False (and a warning) if they do not load."""
    if not path.is_file():
        return False
    try:
        # torch logs and swallows a corrupt file (checksum) and returns None then
        loaded = torch.compiler.load_cache_artifacts(path.read_bytes()) is not None
        reason = "not a cache file of this torch build"
    except Exception as e:  # a file from another torch build, or truncated: compile as if it were not there
        loaded, reason = False, f"{type(e).__name__}: {e}"
    if not loaded:
        log.warning("compile cache %s does not load (%s); compiling afresh", path, reason)
    return loaded


def save_artifacts(path: Path) -> bool:
    """Write what this process compiled so far (temp file, then rename: a reader never sees half a file)."""
    try:
        saved = torch.compiler.save_cache_artifacts()
        if not saved or not saved[0]:
            return False
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(saved[0])
        os.replace(tmp, path)
    except Exception as e:
        log.warning("compile cache %s not written (%s: %s)", path, type(e).__name__, e)
        return False
    return True
