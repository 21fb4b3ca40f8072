"""Tests for scripts/build_corpus.py: pure text helpers, derived-set builders on hand-made records,
and the committed dataset/demo/*.jsonl files. Offline and fast (nothing is downloaded)."""
import json
import random
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from scripts.corpus import derive as D  # noqa: E402
from scripts.corpus import text as T  # noqa: E402
from scripts.corpus.build import chunk_docs, pack_short, take_chars  # noqa: E402
from scripts.corpus.sources import char_meanings, poem_text, rst_to_text  # noqa: E402

DEMO = ROOT / "dataset" / "demo"
TRAINING_FILES = ["pretrain_demo", "sft_demo", "dpo_demo", "rlaif_demo", "r1_demo", "lora_identity_demo", "tool_call_demo"]
EVAL_MC_FILES = ["eval_idiom_mc", "eval_poem_nextline_mc"]
THINK_ANSWER = re.compile(r"\A<think>\n.+\n</think>\n<answer>\n.+\n</answer>\Z", re.S)
TOOL_CALL = re.compile(r"\A<tool_call>\n(.+)\n</tool_call>\Z", re.S)


# ---------------------------------------------------------------- text helpers

def test_to_simplified_converts_traditional_poem_text():
    assert T.to_simplified("秦川雄帝宅，函谷壯皇居。") == "秦川雄帝宅，函谷壮皇居。"
    assert T.to_simplified_many(["綺殿千尋起", "離宮百雉餘"]) == ["绮殿千寻起", "离宫百雉余"]


def test_clean_text_strips_ansi_and_folds_fullwidth_digits_but_keeps_chinese_punctuation():
    assert T.clean_text("\x1b[33m１９９８年，ＡＢ\x1b[m。") == "1998年，AB。"
    assert T.clean_text("ﬁne\u00a0day", english=True) == "fine day"


def test_dedup_ignores_whitespace_and_case_only():
    docs = [{"text": "Hello  World"}, {"text": "hello world"}, {"text": "Hello Word"}]
    assert [d["text"] for d in T.dedup(docs)] == ["Hello  World", "Hello Word"]


def test_heldout_split_is_stable_and_about_two_percent():
    # Fixed expectations: the split depends only on the id, so these never change between runs or machines.
    assert T.split_of("idiom:一帆风顺") == T.split_of("idiom:一帆风顺")
    assert T.stable_hash("split:idiom:一帆风顺") == T.stable_hash("split:idiom:一帆风顺")
    ids = [f"doc:{i}" for i in range(20000)]
    share = sum(T.split_of(i) == "heldout" for i in ids) / len(ids)
    assert 0.015 < share < 0.025
    assert T.stable_hash("abc") == int("a9993e364706816a", 16)  # first 8 bytes of sha1("abc")


def test_chunk_text_cuts_at_sentence_boundaries_and_keeps_all_text():
    text = "".join(f"这是第{i}句话，内容不长。" for i in range(120)) + "\n" + " ".join(f"Sentence {i} ends here." for i in range(80))
    chunks = T.chunk_text(text, min_chars=300, max_chars=800)
    assert len(chunks) > 3
    assert all(len(c) <= 1000 for c in chunks)
    assert all(re.search(r"[。.]$", c) for c in chunks)
    assert re.sub(r"\s", "", "".join(chunks)) == re.sub(r"\s", "", text)
    assert T.chunk_text("短文本。") == ["短文本。"]


def test_hard_split_of_a_sentence_longer_than_max():
    chunks = T.chunk_text("长" * 2000 + "。", min_chars=100, max_chars=500)
    assert all(len(c) <= 625 for c in chunks) and "".join(chunks) == "长" * 2000 + "。"


def test_fix_unmatched_quotes_restores_the_lost_opening_quote():
    assert T.fix_unmatched_quotes("语出《法华经》下至阿鼻地狱。”") == "语出《法华经》“下至阿鼻地狱。”"
    assert T.fix_unmatched_quotes("意译为无间”，即痛苦") == "意译为无间，即痛苦"
    assert T.fix_unmatched_quotes("“完整”的引号") == "“完整”的引号"


def test_char_meanings_reads_the_modern_senses():
    expl = "天〈名〉\n\n 古义在前 \n\n 天tiān\n\n ⒈高空～空。\n\n ⒉最，极～好。\n\n ⒊\n\n 【天才】不要这个"
    assert char_meanings("天", "tiān", expl) == ["高空天空。", "最，极天好。"]
    assert char_meanings("垼", "yì", "垼yì 1.古代丧礼所用的土灶。") == ["古代丧礼所用的土灶。"]


