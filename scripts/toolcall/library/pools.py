"""Real values for the argument generators: the bundled dictionary and poems (the records that the corpus tool
dialogues in dataset/demo/tool_call_demo.jsonl returned), English questions from the bundled SFT set, and small
fixed lists (time zones, words, hosts). Read once, in file order, so the same seed gives the same values."""
import functools
import json

from model.runtime import UserError, repo_path

TOOL_DEMO = "dataset/demo/tool_call_demo.jsonl"
SFT_DEMO = "dataset/demo/sft_demo.jsonl"
IDENTITY_DEMO = "dataset/demo/lora_identity_demo.jsonl"

TIMEZONES = ["Asia/Shanghai", "Asia/Tokyo", "Asia/Seoul", "Asia/Singapore", "Asia/Kolkata", "Asia/Dubai",
             "Asia/Hong_Kong", "Asia/Taipei", "Europe/London", "Europe/Paris", "Europe/Berlin", "Europe/Moscow",
             "Europe/Madrid", "Europe/Rome", "America/New_York", "America/Chicago", "America/Denver",
             "America/Los_Angeles", "America/Sao_Paulo", "America/Toronto", "America/Mexico_City",
             "Australia/Sydney", "Pacific/Auckland", "Africa/Cairo", "Africa/Johannesburg", "UTC"]
EN_WORDS = ["apple", "banana", "orange", "python", "network", "garden", "window", "library", "mountain", "river",
            "keyboard", "monitor", "coffee", "teacher", "student", "history", "science", "music", "planet", "rocket",
            "kitchen", "bicycle", "weather", "holiday", "journey", "silver", "thunder", "whisper", "lantern",
            "harbor", "meadow", "puzzle", "quantum", "rhythm", "shadow", "tunnel", "velvet", "wizard", "yellow",
            "zebra", "level", "radar", "civic", "kayak", "noon", "racecar", "stats", "refer", "madam", "rotor"]
ZH_WORDS = ["人工智能", "机器学习", "春眠不觉晓", "天气预报", "中华人民共和国", "数据结构", "北京大学", "上海",
            "广州塔", "长江", "黄河", "计算机", "自然语言处理", "深度学习", "开源软件", "编程语言", "图书馆",
            "火车站", "电影院", "博物馆", "上海自来水来自海上", "山东落花生花落东山", "我爱中国", "你好世界"]
HOSTS = ["example.com", "docs.python.org", "minimind.dev", "api.github.com", "www.gutenberg.org", "pypi.org",
         "mirrors.tuna.tsinghua.edu.cn", "zh.wikipedia.org", "news.ycombinator.com", "localhost"]
PATH_WORDS = ["docs", "api", "v1", "users", "search", "images", "2024", "blog", "posts", "files", "data", "list"]
FILE_NAMES = ["report.pdf", "photo.jpg", "data.csv", "index.html", "main.py", "song.mp3", "movie.mp4",
              "archive.tar.gz", "notes.txt", "style.css", "app.js", "logo.png", "book.epub", "sheet.xlsx",
              "config.json", "slides.pptx", "font.woff2", "image.svg", "clip.wav", "doc.docx"]


def _read_jsonl(rel: str) -> list:
    path = repo_path(rel)
    if not path.is_file():
        raise UserError(f"{path}: missing; the tool library reads its dictionary, poems and questions from the "
                        f"bundled demo files: restore them with `git checkout dataset/demo`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.lru_cache(maxsize=None)
def corpus_records() -> dict:
    """{"idioms": {word: record}, "chars": {char: record}, "poems": [record]}: every non-empty result that the
    bundled corpus dialogues recorded for lookup_idiom, lookup_char and search_poem (real dictionary data)."""
    idioms, chars, poems, seen = {}, {}, [], set()
    for row in _read_jsonl(TOOL_DEMO):
        conv = row["conversations"]
        for i, m in enumerate(conv[:-1]):
            if m["role"] != "assistant" or "<tool_call>" not in m["content"] or conv[i + 1]["role"] != "tool":
                continue
            name = json.loads(m["content"].split("\n")[1])["name"]
            result = json.loads(conv[i + 1]["content"])
            if name == "lookup_idiom" and result:
                idioms.setdefault(result["word"], result)
            elif name == "lookup_char" and result:
                chars.setdefault(result["char"], result)
            elif name == "search_poem":
                for p in result:
                    key = (p["title"], p["author"])
                    if key not in seen:
                        seen.add(key)
                        poems.append(p)
    return {"idioms": idioms, "chars": chars, "poems": poems}


@functools.lru_cache(maxsize=None)
def english_questions() -> tuple:
    """Short English user questions of the bundled SFT set (real text for the string tools)."""
    out = []
    for row in _read_jsonl(SFT_DEMO):
        q = row["conversations"][0]["content"]
        if 12 <= len(q) <= 60 and q.isascii() and "\n" not in q:
            out.append(q)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def poem_lines() -> tuple:
    """Half-lines of the bundled poems ("床前明月光" style clauses), 4-9 characters."""
    out = []
    for p in corpus_records()["poems"]:
        for para in p["paragraphs"]:
            for clause in para.replace("。", "，").replace("？", "，").replace("！", "，").split("，"):
                if 4 <= len(clause) <= 9 and clause not in out:
                    out.append(clause)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def no_call_pairs() -> tuple:
    """(question, real answer) single-turn pairs of the bundled SFT and identity sets that no tool answers:
    English chat and identity questions (Chinese dictionary/poem questions are left out, a tool would fit)."""
    out = []
    for rel in (SFT_DEMO, IDENTITY_DEMO):
        for row in _read_jsonl(rel):
            conv = row.get("conversations", [])
            if len(conv) != 2 or conv[0]["role"] != "user" or conv[1]["role"] != "assistant":
                continue
            q, a = conv[0]["content"], conv[1]["content"]
            if (rel == IDENTITY_DEMO or q.isascii()) and len(q) + len(a) < 400:
                out.append((q, a))
    return tuple(out)


def text_en(r) -> str:
    return r.choice(english_questions())


def text_zh(r) -> str:
    return r.choice(poem_lines()) if r.random() < 0.6 else r.choice(ZH_WORDS)


def text_any(r) -> str:
    return text_en(r) if r.random() < 0.5 else text_zh(r)


def word(r) -> str:
    return r.choice(EN_WORDS)


def date(r, lo: int = 1950, hi: int = 2035) -> str:
    """An ISO date (YYYY-MM-DD) between lo and hi."""
    y, m = r.randint(lo, hi), r.randint(1, 12)
    return f"{y:04d}-{m:02d}-{r.randint(1, 28):02d}"


def datetime_text(r) -> str:
    return f"{date(r, 2000, 2030)} {r.randint(0, 23):02d}:{r.choice([0, 15, 30, 45]):02d}"


def ipv4(r) -> str:
    kind = r.random()
    if kind < 0.3:
        return f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if kind < 0.45:
        return f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    return f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"


def cidr(r) -> str:
    prefix = r.randint(8, 30)
    return f"{ipv4(r)}/{prefix}"


def url(r) -> str:
    path = "/".join(r.sample(PATH_WORDS, r.randint(1, 3)))
    query = "&".join(f"{k}={r.randint(1, 99)}" for k in r.sample(["page", "id", "q", "limit", "sort"],
                                                                 r.randint(0, 2)))
    return f"{r.choice(['https', 'http'])}://{r.choice(HOSTS)}/{path}" + (f"?{query}" if query else "")


def hex_color(r) -> str:
    return "#" + "".join(r.choice("0123456789abcdef") for _ in range(6))
