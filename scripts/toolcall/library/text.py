"""Text tools: string operations, Unicode character data (unicodedata), fuzzy matching (difflib), wrapping
(textwrap), regular expressions, encodings and hashes (base64, hashlib, zlib, html, idna, codecs) and Chinese
script conversion (OpenCC). Arguments come from real text: questions of the bundled SFT set and poem lines."""
import base64
import codecs
import collections
import difflib
import hashlib
import html
import os.path
import re
import string
import textwrap
import unicodedata
import urllib.parse
import uuid
import zlib

from scripts.toolcall.library import pools
from scripts.toolcall.library.base import E, Family, I, L, Param, S, opt

TEXT = S(pools.text_any, "文本", "the text")
EN_TEXT = S(pools.text_en, "英文文本", "English text")

# ------------------------------------------------------------------------------------------------ strings
STRINGS = Family("strings")
STRINGS.add("reverse_text", lambda text: text[::-1], "把文本按字符倒序", "Reverse a text character by character",
            {"text": TEXT}, ["把“{text}”倒过来写。", "倒序输出：{text}"], ["Reverse the text: {text}",
                                                                "Write '{text}' backwards."],
            "倒过来是：{r}", "Reversed: {r}")
STRINGS.add("count_characters", lambda text: {"characters": len(text), "without_spaces": len(text.replace(" ", ""))},
            "统计文本的字符数（含空格与不含空格）", "Count characters of a text, with and without spaces", {"text": TEXT},
            ["“{text}”有多少个字符？"], ["How many characters are in '{text}'?"],
            "共 {r[characters]} 个字符，不含空格 {r[without_spaces]} 个。",
            "It has {r[characters]} characters ({r[without_spaces]} without spaces).")
STRINGS.add("count_words", lambda text: len(text.split()), "按空白切分统计英文单词数", "Number of whitespace-separated words",
            {"text": EN_TEXT}, ["这句英文有几个单词：{text}"], ["How many words are in: {text}"], "共有 {r} 个单词。",
            "There are {r} words.")
STRINGS.add("to_uppercase", lambda text: text.upper(), "把英文字母转成大写", "Convert text to upper case", {"text": EN_TEXT},
            ["把这句话转成大写：{text}"], ["Make this upper case: {text}"], "大写形式：{r}", "Upper case: {r}")
STRINGS.add("to_lowercase", lambda text: text.lower(), "把英文字母转成小写", "Convert text to lower case", {"text": EN_TEXT},
            ["把“{text}”全部改成小写。"], ["Lowercase this: {text}"], "小写形式：{r}", "Lower case: {r}")
STRINGS.add("title_case", lambda text: string.capwords(text), "把每个英文单词首字母大写", "Capitalise every word (string.capwords)",
            {"text": EN_TEXT}, ["把每个单词首字母大写：{text}"], ["Capitalise each word of: {text}"], "结果：{r}",
            "Result: {r}")
STRINGS.add("swap_case", lambda text: text.swapcase(), "英文字母大小写互换", "Swap upper and lower case letters",
            {"text": EN_TEXT},
            ["把“{text}”的大小写反过来。"], ["Swap the case of: {text}"], "结果：{r}", "Result: {r}")
STRINGS.add("count_substring", lambda text, sub: text.count(sub), "统计子串在文本中不重叠出现的次数",
            "How many times a substring occurs in a text (non-overlapping)",
            {"text": EN_TEXT, "sub": S(lambda r: r.choice(["e", "a", "o", "th", "in", "s", " ", "t", "is"]), "子串",
                                       "the substring")},
            ["“{sub}”在“{text}”里出现了几次？"], ["How often does '{sub}' occur in '{text}'?"], "出现了 {r} 次。",
            "It occurs {r} times.", check=lambda x: x["sub"] in x["text"])
STRINGS.add("replace_text", lambda text, old, new: text.replace(old, new), "把文本中所有的 old 替换为 new",
            "Replace every occurrence of old with new",
            {"text": EN_TEXT, "old": S(lambda r: r.choice(["a", "e", "the", "is", "I", "you", "to"]), "要替换的内容",
                                       "text to replace"),
             "new": S(lambda r: r.choice(["X", "_", "THE", "##", "*"]), "替换成的内容", "replacement")},
            ["把“{text}”里的“{old}”都换成“{new}”。"], ["In '{text}', replace '{old}' with '{new}'."], "替换后：{r}",
            "Result: {r}", check=lambda x: x["old"] in x["text"])