def test_rst_to_text_drops_markup():
    src = "Title\n=====\n\n.. index:: foo\n   single: bar\n\nUse :func:`len` and ``x``, see `docs <https://x>`_ and :pep:`8`::\n\n   code()\n"
    out = rst_to_text(src)
    assert "index" not in out and "=====" not in out
    assert "Use `len` and `x`, see docs and PEP 8:" in out and "code()" in out


def test_chunks_inherit_split_and_pack_short_joins_same_source_only():
    docs = [{"id": "a", "source": "s1", "domain": "d", "text": "句子。" * 400, "split": "heldout"}]
    assert {c["split"] for c in chunk_docs(docs)} == {"heldout"}
    rows = [{"id": str(i), "source": "s1" if i < 4 else "s2", "text": "x" * 100} for i in range(6)]
    packed = pack_short(rows, min_chars=300, max_chars=800)
    assert [r["source"] for r in packed] == ["s1", "s1", "s2"]
    assert len(take_chars(packed, 1)) == 1


# ---------------------------------------------------------------- derived sets on hand-made records

IDIOMS = [  # explanations written for this test
    ("一帆风顺", "yī fān fēng shùn", "船挂满帆顺风行驶。比喻非常顺利，没有阻碍。"),
    ("画蛇添足", "huà shé tiān zú", "画蛇时给蛇添上脚。比喻做了多余的事，反而不恰当。"),
    ("守株待兔", "shǒu zhū dài tù", "守在树桩旁等兔子撞死。比喻死守经验，不知变通。"),
    ("亡羊补牢", "wáng yáng bǔ láo", "丢了羊再修补羊圈。比喻出了问题后及时补救。"),
    ("对牛弹琴", "duì niú tán qín", "对着牛弹琴。比喻对不懂道理的人讲道理，白费口舌。"),
    ("刻舟求剑", "kè zhōu qiú jiàn", "在船上刻记号去找落水的剑。比喻拘泥固执，不懂变化。"),
    ("井底之蛙", "jǐng dǐ zhī wā", "井底的青蛙只看得到井口大的天。比喻见识狭窄的人。"),
    ("杯弓蛇影", "bēi gōng shé yǐng", "把酒杯里的弓影当成蛇。比喻疑神疑鬼，自相惊扰。"),
]
POEMS = [  # public-domain Tang poems
    ("静夜思", "李白", ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"], "train"),
    ("春晓", "孟浩然", ["春眠不觉晓，处处闻啼鸟。", "夜来风雨声，花落知多少。"], "train"),
    ("登鹳雀楼", "王之涣", ["白日依山尽，黄河入海流。", "欲穷千里目，更上一层楼。"], "train"),
    ("早发白帝城", "李白", ["朝辞白帝彩云间，千里江陵一日还。", "两岸猿声啼不住，轻舟已过万重山。"], "train"),
    ("枫桥夜泊", "张继", ["月落乌啼霜满天，江枫渔火对愁眠。", "姑苏城外寒山寺，夜半钟声到客船。"], "train"),
    ("望庐山瀑布", "李白", ["日照香炉生紫烟，遥看瀑布挂前川。", "飞流直下三千尺，疑是银河落九天。"], "train"),
    ("相思", "王维", ["红豆生南国，春来发几枝。", "愿君多采撷，此物最相思。"], "heldout"),
    ("鹿柴", "王维", ["空山不见人，但闻人语响。", "返景入深林，复照青苔上。"], "heldout"),
    ("江雪", "柳宗元", ["千山鸟飞绝，万径人踪灭。", "孤舟蓑笠翁，独钓寒江雪。"], "heldout"),
]


@pytest.fixture()
def rec():
    idioms = [{"id": w, "word": w, "pinyin": p, "explanation": e, "derivation": "", "example": "",
               "split": "heldout" if i % 2 else "train"} for i, (w, p, e) in enumerate(IDIOMS)]
    poems = [{"id": t, "kind": "tang_shi", "title": t, "author": a, "dynasty": "唐", "paragraphs": ps, "famous": True, "split": s}
             for t, a, ps, s in POEMS]
    hanzi = [{"id": c, "word": c, "oldword": c, "pinyin": p, "radicals": r, "strokes": n, "meanings": [m], "split": "train"}
             for c, p, r, n, m in [("水", "shuǐ", "水", 4, "无色无味的液体。"), ("山", "shān", "山", 3, "地面上高起的部分。"),
                                   ("月", "yuè", "月", 4, "月亮。"), ("花", "huā", "艹", 7, "植物的繁殖器官。"),
                                   ("鸟", "niǎo", "鸟", 5, "脊椎动物的一类。")]]
    bios = [{"id": "李白", "name": "李白", "dynasty": "唐", "split": "train",
             "desc": "李白，字太白，号青莲居士，唐代诗人，有诗仙之称，存诗近千首，与杜甫并称李杜。"}]
    faq = [{"id": "q1", "question": "What is Python?", "answer": "Python is a programming language used here as a test answer.", "split": "train"}]
    chat = [{"id": f"c{i}", "lang": "chinese", "topic": "greetings", "turns": ["你好", "你好呀"], "split": "train"} for i in range(3)]
    return {"idioms": idioms, "poems": poems, "hanzi": hanzi, "bios": bios, "faq": faq, "chat": chat}


SMALL = {k: (None if v is None else 2) for k, v in D.DEMO_SIZES.items()}
SMALL.update(eval_idiom=4, eval_poem=3)


def _texts(rows):
    return "\n".join(D.row_text(r) for r, _ in rows)


def test_idiom_sft_answer_is_the_real_explanation(rec):
    train = D.train_of(rec["idioms"])
    rows = D.sft_idiom(train, None, random.Random(0))
    assert len(rows) == len(train)
    by_word = {r["word"]: r for r in train}
    for row, source in rows:
        user, answer = row["conversations"][-2]["content"], row["conversations"][-1]["content"]
        word = next(w for w in by_word if w in user)
        assert by_word[word]["explanation"] in answer
        assert source == "idiom"


def test_dpo_rejected_is_another_records_explanation(rec):
    train = D.train_of(rec["idioms"])
    expl = {r["explanation"] for r in train}
    for row, _ in D.dpo_idiom(train, None, random.Random(1)):
        assert row["chosen"][:-1] == row["rejected"][:-1]  # same prompt
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        real = next(e for e in expl if e in chosen)
        wrong = [e for e in expl if e in rejected]
        assert wrong and wrong[0] != real


def test_mc_item_has_exactly_one_correct_option(rec):
    pool = D.train_of(rec["idioms"])
    for r in pool:
        options, letter, distractors = D.idiom_mc(r, pool, random.Random(r["word"]))
        assert len(options) == 4 and len(set(options)) == 4
        assert options.count(r["explanation"]) == 1
        assert options[D.LETTERS.index(letter)] == r["explanation"]
        assert all(d["word"] != r["word"] for d in distractors)


def test_training_sets_use_train_split_only_and_eval_uses_heldout_only(rec):
    sets = D.derive_training(rec, SMALL, seed=3)
    blob = "\n".join(_texts(rows) for rows in sets.values())
    held_words = [r["word"] for r in rec["idioms"] if r["split"] == "heldout"]
    held_lines = [c for p in rec["poems"] if p["split"] == "heldout" for c in D.clauses(p)]
    assert not [w for w in held_words if w in blob]
    assert not [ln for ln in held_lines if ln in blob]
    train_texts = [poem_text(p) for p in rec["poems"] if p["split"] == "train"]
    evals = D.drop_leaked(D.derive_eval(rec, SMALL, 3, train_texts), sets)
    assert evals["eval_idiom_mc"] and evals["eval_poem_nextline_mc"]
    for item, _ in evals["eval_idiom_mc"]:
        assert any(w in item["question"] for w in held_words)
    for item, _ in evals["eval_poem_nextline_mc"]:
        assert item["choices"][D.LETTERS.index(item["answer"])] in held_lines


def test_derived_rows_are_deterministic(rec):
    a = D.derive_training(rec, SMALL, seed=5)
    b = D.derive_training(rec, SMALL, seed=5)
    assert json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)


