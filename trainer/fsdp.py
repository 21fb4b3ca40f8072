"""`--fsdp 1`: FSDP2 (torch.distributed.fsdp.fully_shard) for the stages that train one model, and its checkpoints.

DDP keeps a full fp32 copy of the weights, gradients and both AdamW moments on every card: 16 bytes per parameter,
so a 4B-parameter model needs 64 GB before any activation. fully_shard splits all four across the N processes
(16/N bytes per parameter) and all-gathers one transformer block's weights just before it runs, freeing them after.

Layout: one FSDP group per MiniMindBlock, then the root (embeddings, final norm, lm_head). The root group holds
the tied embed_tokens / lm_head weight once, so the tie survives sharding (sharding lm_head on its own would split
one Parameter into two). Mixed precision follows the DDP path: weights are gathered in the autocast dtype (bf16 on
CUDA, fp16 on NPU) and gradients reduced in fp32 into fp32 shards; on CPU everything stays fp32. With
--use_compile each block is compiled before it is sharded (FSDP's hooks stay outside the compiled graphs).

Checkpoints: the periodic/final .pth + sidecar are gathered to rank 0 and written as today; the resume state is a
DCP folder (model/distributed_checkpoint.py) that resumes at another world size.
"""
from contextlib import contextmanager

import torch
import torch.distributed as dist

from model.distributed_checkpoint import (
    begin_save,
    dcp_folder,
    finish_save,
    model_meta,
    read_trainer_state,
    require_complete,
)
from model.runtime import UserError


def ensure_process_group(ctx) -> None:
    """fully_shard and DCP need a process group; one process (plain `python`, or torchrun with one) gets its own
    single-member group from an in-memory store, so `--fsdp 1` behaves the same at any world size."""
    if not dist.is_initialized():
        backend = {"npu": "hccl", "cuda": "nccl"}.get(ctx.device.type, "gloo")
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def mixed_precision(ctx):
    """Gather weights in the autocast dtype, reduce gradients in fp32 (None = fp32 throughout, the CPU case)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    param_dtype = None if ctx.dtype == torch.float32 else ctx.dtype
    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)


def shard_model(model, ctx, compile_options=None):
    """fully_shard every transformer block, then the root; the model is changed in place and returned.

    Call before the optimizer is built: sharding replaces each Parameter by a DTensor one.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    ensure_process_group(ctx)
    mesh = init_device_mesh(ctx.device.type, (dist.get_world_size(),))
    policy = mixed_precision(ctx)
    for block in model.model.layers:
        if compile_options is not None:
            block.compile(**compile_options)  # in place: the state_dict keys stay MiniMind's
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


@contextmanager
def gradient_sync(model, enabled: bool):
    """DDP's no_sync for FSDP2: skip the reduce-scatter on all but the last micro-batch of a group (gradients stay
    unsharded in between: one extra copy of the weights' size in the gathered dtype, traded for 1/accumulation of
    the gradient traffic)."""
    if enabled:
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def make_grad_scaler(ctx):
    """fp16 (NPU) needs a scaler whose inf/NaN check agrees across ranks: each rank sees only its gradient shard,
    and one rank skipping a step the others take would split the model. ShardedGradScaler all-reduces the check."""
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
    return ShardedGradScaler(ctx.device.type, enabled=ctx.dtype == torch.float16)


class GatheredModel:
    """The full state_dict of a sharded model on rank 0 plus its config: what save_weights / a stage's save_fn
    reads from a model (`.state_dict()`, `.config`), without a second full model in memory."""

    def __init__(self, state: dict, config):
        self._state, self.config = state, config

    def state_dict(self) -> dict:
        return self._state


def gather_full_state(model) -> dict:
    """Every rank takes part; rank 0 gets the full tensors on the CPU, the others an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_resume(trainer, trainer_state: dict) -> None:
    """Collective: every rank writes its shards of model + AdamW into `<resume>.dcp.tmp`, rank 0 adds the small
    files and the marker, then swaps the folder in (see model/distributed_checkpoint.py)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    folder = dcp_folder(trainer.ckpt_path)
    tmp = folder.with_name(folder.name + ".tmp")
    if trainer.ctx.is_main:
        begin_save(folder)
    dist.barrier()  # nobody writes before rank 0 has emptied the temp folder
    model_state, optim_state = get_state_dict(trainer.model, trainer.optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    if trainer.ctx.is_main:  # dcp.save returns on rank 0 after its metadata step has heard from every rank
        finish_save(tmp, folder, trainer_state, model_meta(trainer.model, trainer.args))
    dist.barrier()  # the next save's cleanup must not race this one's rename


def load_resume(trainer) -> dict:
    """Load model + AdamW from the DCP folder into this run's sharding (any world size); returns trainer.pth."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    folder = dcp_folder(trainer.ckpt_path)
    if not folder.exists() and not folder.with_name(folder.name + ".old").exists() and trainer.ckpt_path.is_file():
        raise UserError(f"--from_resume 1 --fsdp 1: {trainer.ckpt_path} was written without --fsdp (a DDP resume "
                        f"state); resume it without --fsdp, at any process count")
    folder = require_complete(folder)
    model_state, optim_state = get_state_dict(trainer.model, trainer.optimizer)  # also creates AdamW's state slots
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(trainer.model, trainer.optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    return {**read_trainer_state(folder), "path": folder}