STRINGS.add("is_palindrome",
            lambda text: (lambda s: s == s[::-1])([c.lower() for c in text if c.isalnum()]),
            "判断文本是否回文（忽略大小写、空格和标点）", "Whether a text is a palindrome (ignoring case, spaces, punctuation)",
            {"text": S(lambda r: r.choice(pools.EN_WORDS + pools.ZH_WORDS), "文本", "the text")},
            ["“{text}”是回文吗？"], ["Is '{text}' a palindrome?"], "“{text}”是回文吗？{r}。", "Is '{text}' a palindrome? {r}.")
STRINGS.add("char_frequency",
            lambda text, top=3: dict(collections.Counter(c for c in text if not c.isspace()).most_common(top)),
            "统计文本中出现最多的字符及次数", "The most frequent characters of a text with their counts",
            {"text": TEXT, "top": opt(I(1, 5, "返回前几个", "how many to return"), 3)},
            ["“{text}”里出现最多的 {top} 个字符是什么？", "统计一下“{text}”里哪个字最多"],
            ["Top {top} most frequent characters in '{text}'?", "Which characters occur most in '{text}'?"],
            "出现最多的是：{r}", "Most frequent: {r}")
STRINGS.add("slugify",
            lambda text: re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-"), "把英文标题变成 URL 友好的 slug（小写、连字符）",
            "Make a URL slug from a title: lower case words joined by hyphens", {"text": EN_TEXT},
            ["把“{text}”转成 URL slug。"], ["Turn '{text}' into a URL slug."], "slug 是：{r}", "The slug is: {r}")
STRINGS.add("snake_to_camel", lambda name: name.split("_")[0] + "".join(w.title() for w in name.split("_")[1:]),
            "把 snake_case 名字转成 camelCase", "Convert a snake_case name to camelCase",
            {"name": S(lambda r: "_".join(r.sample(pools.EN_WORDS, r.randint(2, 3))), "snake_case 名字",
                       "snake_case name")},
            ["把变量名 {name} 改成驼峰命名。"], ["Convert {name} to camelCase."], "驼峰形式：{r}", "camelCase: {r}")
STRINGS.add("camel_to_snake", lambda name: re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(),
            "把 CamelCase / camelCase 名字转成 snake_case", "Convert a CamelCase or camelCase name to snake_case",
            {"name": S(lambda r: "".join(w.title() for w in r.sample(pools.EN_WORDS, r.randint(2, 3))), "驼峰名字",
                       "CamelCase name")},
            ["把 {name} 转成下划线命名。"], ["Convert {name} to snake_case."], "下划线形式：{r}", "snake_case: {r}")
STRINGS.add("remove_punctuation", lambda text: "".join(c for c in text if not unicodedata.category(c).startswith("P")),
            "删除文本中的所有标点符号（Unicode P 类）", "Remove every punctuation character (Unicode category P)",
            {"text": TEXT}, ["去掉“{text}”里的标点。"], ["Strip the punctuation from: {text}"], "去掉标点后：{r}",
            "Without punctuation: {r}")
STRINGS.add("caesar_cipher",
            lambda text, shift: "".join(chr((ord(c) - b + shift) % 26 + b) if c.isascii() and c.isalpha() else c
                                        for c in text for b in [ord("a") if c.islower() else ord("A")]),
            "凯撒密码：把英文字母按字母表移动 shift 位", "Caesar cipher: shift each English letter by shift places",
            {"text": EN_TEXT, "shift": I(1, 25, "移动位数", "shift")}, ["用凯撒密码把“{text}”移 {shift} 位。"],
            ["Encode '{text}' with a Caesar shift of {shift}."], "加密结果：{r}", "Encoded: {r}")
STRINGS.add("rot13", lambda text: codecs.encode(text, "rot13"), "ROT13 编码（再编码一次即还原）",
            "ROT13-encode a text (applying it twice gives the text back)", {"text": EN_TEXT},
            ["对“{text}”做 ROT13。"], ["ROT13 this: {text}"], "ROT13 结果：{r}", "ROT13: {r}")

