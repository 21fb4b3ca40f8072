"""Data benchmark: one JSON line per result (issue 28). The work lives in scripts/bench/data.py.

    python scripts/bench_data.py                      # 1 GB synthesized corpus (about 10 CPU-minutes to tokenize)
    python scripts/bench_data.py --size_mb 200 --out docs/reference_run/bench/session6/data_200mb.jsonl

Lines, in order: corpus, index (offset index time), build_single_process (one process on the corpus's first
--single_mb MB), first_build (the cold cache built by `torchrun --nproc_per_node 2 train_pretrain.py --packing 1`,
one rank building with every core) with first_step_cold_torchrun (time to the first optimizer step, builders,
peak RSS per rank), first_step_warm (one process, warm cache), first_step_warm_torchrun (peak RSS per rank, growth
over the same run on the 3.5 MB demo file), loader (tokens/s per DataLoader worker from the cache), targets, and an
extrapolation to MiniMind's 1.6 GB pretrain_hq.jsonl. Every line carries the machine's load (`load_1m`).
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import shutil
from pathlib import Path

from scripts.bench import data as bench


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size_mb", type=float, default=1024, help="synthesized corpus size in MB")
    p.add_argument("--single_mb", type=float, default=16, help="MB tokenized by one process for its rate")
    p.add_argument("--work_dir", default="/tmp/minimind_bench_data", help="corpus, caches and run outputs")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    results = {}

    def emit(row):
        results.setdefault(row["bench"], row) if row["bench"] != "loader" else \
            results.setdefault("loader", []).append(row)
        line = json.dumps(row, ensure_ascii=False)
        print(line, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    corpus = work / f"corpus_{args.size_mb:g}mb.jsonl"
    emit(bench.synthesize(corpus, args.size_mb))
    emit(bench.bench_index(corpus))
    shutil.rmtree(work / "cache_single", ignore_errors=True)
    emit(bench.bench_single_process(corpus, work, args.single_mb))
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # cold: nothing built yet
    cold = bench.bench_first_step(corpus, work, cache, 2, "first_step_cold_torchrun")
    built = next(iter(bench.load_cache(corpus, cache)))
    emit(bench.build_stats(built, "first_build", corpus_mb=round(corpus.stat().st_size / 1e6, 1),
                           speedup_vs_single_process=round(built.manifest["build"]["tokens_per_s"] /
                                                           results["build_single_process"]["tokens_per_s"], 2)))
    emit(cold)
    emit(bench.bench_first_step(corpus, work, cache, 1, "first_step_warm"))
    baseline = bench.bench_first_step(bench.DEMO, work, work / "cache_demo", 2, "baseline_demo_torchrun")
    baseline = bench.bench_first_step(bench.DEMO, work, work / "cache_demo", 2, "baseline_demo_torchrun")  # warm
    emit(baseline)
    emit(bench.bench_first_step(corpus, work, cache, 2, "first_step_warm_torchrun",
                                baseline_rss=baseline["peak_rss_mb_per_rank"]))
    for row in bench.bench_loader(corpus, cache):
        emit(row)
    emit(bench.summary(results))
    emit(bench.extrapolate(results["first_build"], corpus.stat().st_size / 1e6, built.n_tokens))


if __name__ == "__main__":
    main()
