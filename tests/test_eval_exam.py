"""scripts/eval_bench.py --data_dir (scripts/evals/mcq.py + bench.exam_metrics): C-Eval and CMMLU folders written
here (a few subjects, a handful of rows), layout detection, 0-shot and 5-shot prompts from the same subject's dev
split, a fake model whose picks are known giving the exact expected per-subject and averaged accuracy, the one-forward
letter scorer equal to scoring each letter as its own sequence, intervals, and bad folders, columns and answers
named by file and row."""
import argparse
import csv
import json
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import run_main
from model.checkpoint import load_tokenizer, save_weights
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from model.runtime import UserError
from scripts import eval_bench as eval_bench_cli
from scripts.evals import bench, mcq

HEADER_CEVAL = ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
HEADER_CMMLU = ["", "Question", "A", "B", "C", "D", "Answer"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def q(i, subject, answer, pick):
    """A question whose text says which letter the fake model will pick."""
    return [f"{subject} 第{i}题：下列哪项正确？（模型会选 {pick}）", f"甲{i}", f"乙{i}", f"丙{i}", f"丁{i}", answer]


# subject -> [(answer, the fake model's pick)]: physics 3 of 4 right, history 1 of 3
SCORED = {"physics": [("A", "A"), ("B", "B"), ("C", "C"), ("D", "A")], "history": [("C", "C"), ("A", "B"), ("B", "D")]}


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_ceval(folder, dev_rows=5):
    for subject, items in SCORED.items():
        write_csv(folder / "val" / f"{subject}_val.csv", HEADER_CEVAL,
                  [[i, *q(i, subject, a, p), "解析"] for i, (a, p) in enumerate(items)])
        write_csv(folder / "dev" / f"{subject}_dev.csv", HEADER_CEVAL,
                  [[i, *q(100 + i, subject + "dev", "ABCD"[i % 4], "A"), "解析"] for i in range(dev_rows)])
        write_csv(folder / "test" / f"{subject}_test.csv", HEADER_CEVAL,  # C-Eval's test split: no answers
                  [[0, "无答案的题", "a", "b", "c", "d", "", ""]])
    return folder


def write_cmmlu(folder):
    for subject, items in SCORED.items():
        write_csv(folder / "test" / f"{subject}.csv", HEADER_CMMLU,
                  [[i, *q(i, subject, a, p)] for i, (a, p) in enumerate(items)])
        write_csv(folder / "dev" / f"{subject}.csv", HEADER_CMMLU,
                  [[i, *q(100 + i, subject + "dev", "B", "A")] for i in range(5)])
    return folder


class PickingModel(torch.nn.Module):
    """Decodes each prompt back to text and puts the most probability on the letter its last question names."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tok = tokenizer
        self.config = MiniMindConfig(hidden_size=64, num_hidden_layers=2)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # model_device() looks at a parameter
        self.letter_ids = {L: tokenizer.convert_tokens_to_ids(L) for L in "ABCD"}

    def forward(self, ids, logits_to_keep=None, labels=None):
        assert labels is None and isinstance(logits_to_keep, torch.Tensor)
        positions = logits_to_keep.tolist()
        logits = torch.zeros(ids.shape[0], len(positions), len(self.tok))
        for r in range(ids.shape[0]):
            for k, pos in enumerate(positions):
                last = self.tok.decode(ids[r, :pos + 1].tolist()).rsplit("\n\n", 1)[-1]
                m = re.search(r"模型会选 ([ABCD])）[^\n]*\nA\..*答案：$", last, re.S)
                if m:  # only a row's own last position ends with 答案：
                    logits[r, k, self.letter_ids[m.group(1)]] = 5.0
        return SimpleNamespace(logits=logits)


def exam_args(folder, shots=(0, 5), **kw):
    return argparse.Namespace(data_dir=str(folder), shots=list(shots), limit=0, seed=0, batch_size=3, exam_set=None,
                              **kw)


def by_key(rows):
    return {(r["task"], r["subset"]): r for r in rows}


# ----------------------------------------------------------------------------------------------------- readers

def test_ceval_and_cmmlu_folders_are_read_and_told_apart(tmp_path):
    ce = mcq.read_exam_dir(write_ceval(tmp_path / "ceval"), shots=5)
    assert (ce.name, ce.split, sorted(ce.questions)) == ("ceval", "val", ["history", "physics"])
    first = ce.questions["physics"][0]
    assert (first.row, first.options, first.answer) == (1, ["甲0", "乙0", "丙0", "丁0"], 0)
    assert [x.answer for x in ce.questions["history"]] == [2, 0, 1] and len(ce.shots["history"]) == 5
    cm = mcq.read_exam_dir(write_cmmlu(tmp_path / "cmmlu"), shots=5)
    assert (cm.name, cm.split, sorted(cm.questions)) == ("cmmlu", "test", ["history", "physics"])
    assert [x.answer for x in cm.questions["physics"]] == [0, 1, 2, 3] and cm.shots["physics"][0].answer == 1
    assert mcq.read_exam_dir(tmp_path / "ceval", shots=0).shots == {}


def test_prompts_take_their_examples_from_the_same_subjects_dev_split(tmp_path):
    ce = mcq.read_exam_dir(write_ceval(tmp_path), shots=5)
    question = ce.questions["history"][1]
    zero = mcq.build_prompt(question, [])
    assert zero == ("以下是关于「history」的单项选择题，请选出正确答案。\n\n"
                    "history 第1题：下列哪项正确？（模型会选 B）\nA. 甲1\nB. 乙1\nC. 丙1\nD. 丁1\n答案：")
    five = mcq.build_prompt(question, ce.shots["history"][:5])
    assert five.endswith(zero.split("\n\n", 1)[1]) and five.count("答案：") == 6
    assert [f"historydev 第{100 + i}题" in five for i in range(5)] == [True] * 5 and "physics" not in five
    assert "丁103\n答案：D\n\n" in five  # each example is followed by its own answer letter


def _error(fn, *a, **kw) -> str:
    with pytest.raises(UserError) as e:
        fn(*a, **kw)
    return str(e.value)


def test_bad_folders_columns_and_answers_are_named(tmp_path):
    (tmp_path / "x" / "val").mkdir(parents=True)
    assert "neither a C-Eval folder" in _error(mcq.read_exam_dir, tmp_path / "x")
    assert "no such folder" in _error(mcq.read_exam_dir, tmp_path / "missing")
    folder = write_ceval(tmp_path / "a")
    write_csv(folder / "val" / "physics_val.csv", ["id", "question", "A", "B", "C", "answer"], [[0, "q", 1, 2, 3, "A"]])
    msg = _error(mcq.read_exam_dir, folder)
    assert "physics_val.csv: missing column(s) D" in msg
    folder = write_cmmlu(tmp_path / "b")
    rows = [[i, *q(i, "physics", a, "A")] for i, a in enumerate("ABE")]
    bad = write_csv(folder / "test" / "physics.csv", HEADER_CMMLU, rows)
    assert f"{bad}: row 3 (line 4): answer 'E' is not one of A, B, C, D" in _error(mcq.read_exam_dir, folder)
    folder = write_ceval(tmp_path / "c")
    (folder / "dev" / "history_dev.csv").unlink()
    assert "history_dev.csv: missing; 5-shot prompts" in _error(mcq.read_exam_dir, folder, shots=5)
    assert mcq.read_exam_dir(folder, shots=0).questions  # 0-shot needs no dev split
    assert "history_dev.csv: 3 questions, 5-shot prompts need 5" in _error(
        mcq.read_exam_dir, write_ceval(tmp_path / "d", dev_rows=3), shots=5)


def test_the_command_reports_bad_data_with_exit_code_2_before_loading_a_model(tmp_path, capsys):
    folder = write_cmmlu(tmp_path / "cmmlu")
    write_csv(folder / "test" / "history.csv", HEADER_CMMLU, [[0, "q", "a", "b", "c", "d", "Z"]])
    with pytest.raises(SystemExit) as e:
        eval_bench_cli.main(["--data_dir", str(folder), "--weight", "nothing", "--save_dir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "history.csv: row 1 (line 2): answer 'Z' is not one of A, B, C, D" in err  # not a missing weight file


# ----------------------------------------------------------------------------------------------------- scoring

def test_a_model_with_known_picks_gets_the_exact_accuracy(tmp_path, tokenizer):
    for folder, name in ((write_ceval(tmp_path / "ce"), "ceval"), (write_cmmlu(tmp_path / "cm"), "cmmlu")):
        rows = bench.exam_metrics(exam_args(folder), "fake", PickingModel(tokenizer), tokenizer, "test")
        got = by_key(rows)
        for k in (0, 5):
            task = f"{name}_{k}shot"
            assert got[(task, "physics")]["value"] == 0.75 and got[(task, "physics")]["n"] == 4
            assert got[(task, "history")]["value"] == pytest.approx(1 / 3)
            assert got[(task, "physics")]["per_subject"] and got[(task, "all")]["primary"]
            assert (got[(task, "all")]["correct"], got[(task, "all")]["n"]) == (4, 7)
            assert got[(task, "all")]["ci95"] == pytest.approx(list(bench.wilson_interval(4, 7)))
            mean = got[(task, "subject_mean")]
            assert mean["value"] == pytest.approx((0.75 + 1 / 3) / 2) and mean["subjects"] == 2
            lo, hi = mean["ci95"]
            assert 0 <= lo < mean["value"] < hi <= 1
        assert got[(f"{name}_5shot", "all")]["prompt_tokens_mean"] > 3 * got[(f"{name}_0shot", "all")][
            "prompt_tokens_mean"]
    # --limit keeps a fixed subset per subject
    args = exam_args(tmp_path / "ce", shots=[0])
    args.limit = 2
    got = by_key(bench.exam_metrics(args, "fake", PickingModel(tokenizer), tokenizer, "test"))
    assert got[("ceval_0shot", "physics")]["n"] == 2 and got[("ceval_0shot", "all")]["n"] == 4


def test_one_forward_letter_scores_equal_scoring_each_letter_as_a_sequence(tokenizer):
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)).eval()
    prompts = ["以下是单项选择题。\n\n1+1=?\nA. 1\nB. 2\nC. 3\nD. 4\n答案：", "短题\nA. x\nB. y\nC. z\nD. w\n答案：",
               "The capital of France is\nA. Rome\nB. Paris\nC. Oslo\nD. Bern\n答案："]
    fast, lengths = bench.letter_logprobs(model, tokenizer, prompts, batch_size=2)
    pieces = [bench.choice_pieces(tokenizer, p, L) for p in prompts for L in "ABCD"]
    assert all(n == 1 for _, n in pieces)  # "答案：" then a letter: one token each, so the one-forward path ran
    slow = bench.sequence_logprobs(model, pieces, batch_size=5)
    assert [x for row in fast for x in row] == pytest.approx(slow, abs=1e-4)
    assert lengths == [len(ids) - 1 for ids, _ in pieces[::4]]
    # choices of several tokens go through the per-sequence path and give the same numbers
    words = [" Paris", " Rome"]
    multi, _ = bench.letter_logprobs(model, tokenizer, prompts[2:], letters=words)
    expect = bench.sequence_logprobs(model, [bench.choice_pieces(tokenizer, prompts[2], w) for w in words])
    assert multi[0] == pytest.approx(expect, abs=1e-5)


def test_subject_mean_interval_covers_the_mean_and_narrows_with_more_questions():
    small = mcq.subject_mean_interval([(3, 4), (1, 3)])
    large = mcq.subject_mean_interval([(300, 400), (100, 300)])
    mean = (0.75 + 1 / 3) / 2
    assert small[0] < mean < small[1] and large[0] < mean < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    assert mcq.subject_mean_interval([(4, 4), (3, 3)]) == (1.0, 1.0)


@pytest.mark.slow  # loads weights and scores 2 x 14 prompts through the real model: ~6 s on 2 cores
def test_the_command_writes_subject_rows_and_a_table_of_averages(tmp_path):
    torch.manual_seed(0)
    save_weights(MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2)),
                 tmp_path / "full_sft_64.pth", argparse.Namespace())
    out = tmp_path / "exam.jsonl"
    proc = run_main(eval_bench_cli.main, ["--save_dir", tmp_path, "--weight", "full_sft", "--device", "cpu",
                                          "--data_dir", write_ceval(tmp_path / "ce"), "--output", out])
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert {(r["task"], r["subset"]) for r in rows} == {(f"ceval_{k}shot", s) for k in (0, 5)
                                                        for s in ("physics", "history", "all", "subject_mean")}
    assert "| ceval_5shot | all | acc* | 25.0% | 7 |" in proc.stdout and "| physics |" not in proc.stdout
    assert "4 per-subject rows are in the JSON lines" in proc.stdout