# ------------------------------------------------------------------------------------------------ unicode
UNICODE = Family("unicode")
CHARS = S(lambda r: r.choice("αβπΩ€£¥©®™½¾→←✓★☆♪☀☃♥中文字汉马鱼龙AZaz09@#&%ⅣⅫ①⑤㈠Ａｚ０"), "一个字符", "one character")
UNICODE.add("unicode_name", lambda char: unicodedata.name(char), "查询字符的 Unicode 名称",
            "Official Unicode name of a character",
            {"char": CHARS}, ["字符“{char}”的 Unicode 名称是什么？"], ["What is the Unicode name of '{char}'?"],
            "“{char}”的 Unicode 名称是 {r}。", "The Unicode name of '{char}' is {r}.")
UNICODE.add("char_from_unicode_name", lambda name: unicodedata.lookup(name), "根据 Unicode 名称查字符",
            "Character with a given Unicode name",
            {"name": S(lambda r: unicodedata.name(r.choice("αβπΩ€£¥©®™½→←✓★♪☀☃♥ⅣⅫ①⑤")), "Unicode 名称", "Unicode name")},
            ["Unicode 名称为 {name} 的字符是哪个？"], ["Which character is named {name}?"], "是“{r}”。", "It is '{r}'.")
UNICODE.add("code_point", lambda char: {"decimal": ord(char), "hex": f"U+{ord(char):04X}"}, "字符的 Unicode 码位",
            "Unicode code point of a character", {"char": CHARS}, ["“{char}”的码位是多少？"],
            ["What is the code point of '{char}'?"], "“{char}”是 {r[hex]}（十进制 {r[decimal]}）。",
            "'{char}' is {r[hex]} (decimal {r[decimal]}).")
UNICODE.add("char_from_code_point", lambda code_point: chr(int(code_point.removeprefix("U+"), 16)),
            "根据十六进制码位（如 U+4E2D）得到字符", "Character of a hexadecimal code point such as U+4E2D",
            {"code_point": S(lambda r: f"U+{ord(r.choice('中国汉字龙凤αβΩ€☀♥✓★'+chr(r.randint(0x4E00, 0x9FA5)))):04X}",
                             "码位", "code point")},
            ["{code_point} 是哪个字符？"], ["Which character is {code_point}?"], "{code_point} 是“{r}”。",
            "{code_point} is '{r}'.")
UNICODE.add("unicode_category", lambda char: unicodedata.category(char), "字符的 Unicode 类别（如 Lu、Nd、Po）",
            "Unicode general category of a character (e.g. Lu, Nd, Po)", {"char": CHARS},
            ["“{char}”属于哪个 Unicode 类别？"], ["What Unicode category is '{char}'?"], "类别是 {r}。", "Its category is {r}.")
UNICODE.add("normalize_unicode", lambda text, form="NFKC": unicodedata.normalize(form, text),
            "Unicode 规范化（NFC/NFD/NFKC/NFKD），可把全角字母数字变成半角", "Unicode normalisation (NFC, NFD, NFKC, NFKD)",
            {"text": S(lambda r: r.choice(["ＡＢＣ１２３", "ｈｅｌｌｏ　ｗｏｒｌｄ", "①②③", "ﬁle", "Ⅻ点", "２０２４年", "㈠㈡"]),
                       "文本", "text"),
             "form": opt(E(["NFC", "NFD", "NFKC", "NFKD"], "规范化形式", "normal form"), "NFKC")},
            ["把“{text}”做 {form} 规范化。", "把“{text}”转成半角。"], ["Apply {form} to '{text}'.", "Normalise '{text}'."],
            "规范化结果：{r}", "Normalised: {r}")
UNICODE.add("numeric_value", lambda char: unicodedata.numeric(char), "字符代表的数值（如 五、⑤、Ⅻ、½）",
            "Numeric value of a character (e.g. 五, ⑤, Ⅻ, ½)",
            {"char": S(lambda r: r.choice("一二三四五六七八九十百千万亿⑤⑩ⅣⅫ½¾٣"), "一个字符", "one character")},
            ["“{char}”代表的数值是多少？"], ["What number does '{char}' stand for?"], "“{char}”的数值是 {r}。",
            "'{char}' has the value {r}.")
