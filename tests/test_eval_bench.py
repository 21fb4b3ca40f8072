"""scripts/eval_bench.py: bits per character against hand computations, a model trained on a file scores lower on it
and picks the answers it was trained on, chance level and intervals, malformed eval files named by file and line,
and EleutherAI lm-eval on a local task agreeing with our multiple-choice scorer item by item."""
import argparse
import json
import math
import os

import pytest
import torch
from conftest import run_main

from model.checkpoint import load_tokenizer, load_weights, save_weights, weight_path
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from scripts import eval_bench as eval_bench_cli
from scripts.evals import bench as eval_bench

TINY = {"hidden_size": 64, "num_hidden_layers": 2}
TRAIN = ["--hidden_size", "64", "--num_hidden_layers", "2", "--device", "cpu", "--log_interval", "5",
         "--save_interval", "1000"]
# four hand-made questions; the tiny model is pretrained on "question + right answer" and must then prefer it
MC_ITEMS = [
    {"question": "成语「画蛇添足」的意思是？", "choices": ["做了多余的事，反而不好。", "春天来了，花开满园。",
                                                   "形容人非常勇敢。", "比喻时间过得很快。"], "answer": "A"},
    {"question": "「床前明月光」的下一句是？", "choices": ["白日依山尽", "疑是地上霜", "黄河入海流", "更上一层楼"],
     "answer": "B"},
    {"question": "The capital of France is", "choices": [" Berlin.", " Madrid.", " Paris.", " Rome."], "answer": "C"},
    {"question": "水在标准大气压下的沸点是", "choices": ["五十度。", "零度。", "二百度。", "一百摄氏度。"], "answer": "D"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def bench(argv) -> int:
    return eval_bench_cli.main([str(a) for a in argv])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()


def test_bits_per_char_of_a_zero_model_is_log2_vocab_per_token(tokenizer):
    model = tiny_model()
    for p in model.parameters():  # all-zero weights: uniform next-token distribution, log2(6400) bits per token
        p.data.zero_()
    texts = [("zh", "床前明月光，疑是地上霜。举头望明月，低头思故乡。"), ("en", "The quick brown fox jumps."),
             ("zh", "海水为什么是咸的？")]
    for window in (512, 4):  # one window per text, and texts cut into windows of 3 tokens after bos
        stats = eval_bench.heldout_stats(model, tokenizer, texts, batch_size=2, window=window)
        for d in ("zh", "en"):
            tokens = sum(len(tokenizer(t)["input_ids"]) for dd, t in texts if dd == d)
            chars = sum(len(t) for dd, t in texts if dd == d)
            assert stats[d]["tokens"] == tokens and stats[d]["chars"] == chars
            assert stats[d]["bits_per_char"] == pytest.approx(tokens * math.log2(6400) / chars, rel=1e-5)
        assert stats["all"]["texts"] == 3


def test_bits_per_char_equals_a_plain_log_softmax_of_the_full_forward(tokenizer):
    model = tiny_model(3)
    text = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
    ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    nll = -sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1))
    got = eval_bench.bits_per_char(model, tokenizer, [("poetry", text)])
    assert got["poetry"] == pytest.approx(nll / math.log(2) / len(text), rel=1e-5)
    # batching with longer and shorter neighbours (right padding) changes nothing
    batch = [("x", "短。"), ("poetry", text), ("x", "一个更长一些的句子，用来测试填充是否影响结果。")]
    assert eval_bench.bits_per_char(model, tokenizer, batch, batch_size=3)["poetry"] == pytest.approx(
        got["poetry"], rel=1e-4)


def test_chance_level_and_wilson_interval():
    items = [{"choices": ["a", "b"]}, {"choices": list("abcd")}, {"choices": list("abcde")}]
    assert eval_bench.chance_level(items) == pytest.approx((1 / 2 + 1 / 4 + 1 / 5) / 3)
    lo, hi = eval_bench.wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert eval_bench.wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert eval_bench.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert eval_bench.argmax_first([1.0, 3.0, 3.0]) == 1  # ties go to the first, as numpy's argmax


