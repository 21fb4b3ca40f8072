"""Build the token cache of a JSONL file ahead of training (what the first training run would do at start-up).

    python scripts/pretokenize.py --data_path dataset/pretrain_hq.jsonl --stage pretrain
    python scripts/pretokenize.py --data_path dataset/sft_mini_512.jsonl --stage sft --max_seq_len 340

Uses every core (--num_proc), prints a progress line (rows, tokens/s, ETA) and, at the end, one JSON line: the
cache folder, rows, tokens, size and build rate. Pretraining caches whole documents (one cache serves every
--max_seq_len and --packing); SFT caches rows cut to --max_seq_len, so pass the value you will train with. See
docs/data_en.md for where the cache lives and how to clear it.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import time

from dataset.lm_dataset import ChatFormat, ChatRows, PretrainRows
from dataset.token_cache import CACHE_DIR_HELP, cpu_cores, load_or_build, resolve_cache_dir
from model.checkpoint import TOKENIZER_DIR, load_tokenizer
from model.runtime import UserError, repo_path, user_errors

STAGES = {"pretrain": "pretrain", "sft": "sft", "full_sft": "sft"}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Tokenize a JSONL once into the token cache / 预先分词并写入缓存",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_path", required=True, help="the JSONL file you will train on")
    p.add_argument("--stage", default="pretrain", choices=sorted(STAGES),
                   help="row format: pretrain = {text}; sft / full_sft = {conversations}")
    p.add_argument("--max_seq_len", type=int, default=340, help="SFT only: tokens per row, as in training")
    p.add_argument("--tokenizer_path", default=None, help=f"tokenizer folder (default {TOKENIZER_DIR.name}/)")
    p.add_argument("--cache_dir", default=None, help=CACHE_DIR_HELP)
    p.add_argument("--num_proc", type=int, default=0, help="tokenizer processes (0 = every core)")
    p.add_argument("--skip_bad_lines", type=int, default=0, choices=[0, 1],
                   help="1 = skip and count malformed lines (the training run must pass the same)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    with user_errors():
        cache_dir = resolve_cache_dir(args.cache_dir)
        if cache_dir is None:
            raise UserError("--cache_dir none: nothing to build; give a folder")
        if args.max_seq_len < 2:
            raise UserError(f"--max_seq_len {args.max_seq_len}: must be at least 2")
        tokenizer = load_tokenizer(repo_path(args.tokenizer_path) if args.tokenizer_path else TOKENIZER_DIR)
        skip = bool(args.skip_bad_lines)
        if STAGES[args.stage] == "pretrain":
            rows = PretrainRows(tokenizer, skip)
        else:
            rows = ChatRows(ChatFormat(tokenizer, None), args.max_seq_len, skip)
        start = time.perf_counter()
        cache = load_or_build(repo_path(args.data_path), tokenizer, rows, cache_dir,
                              workers=args.num_proc or cpu_cores())
        built = cache.manifest["build"]
        size = sum(p.stat().st_size for p in cache.folder.iterdir())
        print(json.dumps({"cache": str(cache.folder), "rows": len(cache), "tokens": cache.n_tokens,
                          "mb": round(size / 1e6, 1), "skipped_lines": cache.skipped_lines,
                          "seconds": round(time.perf_counter() - start, 2),
                          "built_at": cache.manifest["created"], "build_tokens_per_s": built["tokens_per_s"],
                          "build_processes": built["processes"]}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