UNICODE.add("east_asian_width", lambda char: unicodedata.east_asian_width(char), "字符的东亚宽度属性（F/W 为全宽）",
            "East Asian width class of a character (F and W are wide)", {"char": CHARS},
            ["“{char}”是全角还是半角？"], ["Is '{char}' a wide character?"], "宽度属性是 {r}。", "Its width class is {r}.")
UNICODE.add("count_hanzi", lambda text: sum(1 for c in text if "\u4e00" <= c <= "\u9fff"), "统计文本中汉字（CJK 基本区）的个数",
            "Number of CJK unified ideographs in a text", {"text": S(pools.text_zh, "文本", "text")},
            ["“{text}”有几个汉字？"], ["How many Chinese characters are in '{text}'?"], "共有 {r} 个汉字。",
            "It has {r} Chinese characters.")

# ------------------------------------------------------------------------------------------------ difflib / textwrap
COMPARE = Family("compare")
COMPARE.add("similarity_ratio", lambda a, b: difflib.SequenceMatcher(None, a, b).ratio(),
            "两段文本的相似度（difflib 的 0 到 1 比值）", "Similarity of two texts as difflib's ratio from 0 to 1",
            {"a": S(pools.word, "第一段文本", "first text"), "b": S(pools.word, "第二段文本", "second text")},
            ["“{a}”和“{b}”有多相似？"], ["How similar are '{a}' and '{b}'?"], "相似度是 {r}。", "The similarity is {r}.")
COMPARE.add("closest_matches",
            lambda word, candidates, n=3: difflib.get_close_matches(word, candidates, n=n, cutoff=0.3),
            "在候选词中找出与给定词最接近的几个", "Candidates closest to a word (difflib.get_close_matches)",
            {"word": S(lambda r: (lambda w: w[:-1] + r.choice("aeiou"))(r.choice(pools.EN_WORDS)), "要匹配的词", "word"),
             "candidates": L(pools.word, 4, 6, "候选词列表", "candidate words", "string"),
             "n": opt(I(1, 3, "最多返回几个", "how many at most"), 3)},
            ["在 {candidates} 里哪些词最像“{word}”？"], ["Which of {candidates} are closest to '{word}'?"],
            "最接近的是：{r}", "Closest matches: {r}")
COMPARE.add("longest_common_substring",
            lambda a, b: (lambda m: a[m.a:m.a + m.size])(difflib.SequenceMatcher(None, a, b).find_longest_match()),
            "两段文本的最长公共子串", "Longest common substring of two texts",
            {"a": S(pools.word, "第一段文本", "first text"), "b": S(pools.word, "第二段文本", "second text")},
            ["“{a}”和“{b}”的最长公共子串是什么？"], ["Longest common substring of '{a}' and '{b}'?"],
            "最长公共子串是“{r}”。", "The longest common substring is '{r}'.")
COMPARE.add("wrap_text", lambda text, width: textwrap.wrap(text, width), "按指定宽度把文本折成多行",
            "Wrap a text into lines of at most width characters", {"text": EN_TEXT, "width": I(8, 20, "每行宽度",
                                                                                               "line width")},
            ["把“{text}”按每行 {width} 个字符折行。"], ["Wrap '{text}' at {width} characters."], "折行结果：{r}",
            "Wrapped lines: {r}")
COMPARE.add("shorten_text", lambda text, width: textwrap.shorten(text, width, placeholder="..."),
            "把文本缩短到指定宽度，在单词边界截断并加省略号", "Shorten a text to a width at a word boundary, adding '...'",
            {"text": EN_TEXT, "width": I(12, 30, "最大宽度", "maximum width")}, ["把“{text}”缩短到 {width} 个字符以内。"],
            ["Shorten '{text}' to {width} characters."], "缩短后：{r}", "Shortened: {r}")