def test_acc_and_acc_norm_from_scores():
    items = [{"choices": ["短", "很长很长的选项"], "answer": 1}, {"choices": ["a", "b"], "answer": 0}]
    # item 1: the long choice has the lower sum (-7 < -2) but the higher per-character log-prob (-1 > -2)
    scores = [[(-2.0, 1), (-7.0, 7)], [(-1.0, 1), (-3.0, 1)]]
    acc = eval_bench.mc_accuracy(items, scores)
    assert (acc["acc"], acc["acc_norm"], acc["chance"]) == (0.5, 1.0, 0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model pretrained for 40 steps (40 epochs of one batch) on the MC questions followed by their right answers."""
    base = tmp_path_factory.mktemp("bench")
    rows = [{"text": it["question"] + it["choices"]["ABCD".index(it["answer"])]} for it in MC_ITEMS]
    data = write_jsonl(base / "answers.jsonl", rows * 2)
    mc = write_jsonl(base / "mc.jsonl", MC_ITEMS)
    from trainer import train_pretrain
    proc = run_main(train_pretrain.main, [*TRAIN, "--data_path", data, "--save_dir", base / "out", "--checkpoint_dir",
                                          base / "ck", "--max_seq_len", 32, "--batch_size", 8, "--epochs", 40,
                                          "--learning_rate", 5e-3, "--warmup_steps", 0, "--seed", 7])
    assert proc.returncode == 0, proc.stderr
    return base, data, mc


def test_training_lowers_bits_per_char_and_learns_the_answers(trained, capsys):
    base, data, mc = trained
    out = base / "bench.jsonl"
    code = bench(["--save_dir", base / "out", "--compare", "untrained", "pretrain", "--seed", "7",
                            "--tasks", "heldout", "mc", "--heldout_path", data, "--mc_sets", f"qa={mc}",
                            "--output", out, "--device", "cpu"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| qa_mc | all | acc_norm* | 25.0% | 4 |" in table
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    get = {(r["model"], r["task"], r["metric"]): r for r in rows if r["subset"] == "all"}
    before = get[("untrained", "heldout", "bits_per_char")]["value"]
    after = get[("pretrain", "heldout", "bits_per_char")]["value"]
    assert after < before - 1.0, (before, after)  # "untrained" is the very init of the run (same seed)
    for metric in ("acc", "acc_norm"):
        assert get[("pretrain", "qa_mc", metric)]["value"] == 1.0
        assert get[("pretrain", "qa_mc", metric)]["chance"] == 0.25
    lo, hi = get[("pretrain", "qa_mc", "acc_norm")]["ci95"]
    assert 0.45 < lo < 0.55 and hi == pytest.approx(1.0)  # Wilson interval of 4/4


def test_generation_checks_use_the_rule_reward(tokenizer, monkeypatch):
    items = [{"messages": [{"role": "user", "content": "q"}], "answer": "周孚", "answer_type": "exact"},
             {"messages": [{"role": "user", "content": "q"}], "answer": "C", "answer_type": "choice"},
             {"messages": [{"role": "user", "content": "q"}], "answer": "8", "answer_type": "number"}]
    answers = [("「周孚」。", "stop"), ("选A", "stop"), ("8画", "length")]
    monkeypatch.setattr(eval_bench, "generate_answers", lambda *a, **k: answers)
    counts = eval_bench.rl_accuracy(None, tokenizer, items, 8, 4)
    assert counts == {"exact": (1, 1), "choice": (0, 1), "number": (1, 1), "all": (2, 3)}


def test_generation_through_the_engine_reports_answers(trained, capsys):
    base, _, _ = trained
    out = base / "gen.jsonl"
    assert bench(["--save_dir", base / "out", "--weight", "pretrain", "--tasks", "gen", "--gen_limit", "3",
                            "--max_new_tokens", "4", "--output", out, "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    auto = next(r for r in rows if r["task"] == "auto_prompts")
    assert len(auto["samples"]) == 8 and all(s["finish"] in ("stop", "length") for s in auto["samples"])
    assert next(r for r in rows if r["task"] == "rl_answers" and r["subset"] == "all")["n"] == 3


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not valid JSON"),
    ('{"question": "q", "choices": ["a"], "answer": "A"}', "at least 2"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "C"}', "outside the 2 choices"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "yes"}', "must be a letter"),
    ('{"choices": ["a", "b"], "answer": "A"}', "'question'"),
])
def test_malformed_mc_file_is_rejected_with_file_and_line(tmp_path, capsys, line, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": "A"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        bench(["--mc_sets", f"bad={bad}", "--tasks", "mc", "--weight", "nothing", "--save_dir", tmp_path,
                         "--compare", "untrained", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and problem in err


def test_malformed_heldout_file_is_rejected_with_file_and_line(tmp_path):
    bad = write_jsonl(tmp_path / "h.jsonl", [{"text": "好"}, {"txt": "x"}])
    with pytest.raises(eval_bench.UserError, match=rf"{bad}:2: expected a 'text'"):
        eval_bench.read_heldout(bad)


LM_EVAL_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "<|im_start|>{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answer)}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_lm_eval_on_a_local_task_agrees_with_our_scorer(tmp_path, tokenizer, monkeypatch):
    """The same items through lm-eval's `hf` model on the exported Llama folder (what the README's C-Eval command
    runs) and through our scorer on the native .pth: the same log-likelihoods, the same acc and acc_norm.
    The bos our scorer puts before each question is spelled <|im_start|> in the task's prompt."""
    pytest.importorskip("lm_eval")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from scripts import convert_to_hf
    idioms = eval_bench.repo_path(eval_bench.MC_SETS[0].split("=")[1]).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in idioms[:12]] + MC_ITEMS
    data = write_jsonl(tmp_path / "items.jsonl", [{k: r[k] for k in ("question", "choices", "answer")} for r in rows])
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_mc.yaml").write_text(LM_EVAL_TASK.format(name="local_mc", data=data))
    model = tiny_model(11)
    save_weights(model, weight_path(tmp_path / "w", "full_sft", 64, 0), argparse.Namespace())
    hf = tmp_path / "hf"
    assert run_main(convert_to_hf.main, ["--save_dir", tmp_path / "w", "--output_dir", hf,
                                         "--dtype", "float32"]).returncode == 0

    result = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf},dtype=float32", tasks=["local_mc"],
                                     task_manager=TaskManager(include_path=str(tmp_path / "tasks")), batch_size=4,
                                     device="cpu", log_samples=True)
    theirs = result["results"]["local_mc"]

    items = eval_bench.read_mc(data)
    native = MiniMindForCausalLM(MiniMindConfig(**TINY))
    load_weights(native, weight_path(tmp_path / "w", "full_sft", 64, 0))
    scores = eval_bench.mc_scores(native.eval(), tokenizer, items, batch_size=5)
    ours = eval_bench.mc_accuracy(items, scores)
    assert ours["acc"] == pytest.approx(theirs["acc,none"])
    assert ours["acc_norm"] == pytest.approx(theirs["acc_norm,none"])
    for sample in result["samples"]["local_mc"]:
        lls = [r[0] for r in sample["filtered_resps"]]
        mine = [lp for lp, _ in scores[sample["doc_id"]]]
        assert mine == pytest.approx(lls, abs=1e-3)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