def test_tool_rows_on_hand_made_records(rec):
    rows = D.tool_calls(rec, SMALL, random.Random(2))
    assert {src for _, src in rows} >= {"idiom", "idiom_missing", "calculator", "hanzi"}
    for row, src in rows:
        _check_tool_row(row)
        if src == "idiom_missing":
            assert row["conversations"][3]["content"] == "{}"


# ---------------------------------------------------------------- the committed demo files

def _load(name):
    path = DEMO / f"{name}.jsonl"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python scripts/build_corpus.py bundle`")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                pytest.fail(f"{path}:{n}: not valid JSON ({e})")
    return rows


@pytest.fixture(scope="module")
def demo():
    return {name: _load(name) for name in TRAINING_FILES + EVAL_MC_FILES + ["eval_heldout"]}


def _check_messages(msgs, roles=("system", "user", "assistant", "tool")):
    assert msgs and all(m["role"] in roles and isinstance(m["content"], str) and m["content"] for m in msgs)


def _check_tool_row(row):
    conv = row["conversations"]
    assert conv[0]["role"] == "system" and conv[0]["functions"]
    names = {f["name"] for f in conv[0]["functions"]}
    assert [m["role"] for m in conv[1:]] == ["user", "assistant", "tool", "assistant"]
    call = json.loads(TOOL_CALL.match(conv[2]["content"]).group(1))
    assert call["name"] in names and isinstance(call["arguments"], dict)
    json.loads(conv[3]["content"])


def test_demo_is_small_enough_to_commit():
    total = sum(p.stat().st_size for p in (ROOT / "dataset").rglob("*")
                if p.is_file() and not {"build", "cache"} & set(p.relative_to(ROOT / "dataset").parts))
    assert total < 10 * 1024 * 1024


def test_demo_formats(demo):
    assert all(set(r) == {"text"} and len(r["text"]) >= 20 for r in demo["pretrain_demo"])
    for name in ("sft_demo", "lora_identity_demo"):
        for r in demo[name]:
            assert set(r) == {"conversations"}
            _check_messages(r["conversations"])
            assert r["conversations"][-1]["role"] == "assistant"
    assert any(r["conversations"][0]["role"] == "system" for r in demo["sft_demo"])
    assert any(len(r["conversations"]) >= 4 for r in demo["sft_demo"])  # multi-turn dialogues
    for r in demo["dpo_demo"]:
        assert set(r) == {"chosen", "rejected"}
        assert r["chosen"][:-1] == r["rejected"][:-1] and r["chosen"][-1] != r["rejected"][-1]
    for r in demo["rlaif_demo"]:
        assert r["answer_type"] in ("exact", "choice", "number")
        _check_messages(r["conversations"])
        ans = r["conversations"][-1]
        assert ans["role"] == "assistant"
        if r["answer_type"] == "choice":
            assert ans["content"] in ("A", "B", "C", "D")
        if r["answer_type"] == "number":
            assert ans["content"].isdigit()
    assert {r["answer_type"] for r in demo["rlaif_demo"]} == {"exact", "choice", "number"}
    for r in demo["r1_demo"]:
        assert THINK_ANSWER.match(r["conversations"][-1]["content"])
    for r in demo["tool_call_demo"]:
        _check_tool_row(r)
    assert any(r["conversations"][3]["content"] in ("{}", "[]") for r in demo["tool_call_demo"])  # not-found cases
    assert any("MiniMind" in r["conversations"][-1]["content"] for r in demo["lora_identity_demo"])


def test_eval_formats(demo):
    for name in EVAL_MC_FILES:
        assert 200 <= len(demo[name]) <= 500
        for r in demo[name]:
            assert set(r) == {"question", "choices", "answer", "source"}
            assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and r["answer"] in "ABCD"
            assert "held-out" in r["source"]
    assert all(set(r) == {"text", "domain"} for r in demo["eval_heldout"])


def test_no_eval_item_occurs_in_any_training_file(demo):
    blob = "\n".join(r.get("text", "") or D.row_text(r) for name in TRAINING_FILES for r in demo[name])
    frags = D.fragments([blob])
    tok = ROOT / "dataset" / "build" / "tokenizer_corpus.jsonl"  # present only after a local build
    for name in EVAL_MC_FILES:
        for item in demo[name]:
            for key in D.eval_keys(item):
                assert key not in frags, (name, key)
                if len(key) > 8:
                    assert key not in blob, (name, key)
    held = {r["text"] for r in demo["eval_heldout"]}
    assert not [r for r in demo["pretrain_demo"] if r["text"] in held]
    if tok.exists():
        lines = [k for item in demo["eval_poem_nextline_mc"] for k in D.eval_keys(item)]
        tok_frags = set()
        with open(tok, encoding="utf-8") as f:
            for line in f:
                tok_frags |= D.fragments([json.loads(line)["text"]])
        assert not [k for k in lines if k in tok_frags]