COMPARE.add("common_prefix", lambda words: os.path.commonprefix(words), "一组字符串的最长公共前缀",
            "Longest common prefix of a list of strings",
            {"words": Param("array", "字符串列表", "list of strings", lambda r: (lambda p: [
                p + w for w in r.sample(pools.EN_WORDS, r.randint(2, 4))])(r.choice(["inter", "pre", "trans", "un",
                                                                                     "re"])),
                            items="string")},
            ["{words} 的公共前缀是什么？"], ["What prefix do {words} share?"], "公共前缀是“{r}”。", "The common prefix is '{r}'.")

# ------------------------------------------------------------------------------------------------ regex
REGEX = Family("regex")
REGEX.add("extract_numbers", lambda text: [float(x) if "." in x else int(x) for x in re.findall(r"-?\d+(?:\.\d+)?",
                                                                                                text)],
          "提取文本中的所有数字", "All numbers written in a text",
          {"text": S(lambda r: r.choice(["订单{a}号，共{b}件，总价{c}元", "Room {a}, floor {b}, {c} dollars",
                                         "{a} apples and {b} pears cost {c}", "第{a}届，{b}人参加，用时{c}秒"]).format(
              a=r.randint(1, 999), b=r.randint(1, 99), c=round(r.uniform(1, 999), 2)), "文本", "text")},
          ["从“{text}”里提取出所有数字。"], ["Extract the numbers from: {text}"], "数字有：{r}", "The numbers are {r}.")
REGEX.add("extract_emails", lambda text: re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text), "提取文本中的邮箱地址",
          "E-mail addresses found in a text",
          {"text": S(lambda r: f"联系 {r.choice(pools.EN_WORDS)}@{r.choice(pools.HOSTS[:6])} 或 "
                                f"{r.choice(pools.EN_WORDS)}.{r.randint(1, 99)}@{r.choice(pools.HOSTS[:6])}", "文本",
                     "text")},
          ["找出这段话里的邮箱：{text}"], ["Find the e-mail addresses in: {text}"], "邮箱有：{r}", "E-mails: {r}")
REGEX.add("regex_findall", lambda pattern, text: re.findall(pattern, text), "用正则表达式查找文本中的所有匹配",
          "All matches of a regular expression in a text",
          {"pattern": S([r"\b\w{5}\b", r"[A-Z]\w+", r"\d+", r"\b[aeiou]\w*", r"o\w"], "正则表达式", "regular expression"),
           "text": EN_TEXT},
          ["用正则 {pattern} 在“{text}”里找所有匹配。"], ["Find all matches of {pattern} in '{text}'."], "匹配结果：{r}",
          "Matches: {r}")
REGEX.add("regex_test", lambda pattern, text: re.fullmatch(pattern, text) is not None, "判断整个字符串是否匹配正则表达式",
          "Whether a whole string matches a regular expression",
          {"pattern": S([r"\d{11}", r"[a-z]+", r"\d{4}-\d{2}-\d{2}", r"[A-Za-z_]\w*", r"\w+@\w+\.com"], "正则表达式",
                        "pattern"),
           "text": S(lambda r: r.choice([str(r.randint(10 ** 10, 10 ** 11 - 1)), r.choice(pools.EN_WORDS),
                                         pools.date(r),
                                         f"{r.choice(pools.EN_WORDS)}@mail.com", f"x{r.randint(1, 9)}y"]), "字符串",
                     "string")},
          ["“{text}”完全匹配正则 {pattern} 吗？"], ["Does '{text}' fully match {pattern}?"], "匹配吗？{r}。", "Does it match? {r}.")
REGEX.add("split_text", lambda text, separator: [s for s in re.split(separator, text) if s],
          "按分隔符（正则）拆分文本", "Split a text on a separator pattern",
          {"text": S(lambda r: r.choice([",", ";", " | ", "、"]).join(r.sample(pools.EN_WORDS, r.randint(3, 5))), "文本",
                     "text"),
           "separator": S([r"\s*[,;|、]\s*"], "分隔符正则", "separator pattern")},
          ["用 {separator} 把“{text}”拆开。"], ["Split '{text}' on {separator}."], "拆分结果：{r}", "Parts: {r}")

