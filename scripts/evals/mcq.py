"""C-Eval and CMMLU from a local folder: read the CSVs, build 0-shot and k-shot prompts, average with intervals
(scripts/eval_bench.py --data_dir DIR; the log-likelihood scoring is scripts/evals/bench.py's `letter_logprobs`).

Layouts, as the two projects ship them (unzipped):
    C-Eval  DIR/val/<subject>_val.csv and DIR/dev/<subject>_dev.csv   columns id, question, A, B, C, D, answer (,...)
    CMMLU   DIR/test/<subject>.csv    and DIR/dev/<subject>.csv       columns (index), Question, A, B, C, D, Answer
C-Eval's test split has no answers, so C-Eval is scored on val (as lm-eval's ceval-valid does); CMMLU on test.
Column names are matched without regard to case, so one reader serves both.

A prompt is a header naming the subject, k solved questions from the dev split of the same subject (the first k, in
file order), then the question with its four options and "答案：". The model's answer is the letter among A-D with
the highest log-probability as the next token(s) (lm-eval's multiple_choice rule with the letters as choices).
"""
import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.runtime import UserError

LETTERS = "ABCD"
COLUMNS = ("question", "a", "b", "c", "d", "answer")


@dataclass
class Question:
    subject: str
    row: int  # 1-based data row in its file (the header is row 0), for messages
    question: str
    options: list  # [A, B, C, D]
    answer: int  # 0..3


@dataclass
class ExamSet:
    name: str  # "ceval" or "cmmlu"
    split: str  # the scored split: "val" or "test"
    questions: dict  # subject -> [Question] (scored)
    shots: dict  # subject -> [Question] (dev split)
    shot_files: dict  # subject -> Path of its dev file (for messages)


def detect_layout(folder: Path) -> tuple:
    """(name, scored split folder, file suffix) of a C-Eval or CMMLU folder; a UserError for anything else."""
    if not folder.is_dir():
        raise UserError(f"--data_dir {folder}: no such folder")
    if sorted((folder / "val").glob("*_val.csv")):
        return "ceval", "val", "_val"
    if [p for p in (folder / "test").glob("*.csv") if not p.stem.endswith("_test")]:
        return "cmmlu", "test", ""
    raise UserError(f"--data_dir {folder}: neither a C-Eval folder (val/<subject>_val.csv with dev/<subject>_dev.csv) "
                    f"nor a CMMLU folder (test/<subject>.csv with dev/<subject>.csv); unzip ceval-exam.zip or "
                    f"cmmlu_v1_0_1.zip so that those folders sit directly under it")


def read_csv(path: Path, subject: str) -> list:
    """[Question] of one file; a missing column or an answer outside A-D names the file and the row."""
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: files saved by Excel start with a BOM
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file (expected a header row with {', '.join(COLUMNS)})")
        index = {h.strip().lower(): i for i, h in enumerate(header)}
        missing = [c for c in COLUMNS if c not in index]
        if missing:
            names = [c.upper() if len(c) == 1 else c for c in missing]
            raise UserError(f"{path}: missing column(s) {', '.join(names)} (header: {', '.join(header)}); "
                            f"C-Eval has id,question,A,B,C,D,answer and CMMLU ,Question,A,B,C,D,Answer")
        out = []
        for n, cells in enumerate(reader, 1):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) <= max(index[c] for c in COLUMNS):  # a short row; a missing trailing extra is fine
                raise UserError(f"{path}: row {n} (line {reader.line_num}) has {len(cells)} cells; the columns "
                                f"{', '.join(header)} need {max(index[c] for c in COLUMNS) + 1}")
            answer = cells[index["answer"]].strip().upper()
            if answer not in LETTERS or len(answer) != 1:
                raise UserError(f"{path}: row {n} (line {reader.line_num}): answer {cells[index['answer']]!r} is "
                                f"not one of A, B, C, D")
            question = cells[index["question"]].strip()
            if not question:
                raise UserError(f"{path}: row {n} (line {reader.line_num}): empty question")
            out.append(Question(subject, n, question, [cells[index[c]].strip() for c in "abcd"],
                                LETTERS.index(answer)))
    return out


def read_exam_dir(folder, shots: int = 5) -> ExamSet:
    """Every subject of a C-Eval or CMMLU folder, with its dev questions when shots > 0."""
    folder = Path(folder)
    name, split, suffix = detect_layout(folder)
    files = sorted((folder / split).glob(f"*{suffix}.csv"))
    questions, dev, dev_files = {}, {}, {}
    for path in files:
        subject = path.stem[:len(path.stem) - len(suffix)] if suffix else path.stem
        rows = read_csv(path, subject)
        if not rows:
            raise UserError(f"{path}: no questions")
        questions[subject] = rows
        if shots > 0:
            dev_path = folder / "dev" / f"{subject}{'_dev' if name == 'ceval' else ''}.csv"
            if not dev_path.is_file():
                raise UserError(f"{dev_path}: missing; {shots}-shot prompts take their examples from the dev split "
                                f"of the same subject (or run 0-shot only: --shots 0)")
            dev[subject] = read_csv(dev_path, subject)
            dev_files[subject] = dev_path
            if len(dev[subject]) < shots:
                raise UserError(f"{dev_path}: {len(dev[subject])} questions, {shots}-shot prompts need {shots}")
    return ExamSet(name, split, questions, dev, dev_files)


def format_question(q: Question) -> str:
    return q.question + "\n" + "".join(f"{L}. {o}\n" for L, o in zip(LETTERS, q.options)) + "答案："


def build_prompt(q: Question, shots: list) -> str:
    """Header, solved examples (each followed by its letter), then the question up to "答案：". No chat template:
    the letter is read as a plain next token, as lm-eval does for these sets."""
    header = f"以下是关于「{q.subject.replace('_', ' ')}」的单项选择题，请选出正确答案。\n\n"
    solved = "".join(format_question(s) + LETTERS[s.answer] + "\n\n" for s in shots)
    return header + solved + format_question(q)


def subsample(questions: list, limit: int, seed: int) -> list:
    """A fixed random subset of `limit` questions in file order (all when limit is 0 or not smaller)."""
    if not limit or limit >= len(questions):
        return questions
    keep = sorted(random.Random(seed).sample(range(len(questions)), limit))
    return [questions[i] for i in keep]


def subject_mean_interval(per_subject: list, draws: int = 2000, seed: int = 0) -> tuple:
    """95% percentile-bootstrap interval of the unweighted mean over subjects of [(correct, n)]: questions are
    resampled within each subject, so a subject's resampled accuracy is Binomial(n, p) / n. 2000 draws put the
    interval's ends within about 0.3 points of their limit for 50 subjects of ~25 questions."""
    rng = np.random.default_rng(seed)
    n = np.array([n for _, n in per_subject], dtype=np.int64)
    p = np.array([c / n_ for c, n_ in per_subject])
    means = (rng.binomial(n, p, size=(draws, len(n))) / n).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)
