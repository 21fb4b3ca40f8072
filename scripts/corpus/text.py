"""Text helpers for the corpus builder: cleaning, script conversion, dedup keys, split, chunking.

Everything here is pure (no I/O) so tests can call it on hand-made strings.
"""
import hashlib
import re
import unicodedata

HELDOUT_PER_10K = 200  # 2% of documents are held out for evaluation
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Full-width digits and Latin letters (U+FF10..FF5A, e.g. pd1998's "１９９８"). Full-width
# punctuation such as "，" is left alone: NFKC would turn it into ASCII "," and damage Chinese text.
_FULLWIDTH_ALNUM = {c: c - 0xFEE0 for c in range(0xFF10, 0xFF5B) if chr(c - 0xFEE0).isalnum()}

_t2s = None


def to_simplified(text: str) -> str:
    """Convert traditional to simplified Chinese with OpenCC t2s (loaded once, ~0.1 s)."""
    global _t2s
    if _t2s is None:
        try:
            import opencc
        except ImportError:
            raise SystemExit("opencc is missing: pip install opencc==1.4.2 (needed for the Tang/Song poems)")
        _t2s = opencc.OpenCC("t2s")
    return _t2s.convert(text)


def to_simplified_many(texts: list) -> list:
    """Convert many strings in one OpenCC call: 10x faster than one call per poem line (2 M lines)."""
    flat = [t.replace("\n", " ") for t in texts]
    out = to_simplified("\n".join(flat)).split("\n")
    assert len(out) == len(flat), "OpenCC changed the number of lines"
    return out


def clean_text(text: str, english: bool = False) -> str:
    """Strip ANSI escapes and control characters, normalise width and whitespace.

    English text gets full NFKC (ligatures, odd spaces); Chinese text only has its full-width
    letters/digits folded, because NFKC would also fold the full-width punctuation.
    """
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CTRL.sub("", text)
    if english:
        text = unicodedata.normalize("NFKC", text)
    else:
        text = unicodedata.normalize("NFC", text).translate(_FULLWIDTH_ALNUM).replace("\u3000", " ")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def dedup_key(text: str) -> str:
    """Hash of the text with case, width and all whitespace removed: catches re-uploads that differ only in spacing."""
    norm = unicodedata.normalize("NFKC", text).lower()
    norm = re.sub(r"\s+", "", norm)
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


def dedup(docs, key=lambda d: d["text"]):
    """Keep the first document for each dedup key, preserving order."""
    seen, out = set(), []
    for d in docs:
        k = dedup_key(key(d))
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


def stable_hash(s: str) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per run)."""
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:8], "big")


def split_of(doc_id: str) -> str:
    """'heldout' for a fixed 2% of ids, else 'train'. Depends only on the id, so it never changes between runs."""
    return "heldout" if stable_hash("split:" + doc_id) % 10000 < HELDOUT_PER_10K else "train"


def fix_unmatched_quotes(text: str) -> str:
    """Repair chinese-xinhua's lost opening quotes ('《书》原文。”' -> '《书》“原文。”'); drop a stray '”' otherwise."""
    if text.count("”") <= text.count("“"):
        return text
    if "“" not in text and "》" in text and text.endswith("”") and text.count("”") == 1:
        i = text.index("》") + 1
        return text[:i] + "“" + text[i:]
    out, depth = [], 0
    for ch in text:
        if ch == "“":
            depth += 1
        elif ch == "”":
            if depth == 0:
                continue
            depth -= 1
        out.append(ch)
    return "".join(out)


# A sentence ends after Chinese or English terminal punctuation (keeping closing quotes with it).
_SENT_END = re.compile(r"(?<=[。！？；!?;…])[”’」』\"')）]*|(?<=[.])[\"')]*(?=\s)")


def split_sentences(paragraph: str) -> list:
    """Split one paragraph into sentences, keeping the punctuation and closing quotes on the left."""
    out, start = [], 0
    for m in _SENT_END.finditer(paragraph):
        end = m.end()
        if end > start:
            piece = paragraph[start:end]
            if piece.strip():
                out.append(piece)
            start = end
    if start < len(paragraph) and paragraph[start:].strip():
        out.append(paragraph[start:])
    return out


def _hard_split(unit: str, max_chars: int) -> list:
    """Split an over-long sentence at commas, else at max_chars."""
    parts = re.split(r"(?<=[，,、：:])", unit)
    out, cur = [], ""
    for p in parts:
        while len(p) > max_chars:
            if cur:
                out.append(cur)
                cur = ""
            out.append(p[:max_chars])
            p = p[max_chars:]
        if len(cur) + len(p) > max_chars and cur:
            out.append(cur)
            cur = ""
        cur += p
    if cur:
        out.append(cur)
    return out


def chunk_text(text: str, min_chars: int = 300, max_chars: int = 800) -> list:
    """Split a long document into chunks of about min..max chars at paragraph/sentence boundaries.

    800 chars is ~500 tokens of Chinese with a 6400 BPE (1.2-1.6 chars/token), enough for MiniMind's
    max_seq_len of 340-512 after truncation; 300 keeps chunks from being mostly padding.
    """
    if len(text) <= max_chars:
        return [text]
    units = []  # (text, starts_paragraph)
    for para in text.split("\n"):
        if not para.strip():
            continue
        first = True
        for sent in split_sentences(para):
            for piece in (_hard_split(sent, max_chars) if len(sent) > max_chars else [sent]):
                units.append((piece, first))
                first = False
    chunks, cur, cur_para = [], "", False
    for piece, new_para in units:
        joiner = "\n" if new_para else ""
        if cur and len(cur) + len(joiner) + len(piece) > max_chars:
            chunks.append(cur)
            cur = ""
        if not cur:
            cur, cur_para = piece.lstrip(), new_para
        else:
            cur += joiner + piece
    if cur:
        # A short tail is glued to the previous chunk when that stays within 1.25x max_chars.
        joiner = "\n" if cur_para else ""
        if chunks and len(cur) < min_chars and len(chunks[-1]) + len(cur) + 1 <= int(max_chars * 1.25):
            chunks[-1] = chunks[-1] + joiner + cur
        else:
            chunks.append(cur)
    return [c.strip() for c in chunks if c.strip()]