# ------------------------------------------------------------------------------------------------ encodings and hashes
ENCODE = Family("encoding")
ENCODE.add("base64_encode", lambda text: base64.b64encode(text.encode()).decode(), "把文本（UTF-8）做 Base64 编码",
           "Base64-encode a text (UTF-8)", {"text": S(lambda r: r.choice(pools.EN_WORDS + pools.ZH_WORDS), "文本",
                                                      "text")},
           ["把“{text}”进行 base64 编码。"], ["Base64-encode '{text}'."], "Base64 编码是 {r}。", "In Base64: {r}")
ENCODE.add("base64_decode", lambda data: base64.b64decode(data).decode(), "把 Base64 字符串解码成文本",
           "Decode a Base64 string into text",
           {"data": S(lambda r: base64.b64encode(r.choice(pools.EN_WORDS + pools.ZH_WORDS).encode()).decode(),
                      "Base64 字符串",
                      "Base64 string")},
           ["解码这个 base64：{data}"], ["Decode this Base64: {data}"], "解码结果是“{r}”。", "It decodes to '{r}'.")
for algo in ("md5", "sha1", "sha256"):
    ENCODE.add(f"{algo}_hash", lambda text, algo=algo: hashlib.new(algo, text.encode()).hexdigest(),
               f"计算文本（UTF-8）的 {algo.upper()} 摘要（十六进制）", f"{algo.upper()} hex digest of a text (UTF-8)",
               {"text": S(lambda r: r.choice(pools.EN_WORDS + pools.ZH_WORDS), "文本", "text")},
               [f"“{{text}}”的 {algo} 值是多少？"], [f"What is the {algo} of '{{text}}'?"], f"{algo.upper()}：{{r}}",
               f"{algo.upper()}: {{r}}")
ENCODE.add("crc32_checksum", lambda text: zlib.crc32(text.encode()), "计算文本的 CRC32 校验值", "CRC32 checksum of a text",
           {"text": S(pools.word, "文本", "text")}, ["“{text}”的 CRC32 是多少？"], ["CRC32 of '{text}'?"], "CRC32 是 {r}。",
           "The CRC32 is {r}.")
ENCODE.add("url_encode", lambda text: urllib.parse.quote(text), "URL 百分号编码",
           "Percent-encode a text for a URL", {"text": S(lambda r: r.choice(pools.ZH_WORDS + ["a b&c", "100% sure"]),
                                                         "文本", "text")},
           ["把“{text}”做 URL 编码。"], ["URL-encode '{text}'."], "编码后：{r}", "Encoded: {r}")
ENCODE.add("html_escape", lambda text: html.escape(text), "把 < > & 和引号转义成 HTML 实体",
           "Escape < > & and quotes as HTML entities",
           {"text": S(lambda r: f"<{r.choice('bip')}>{r.choice(pools.EN_WORDS)} & \"{r.choice(pools.EN_WORDS)}\"</b>",
                      "文本", "text")},
           ["把 {text} 做 HTML 转义。"], ["HTML-escape: {text}"], "转义后：{r}", "Escaped: {r}")
ENCODE.add("html_unescape", lambda text: html.unescape(text), "把 HTML 实体还原成字符",
           "Turn HTML entities back into characters",
           {"text": S(lambda r: r.choice(["&lt;div&gt;", "Tom &amp; Jerry", "&copy; 2024", "5 &gt; 3",
                                          "&#20013;&#25991;",
                                          "caf&eacute;", "&yen;100"]), "含实体的文本", "text with entities")},
           ["把“{text}”里的 HTML 实体还原。"], ["Unescape the HTML in '{text}'."], "还原后：{r}", "Unescaped: {r}")
ENCODE.add("punycode_domain", lambda domain: domain.encode("idna").decode(), "把中文等国际化域名转换成 Punycode（IDNA）",
           "Punycode (IDNA) form of an internationalised domain name",
           {"domain": S(lambda r: r.choice(["中文", "例子", "北京", "测试", "münchen", "bücher", "日本語"]) + r.choice([".com",
                                                                                                             ".cn",
                                                                                                             ".net"]),
                        "域名", "domain")},
           ["域名 {domain} 的 punycode 是什么？"], ["What is the punycode of {domain}?"], "Punycode 形式：{r}", "Punycode: {r}")
