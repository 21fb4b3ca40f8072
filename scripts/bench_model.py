"""Model and generation benchmark: one JSON line per result, never a pass/fail test.

Measures, on the present device (or --device), for each --preset of model.model_minimind.PRESETS:
  * forward+backward training throughput (tokens/s) on synthetic tokens, MoE grouped GEMM vs loop;
  * decoding throughput of the shared Engine (CUDA graphs over the compiled step, graphs alone, eager) and of
    transformers' `model.generate()`;
  * correctness checks in the device's dtype: engine greedy == HF greedy, grouped MoE == looped MoE.

    python scripts/bench_model.py --preset small --device cuda
    python scripts/bench_model.py --preset small base --skip_train --decode_batches 1 16 64 --new_tokens 256

The measurements are in scripts/bench/model.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from scripts.bench.model import build_parser, run


def main(argv=None) -> None:
    run(build_parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    main()
