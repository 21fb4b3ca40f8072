"""Dictionary and poetry tools over the bundled records (pools.corpus_records(): the idiom, character and poem
entries that the corpus dialogues returned). The lookups are real searches of that data: an entry that is not
there gives the empty result the corpus tools give ({} or [])."""
from scripts.toolcall.library import pools
from scripts.toolcall.library.base import Family, I, S, opt


def idioms() -> dict:
    return pools.corpus_records()["idioms"]


def chars() -> dict:
    return pools.corpus_records()["chars"]


def poems() -> list:
    return pools.corpus_records()["poems"]


def clauses(poem) -> list:
    text = "".join(poem["paragraphs"])
    for mark in "。？！；":
        text = text.replace(mark, "，")
    return [c for c in text.split("，") if c]


IDIOM = S(lambda r: r.choice(sorted(idioms())), "成语", "a Chinese idiom")
CHAR = S(lambda r: r.choice(sorted(chars())), "一个汉字", "one Chinese character")
LINE = S(lambda r: r.choice(pools.poem_lines()), "一句诗", "a line of a poem")
TITLE = S(lambda r: r.choice(poems())["title"], "诗题", "poem title")
AUTHOR = S(lambda r: r.choice(poems())["author"], "诗人", "poet")


def lookup_idiom(word):
    e = idioms().get(word)
    return {"word": e["word"], "pinyin": e["pinyin"], "explanation": e["explanation"][:80]} if e else {}


def lookup_char(char):
    e = chars().get(char)
    return {"char": e["char"], "pinyin": e["pinyin"], "radical": e["radical"], "strokes": e["strokes"],
            "meaning": e["meanings"][0][:60] if e["meanings"] else ""} if e else {}


def search_poem(query):
    found = [p for p in poems() if query in p["title"] or any(query in para for para in p["paragraphs"])][:3]
    return [{"title": p["title"], "author": p["author"], "dynasty": p["dynasty"], "paragraphs": p["paragraphs"][:4]}
            for p in found]


def next_line(line):
    for p in poems():
        cs = clauses(p)
        if line in cs[:-1]:
            return {"line": line, "next": cs[cs.index(line) + 1], "title": p["title"], "author": p["author"]}
    return {}


def poems_by_author(author, limit=5):
    return [p["title"] for p in poems() if p["author"] == author][:limit]


def poem_author(title):
    for p in poems():
        if p["title"] == title:
            return {"title": title, "author": p["author"], "dynasty": p["dynasty"]}
    return {}


def idioms_with_char(char, limit=5):
    return [w for w in sorted(idioms()) if char in w][:limit]


def idioms_starting_with(char, limit=5):
    return [w for w in sorted(idioms()) if w.startswith(char)][:limit]


def poem_line_count(title):
    for p in poems():
        if p["title"] == title:
            return {"title": title, "lines": len(clauses(p)), "characters": sum(len(c) for c in clauses(p))}
    return {}


DICT = Family("dictionary")
DICT.add("lookup_idiom", lookup_idiom, "查询成语词典，返回拼音和释义；查不到时返回空对象",
         "Look up a Chinese idiom: pinyin and meaning ({} when not found)", {"word": IDIOM},
         ["成语“{word}”是什么意思？", "帮我查一下{word}这个成语"], ["What does the Chinese idiom {word} mean?",
                                                   "Look up the idiom {word}."],
         "「{r[word]}」（{r[pinyin]}）：{r[explanation]}", "{r[word]} ({r[pinyin]}): {r[explanation]}")
DICT.add("lookup_char", lookup_char, "查询汉字字典，返回拼音、部首、笔画数和释义；查不到时返回空对象",
         "Look up a Chinese character: pinyin, radical, strokes, meaning ({} when not found)", {"char": CHAR},
         ["“{char}”字怎么读，什么意思？", "查一下汉字{char}"], ["How is the character {char} read and what does it mean?"],
         "“{r[char]}”读 {r[pinyin]}，部首{r[radical]}，{r[strokes]} 画，意思：{r[meaning]}",
         "{r[char]} is read {r[pinyin]}, radical {r[radical]}, {r[strokes]} strokes: {r[meaning]}")
