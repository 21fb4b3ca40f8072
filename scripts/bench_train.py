"""Training throughput through the real training loop, one JSON line per measurement.

Modes:
- default: each preset (model.model_minimind.PRESETS) on synthetic tokens through `trainer_utils.train`
  (autocast, accumulation, clipping, AdamW, logging), with the batch / sequence / compile you give.
- `--compare-defaults`: each preset at MiniMind's flags (32 x 8 x 340, eager), at this repo's defaults for the
  device and at the best settings (compiled, full 512-token rows, batch 128, no accumulation); with MFU, peak
  memory and recompiles after warm-up.
- `--e2e pretrain|full_sft`: the stage script itself (real data, loader workers, saves) with its defaults plus the
  flags after `--`; steady tokens/s from its own log lines, the wall-clock average, the recompiles.

    python scripts/bench_train.py                                   # 26M, 104M, 145M-MoE on the detected device
    python scripts/bench_train.py --compare-defaults --measure_peak
    python scripts/bench_train.py --e2e pretrain -- --epochs 8 --log_interval 10

tokens/s is timed after the first (warm-up / compile) optimizer step with the device synchronised. The
measurements are in scripts/bench/train.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import sys

from model.runtime import user_errors
from scripts.bench.train import build_parser, run


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    # everything after `--` goes to the stage script of --e2e, untouched by this parser
    stage_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser(__doc__).parse_args(argv)
    with user_errors():
        run(args, stage_flags)


if __name__ == "__main__":
    main()