ENCODE.add("utf8_bytes", lambda text: {"hex": text.encode().hex(" "), "length": len(text.encode())}, "文本的 UTF-8 字节",
           "UTF-8 bytes of a text in hex, and their number",
           {"text": S(lambda r: r.choice(pools.ZH_WORDS[:6] + ["€5", "naïve",
                                                               "é"]) if r.random() < 0.5 else r.choice("中文字€é"),
                      "文本", "text")},
           ["“{text}”的 UTF-8 编码是什么？"], ["Show the UTF-8 bytes of '{text}'."], "共 {r[length]} 字节：{r[hex]}",
           "{r[length]} bytes: {r[hex]}")
ENCODE.add("uuid5", lambda name, namespace="dns": str(uuid.uuid5(getattr(uuid, f"NAMESPACE_{namespace.upper()}"),
                                                                 name)),
           "根据命名空间和名称生成确定的 UUID 第 5 版", "Deterministic version-5 UUID of a name in a namespace",
           {"name": S(lambda r: r.choice(pools.HOSTS), "名称", "name"),
            "namespace": opt(E(["dns", "url"], "命名空间", "namespace"), "dns")},
           ["给 {name} 生成 UUID5（命名空间 {namespace}）。", "{name} 的 uuid5 是什么？"],
           ["Make a UUID5 for {name} in the {namespace} namespace.", "uuid5 of {name}?"], "UUID 是 {r}。",
           "The UUID is {r}.")

# ------------------------------------------------------------------------------------------------ Chinese script
CHINESE = Family("chinese_script")
_CC = {}


def _opencc(config: str, text: str) -> str:
    """OpenCC (already a project dependency for the corpus build); one converter per config, built on first use."""
    if config not in _CC:
        import opencc  # lazy: only this family needs it, and importing it loads its dictionaries (~0.1 s)
        _CC[config] = opencc.OpenCC(config)
    return _CC[config].convert(text)


SIMP = S(lambda r: r.choice(pools.poem_lines()) if r.random() < 0.5 else r.choice(pools.ZH_WORDS), "简体中文文本",
         "Simplified text")
for name, config, zh, en, zq, eq in [
        ("to_traditional", "s2t", "把简体中文转换成繁体中文", "Convert Simplified Chinese to Traditional", "繁体", "Traditional"),
        ("to_taiwan_traditional", "s2twp", "把简体中文转换成台湾繁体（含常用词汇）",
         "Convert Simplified Chinese to Taiwan Traditional with Taiwan wording",
         "台湾繁体", "Taiwan Traditional"),
        ("to_hongkong_traditional", "s2hk", "把简体中文转换成香港繁体", "Convert Simplified Chinese to Hong Kong Traditional",
         "香港繁体",
         "Hong Kong Traditional")]:
    CHINESE.add(name, lambda text, config=config: _opencc(config, text), zh, en, {"text": SIMP},
                [f"把“{{text}}”转成{zq}。", f"“{{text}}”的{zq}怎么写？"], [f"Convert '{{text}}' to {eq} Chinese."],
                f"{zq}：{{r}}", f"In {eq}: {{r}}")
CHINESE.add("to_simplified", lambda text: _opencc("t2s", text), "把繁体中文转换成简体中文",
            "Convert Traditional Chinese to Simplified",
            {"text": S(lambda r: _opencc("s2t", r.choice(pools.poem_lines())), "繁体中文文本", "Traditional text")},
            ["把“{text}”转成简体。"], ["Convert '{text}' to Simplified Chinese."], "简体：{r}", "Simplified: {r}")
CHINESE.add("fullwidth_to_halfwidth", lambda text: "".join(
    chr(ord(c) - 0xFEE0) if "\uff01" <= c <= "\uff5e" else " " if c == "\u3000" else c for c in text),
            "把全角英文字母、数字和符号转换成半角", "Convert full-width ASCII letters, digits and symbols to half-width",
            {"text": S(lambda r: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c
                                         for c in f"{r.choice(pools.EN_WORDS)} {r.randint(1, 2024)}!"), "文本", "text")},
            ["把“{text}”转成半角。"], ["Convert '{text}' to half-width."], "半角形式：{r}", "Half-width: {r}")

FAMILIES = [STRINGS, UNICODE, COMPARE, REGEX, ENCODE, CHINESE]
