"""Resume states written by torch.distributed.checkpoint (DCP): sharded, atomic, readable at any world size.

An `--fsdp 1` run keeps its resume state as a folder next to where the .pth one would be:

    checkpoints/{stage}_{hidden}[_moe]_resume.dcp/
        .metadata, __{rank}_0.distcp   every rank's shards of the model and AdamW state (DCP's own files)
        trainer.pth                    step, epoch, data position, RNG, GradScaler, run id (rank 0)
        meta.json                      model config + training arguments (what the .pth sidecar holds)
        COMPLETE                       written last: a folder without it is never resumed from

DCP stores every tensor with its global shape and each shard's offsets, so a run saved by 8 processes resumes on
2 (or 1): each process reads the slices its own sharding needs. A save goes to `<folder>.tmp`, gets its marker,
then replaces the old folder by two renames (old -> `<folder>.old`, tmp -> folder); a kill at any point leaves
either the previous complete folder or the new one, and `find_complete` picks whichever carries the marker.

`dcp_to_pth` turns such a folder into the usual half-precision `out/{stage}_{hidden}.pth` + `.json` sidecar, so
eval_llm.py, the server and the converters need not know DCP exists (scripts/dcp_to_pth.py is its command line).
"""
import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import SIDECAR_CONFIG_KEYS, jsonable, save_weights
from .model_minimind import MiniMindConfig, MiniMindForCausalLM
from .runtime import UserError, display_path

MARKER = "COMPLETE"


def dcp_folder(resume_pth: Path) -> Path:
    """checkpoints/x_resume.pth -> checkpoints/x_resume.dcp (the sharded resume state of the same run)."""
    return Path(resume_pth).with_suffix(".dcp")


def _fsync_dir(folder: Path) -> None:
    """Make the renames/creations inside `folder` durable (a power cut after return keeps them)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds (Windows) keep the rename semantics anyway
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def begin_save(folder: Path) -> Path:
    """Rank 0, before the collective write: an empty `<folder>.tmp` (a killed save's leftovers are removed)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def finish_save(tmp: Path, folder: Path, trainer_state: dict, meta: dict) -> None:
    """Rank 0, after every rank's shards are in `tmp`: the small files, the marker last, then the swap."""
    import io
    buf = io.BytesIO()
    torch.save(trainer_state, buf)
    _write_synced(tmp / "trainer.pth", buf.getvalue())
    _write_synced(tmp / "meta.json", json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8"))
    _write_synced(tmp / MARKER, b"ok\n")
    _fsync_dir(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)  # directories cannot be replaced in one rename when the target is not empty
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def find_complete(folder: Path) -> Optional[Path]:
    """The folder to resume from: `folder` with its marker, else `<folder>.old` with its marker (a kill between
    the two renames of a save), else None. `.tmp` is never used: its marker may be missing or the swap unfinished."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / MARKER).is_file():
            return candidate
    return None


def require_complete(folder: Path) -> Path:
    found = find_complete(folder)
    if found is None:
        if folder.is_dir():
            raise UserError(f"{display_path(folder)} has no {MARKER} marker: its save was interrupted and it cannot "
                            f"be resumed from; delete it and start without --from_resume")
        raise UserError(f"--from_resume 1 --fsdp 1 but no resume folder at {display_path(folder)}; "
                        f"run once without --from_resume first")
    return found


def read_trainer_state(folder: Path) -> dict:
    # plain data only (rng_state stores numpy's key array as a list, args are filtered to JSON values), so the
    # safe loader applies: a folder copied in from elsewhere cannot run code
    return torch.load(folder / "trainer.pth", map_location="cpu", weights_only=True)


def model_meta(model, args) -> dict:
    """What the .pth sidecar records, kept in the folder so conversion needs no flags."""
    return {"model_config": {k: getattr(model.config, k) for k in SIDECAR_CONFIG_KEYS},
            "train_args": {k: v for k, v in vars(args).items() if jsonable(v)}}


def load_plain_model(folder: Path) -> tuple:
    """(MiniMindForCausalLM in fp32 on CPU with the folder's weights, training args) in this one process.

    DCP reads without a process group here: the global tensors are assembled from every rank's shard files.
    """
    import torch.distributed.checkpoint as dcp
    folder = require_complete(Path(folder))
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    model = MiniMindForCausalLM(MiniMindConfig(**meta["model_config"]))
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(folder))
    model.load_state_dict(state["model"])
    return model, meta["train_args"]


def dcp_to_pth(folder: Path, out: Path) -> Path:
    """Write the model of a DCP resume folder as `out` (.pth, fp16, MiniMind2 layout) + its `.json` sidecar."""
    model, train_args = load_plain_model(folder)
    save_weights(model, Path(out), argparse.Namespace(**train_args))
    return Path(out)
