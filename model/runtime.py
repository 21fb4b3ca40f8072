"""Where code runs and how it fails: the repository root, device and dtype choice, distributed setup, UserError.

Everything that runs the model (trainers, eval_llm.py, the server, the converters, the web demo) takes these from
here, so there is one UserError class and one device rule in a process:
NPU (torch_npu importable and a device visible) > CUDA > MPS > CPU; bf16 on CUDA, fp16 on NPU, fp32 elsewhere.
"""
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]


class UserError(ValueError):
    """A problem the user can fix (bad path, bad flag, bad data): printed as one message, exit code 2.

    A ValueError subclass, so callers that validated input with `except ValueError` keep working; `user_errors`
    catches this class (and missing or unreadable files) only, so a programming error still shows its traceback.
    """


def repo_path(path) -> Path:
    """Relative paths count from the repository root, whatever the current directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


def display_path(path: Path) -> str:
    """A path relative to the repository root when it is inside it (what the user types), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def npu_available() -> bool:
    """True when torch_npu imports and at least one Ascend device is visible."""
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch, "npu") and torch.npu.is_available() and torch.npu.device_count() > 0


def detect_device_type(requested: Optional[str] = None) -> str:
    """'npu', 'cuda', 'mps' or 'cpu' (in that order of preference), or the type of `--device` when given."""
    if requested:
        kind = requested.split(":")[0]
        if kind == "npu" and not npu_available():
            raise UserError(f"--device {requested}: no Ascend NPU found (torch_npu missing or no device visible)")
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {requested}: CUDA is not available in this PyTorch build / machine")
        if kind not in ("npu", "cuda", "mps", "cpu"):
            raise UserError(f"--device {requested}: unknown device type (use npu, cuda, mps or cpu, e.g. cuda:0)")
        return kind
    if npu_available():
        return "npu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device_type: str) -> str:
    """bf16 on CUDA, fp16 (+GradScaler) on Ascend 910B where it is the fast path, fp32 elsewhere."""
    return {"cuda": "bfloat16", "npu": "float16"}.get(device_type, "float32")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Context:
    """Where this process runs: device, precision and its place in the distributed job."""
    device: torch.device
    dtype: torch.dtype
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def init_distributed_mode(device: Optional[str] = None, dtype: Optional[str] = None) -> Context:
    """Single process unless launched by torchrun; then hccl on NPU, nccl on CUDA, gloo on CPU.

    torchrun's RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT work unchanged across nodes.
    """
    kind = detect_device_type(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if kind in ("cuda", "npu"):
        index = local_rank if world_size > 1 or not device or ":" not in device else int(device.split(":")[1])
        dev = torch.device(f"{kind}:{index}")
        (torch.npu if kind == "npu" else torch.cuda).set_device(dev)
    else:
        dev = torch.device(kind)
    if world_size > 1 and not dist.is_initialized():
        backend = {"npu": "hccl", "cuda": "nccl"}.get(kind, "gloo")
        dist.init_process_group(backend=backend)
    dtype = dtype or default_dtype(kind)
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    return Context(device=dev, dtype=DTYPES[dtype], rank=rank, local_rank=local_rank, world_size=world_size)


@contextmanager
def user_errors():
    """Turn problems a user can fix into one clear message and exit code 2 (no traceback wall)."""
    try:
        yield
    except (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        if os.environ.get("MINIMIND_DEBUG") == "1":
            raise
        print(f"error: {e}\n(set MINIMIND_DEBUG=1 for the full traceback)", file=sys.stderr)
        sys.exit(2)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
