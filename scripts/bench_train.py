"""Training throughput of the MiniMind presets through the real training loop: one JSON line per preset.

Runs `trainer_utils.train` (the loop every stage uses: autocast, accumulation, clipping, AdamW, logging) on
synthetic tokens, so the number is what `train_pretrain.py --packing 1` would log, without data loading.
tokens/s is timed from after the first (warm-up / compile) optimizer step with the device synchronised; MFU is
printed where the device's peak FLOP/s is known (trainer_utils.PEAK_FLOPS), else null.

    python scripts/bench_train.py                                   # 26M, 104M, 145M-MoE on the detected device
    python scripts/bench_train.py --preset small --device cuda --batch_size 32 --seq_len 512 --use_compile 1
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from trainer.trainer_utils import (  # noqa: E402
    build_parser,
    causal_lm_loss,
    count_parameters,
    detect_device_type,
    init_distributed_mode,
    init_model,
    train,
    user_errors,
)

# name -> (hidden_size, num_hidden_layers, use_moe): MiniMind2-Small, MiniMind2, MiniMind2-MoE
PRESETS = {"small": (512, 8, 0), "base": (768, 16, 0), "moe": (640, 8, 1)}


class SyntheticTokens(Dataset):
    """Fixed random rows: (input_ids, labels) with every position labelled, like a packed pretraining row."""

    def __init__(self, rows: int, seq_len: int, vocab_size: int, seed: int = 0):
        self.data = torch.randint(3, vocab_size, (rows, seq_len), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], self.data[i]


def bench(preset: str, args, out_dir: str) -> dict:
    hidden, layers, moe = PRESETS[preset]
    steps = args.warmup_steps + args.steps
    targs = build_parser("bench").parse_args([
        "--hidden_size", str(hidden), "--num_hidden_layers", str(layers), "--use_moe", str(moe),
        "--batch_size", str(args.batch_size), "--max_seq_len", str(args.seq_len), "--max_steps", str(steps),
        "--accumulation_steps", "1", "--log_interval", str(steps), "--save_interval", str(10 ** 9),
        "--use_compile", str(args.use_compile), "--save_dir", out_dir, "--checkpoint_dir", out_dir,
        "--save_weight", f"bench_{preset}", *(["--device", args.device] if args.device else []),
        *(["--dtype", args.dtype] if args.dtype else [])])
    targs.data_path = "synthetic"
    ctx = init_distributed_mode(targs.device, targs.dtype)
    torch.manual_seed(0)
    model, _ = init_model(targs, ctx, log=lambda msg: None)
    data = SyntheticTokens(steps * args.batch_size, args.seq_len, model.config.vocab_size)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    trainer = train(targs, ctx, model, data, causal_lm_loss, log=lambda msg: None)
    row = {"bench": "train_step", "preset": preset, "params_m": round(count_parameters(model) / 1e6, 2),
           "device": str(ctx.device), "device_name": device_name(ctx.device),
           "dtype": str(ctx.dtype).replace("torch.", ""), "batch_size": args.batch_size, "seq_len": args.seq_len,
           "timed_steps": steps - 1, "compile": bool(args.use_compile and ctx.device.type == "cuda"),
           "tokens_per_s": round(trainer.throughput["tokens_per_s"], 1),
           "mfu_percent": None if trainer.throughput["mfu_percent"] is None
           else round(trainer.throughput["mfu_percent"], 2)}
    if ctx.device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30, 2)
    return row


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "npu":
        return torch.npu.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["small", "base", "moe"],
                   help="small = 26M (512/8), base = 104M (768/16), moe = 145M MoE (640/8)")
    p.add_argument("--device", default=None, help="npu / cuda / mps / cpu; default: auto-detect")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: the trainers' default for the device (bf16 CUDA, fp16 NPU, fp32 CPU)")
    p.add_argument("--batch_size", type=int, default=None, help="sequences per step (default 16 on GPU/NPU, 4 on CPU)")
    p.add_argument("--seq_len", type=int, default=None, help="tokens per sequence (default 512 on GPU/NPU, 256 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 20 on GPU/NPU, 3 on CPU)")
    p.add_argument("--warmup_steps", type=int, default=1, help="untimed steps before timing (the first is always)")
    p.add_argument("--use_compile", type=int, default=0, choices=[0, 1], help="torch.compile (CUDA only)")
    args = p.parse_args(argv)
    with user_errors():
        accelerated = detect_device_type(args.device) in ("cuda", "npu")
        args.batch_size = args.batch_size or (16 if accelerated else 4)
        args.seq_len = args.seq_len or (512 if accelerated else 256)
        args.steps = args.steps or (20 if accelerated else 3)
        with tempfile.TemporaryDirectory() as out_dir:  # the loop's final save goes here and is thrown away
            for preset in args.preset:
                print(json.dumps(bench(preset, args, out_dir)), flush=True)


if __name__ == "__main__":
    main()
