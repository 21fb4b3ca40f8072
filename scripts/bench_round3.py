"""GPU speed round 3 (issue 30): the measurements behind scripts/gpu_round3.sh, one JSON line per result.

    python scripts/bench_round3.py decode --preset small --label cold     # default decode path, this process
    python scripts/bench_round3.py step --upstream bench_baseline/minimind-349e74e
    python scripts/bench_round3.py serve --work /tmp/serve --presets small base
    python scripts/bench_round3.py --cpu_smoke decode --preset small --background_on_cpu

The measurements are in scripts/bench/round3.py; `bash scripts/gpu_round3.sh --cpu_smoke` runs every section on a
CPU at tiny sizes.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
from scripts.bench.round3 import build_parser, run


def main(argv=None) -> None:
    run(build_parser(__doc__).parse_args(argv))


if __name__ == "__main__":
    main()