DICT.add("idioms_with_char", idioms_with_char, "在成语词典中找包含某个字的成语（最多 limit 个）",
         "Idioms of the dictionary that contain a character (at most limit)",
         {"char": S(lambda r: r.choice(r.choice(sorted(idioms()))), "一个汉字", "one Chinese character"),
          "limit": opt(I(1, 5, "最多返回几个", "most results"), 5)},
         ["有哪些带“{char}”字的成语？", "找 {limit} 个含“{char}”的成语"], ["Which idioms contain {char}?",
                                                            "Give me {limit} idioms with {char}."],
         "包含“{char}”的成语有：{r}", "Idioms with {char}: {r}")
DICT.add("idioms_starting_with", idioms_starting_with, "找以某个字开头的成语（成语接龙用）",
         "Idioms that begin with a character (for idiom chains)",
         {"char": S(lambda r: r.choice(sorted(idioms()))[0], "开头的字", "first character"),
          "limit": opt(I(1, 5, "最多返回几个", "most results"), 5)},
         ["以“{char}”开头的成语有哪些？", "成语接龙：接“{char}”字"], ["Which idioms start with {char}?"],
         "以“{char}”开头的有：{r}", "Idioms starting with {char}: {r}")
POETRY = Family("poetry")
POETRY.add("search_poem", search_poem, "按诗句或标题检索古诗词，返回最多 3 首匹配的诗；没有匹配时返回空列表",
           "Search classical poems by a line or title (up to 3 matches; [] when none)", {"query": LINE},
           ["“{query}”出自哪首诗？", "帮我搜一下含“{query}”的古诗"], ["Which poem has the line {query}?", "Search poems for {query}."],
           lambda args, r: "出自" + "；".join(f"{p['dynasty']}·{p['author']}《{p['title']}》" for p in r) + "。",
           lambda args,
           r: "It comes from " + "; ".join(f"{p['title']} by {p['author']} ({p['dynasty']})" for p in r) + ".")
POETRY.add("poem_next_line", next_line, "给出诗句的下一句（在收录的诗里查找）", "The line that follows a given line of a poem",
           {"line": S(lambda r: r.choice(clauses(r.choice([p for p in poems() if len(clauses(p)) > 1]))[:-1]),
                      "一句诗", "a line of a poem")},
           ["“{line}”的下一句是什么？", "{line}，下一句？"], ["What line comes after {line}?"],
           "下一句是“{r[next]}”，出自{r[author]}的《{r[title]}》。", "The next line is {r[next]} ({r[author]}, {r[title]}).")
POETRY.add("poems_by_author", poems_by_author, "列出收录的某位诗人的诗题（最多 limit 首）", "Titles of poems by a poet (at most limit)",
           {"author": AUTHOR, "limit": opt(I(1, 5, "最多几首", "most titles"), 5)},
           ["{author}写过哪些诗？", "列出{author}的 {limit} 首诗"], ["Which poems did {author} write?",
                                                          "List {limit} poems by {author}."],
           "{author}的诗有：{r}", "Poems by {author}: {r}")
POETRY.add("poem_author", poem_author, "查询诗的作者和朝代", "Author and dynasty of a poem by its title", {"title": TITLE},
           ["《{title}》是谁写的？"], ["Who wrote the poem {title}?"], "《{title}》是{r[dynasty]}代{r[author]}写的。",
           "{title} was written by {r[author]} ({r[dynasty]} dynasty).")
POETRY.add("poem_line_count", poem_line_count, "统计一首诗的句数和字数", "Number of lines and characters of a poem",
           {"title": TITLE}, ["《{title}》有几句、多少字？"], ["How many lines and characters does {title} have?"],
           "《{title}》共 {r[lines]} 句，{r[characters]} 字。", "{title} has {r[lines]} lines and {r[characters]} characters.")

FAMILIES = [DICT, POETRY]
