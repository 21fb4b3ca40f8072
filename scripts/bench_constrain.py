"""Constrained-decoding overhead: per-token time at batch 1 with and without a grammar, one JSON line per result.

    python scripts/bench_constrain.py --device cpu --preset small --threads 1       # CPU, 26M random weights
    python scripts/bench_constrain.py --device cuda --preset small                  # GPU: CUDA graphs on
    MINIMIND_DECODE=compile python scripts/bench_constrain.py --device cuda         # GPU: compiled decode step
    python scripts/bench_constrain.py --libraries --skip_decode                     # mask time per library

The measurements are in scripts/bench/constrain.py.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from scripts.bench.constrain import build_parser, run


def main(argv=None) -> None:
    run(build_parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    main()
