"""The token cache (dataset/token_cache.py) and the padded last batch of compiled runs (trainer/trainer_utils.py).

Reuse without tokenizing, invalidation (file, tokenizer, format), killed builds never used, one builder under
torchrun, cached rows equal to the uncached ones, and every row trained once per epoch with and without compile.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from dataset import token_cache as tc
from dataset.lm_dataset import IGNORE_INDEX, ChatFormat, ChatRows, PretrainDataset, PretrainRows, SFTDataset
from trainer import trainer_utils

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "dataset" / "demo"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ROOT / "model")


def head(src: Path, dst: Path, n: int) -> Path:
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(line for _, line in zip(range(n), f)), encoding="utf-8")
    return dst


class CountingRows(PretrainRows):
    """Counts the rows it encodes (in this process: the tests build with workers=1 to count)."""

    calls = 0

    def encode(self, texts):
        CountingRows.calls += len(texts)
        return super().encode(texts)


def build(path, tok, cache, rows=None, workers=1, log=None):
    lines = []
    cache_obj = tc.load_or_build(path, tok, rows or CountingRows(tok), cache, log=log or lines.append,
                                 workers=workers)
    return cache_obj, lines


def test_second_run_maps_the_cache_without_tokenizing(tmp_path, tok):
    data = head(DEMO / "pretrain_demo.jsonl", tmp_path / "p.jsonl", 60)
    CountingRows.calls = 0
    first, lines = build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 60 and any("tokenizing" in line for line in lines)
    manifest = first.folder / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    CountingRows.calls = 0
    second, lines = build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 0 and lines == [] and manifest.stat().st_mtime_ns == stamp
    assert second.folder == first.folder and second.n_tokens == first.n_tokens
    # shards are uint16 for the 6,400-token vocabulary: 2 bytes a token
    assert sum(s["tokens"] for s in second.manifest["shards"]) * 2 == sum(
        (second.folder / s["file"]).stat().st_size for s in second.manifest["shards"])


def test_cached_rows_equal_uncached_rows_with_a_process_pool(tmp_path, tok):
    data = head(DEMO / "pretrain_demo.jsonl", tmp_path / "p.jsonl", 200)
    for packing in (True, False):
        plain = PretrainDataset(data, tok, 64, packing=packing)
        cached = PretrainDataset(data, tok, 64, packing=packing, cache_dir=tmp_path / "c", log=lambda m: None)
        assert len(cached) == len(plain) > 100
        for i in range(len(plain)):
            assert all(torch.equal(a, b) for a, b in zip(plain[i], cached[i])), (packing, i)
        order = list(range(len(plain)))[::-1]  # the DataLoader's batched fetch gives the same rows
        assert all(torch.equal(a[0], plain[i][0]) and torch.equal(a[1], plain[i][1])
                   for i, a in zip(order, cached.__getitems__(order)))
    assert len(cached.cache.manifest["shards"]) >= 2  # the pool split the file, and rows cross shard edges
    sft = head(DEMO / "sft_demo.jsonl", tmp_path / "s.jsonl", 150)
    plain = SFTDataset(sft, tok, 96)
    cached = SFTDataset(sft, tok, 96, cache_dir=tmp_path / "c", log=lambda m: None)
    assert len(cached) == len(plain) == 150
    for i in range(len(plain)):
        assert all(torch.equal(a, b) for a, b in zip(plain[i], cached[i])), i


def test_changed_file_tokenizer_or_format_rebuilds(tmp_path, tok):
    data = head(DEMO / "pretrain_demo.jsonl", tmp_path / "p.jsonl", 30)
    first, _ = build(data, tok, tmp_path / "c")
    # same bytes, new mtime (a copy, a touch): checked by content hash, reused
    os.utime(data, ns=(first.manifest["source"]["mtime_ns"] + 10**9,) * 2)
    CountingRows.calls = 0
    same, _ = build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 0 and same.n_tokens == first.n_tokens
    # changed content, same size: rebuilt
    text = data.read_text(encoding="utf-8")
    data.write_text(text.replace("。", "，", 1), encoding="utf-8")
    assert data.stat().st_size == first.manifest["source"]["size"]
    changed, lines = build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 30 and any("tokenizing" in line for line in lines)
    assert changed.folder == first.folder and not np.array_equal(changed.row(0), first.row(0)) or \
        changed.manifest["source"]["sha256"] != first.manifest["source"]["sha256"]
    # another tokenizer (one token more): another cache
    other = AutoTokenizer.from_pretrained(ROOT / "model")
    other.add_tokens(["<|extra|>"])
    CountingRows.calls = 0
    rebuilt, _ = build(data, other, tmp_path / "c", rows=CountingRows(other))
    assert CountingRows.calls == 30 and rebuilt.folder != changed.folder
    # other format settings: SFT rows cut to another max_length, or skipping bad lines
    sft = head(DEMO / "sft_demo.jsonl", tmp_path / "s.jsonl", 20)
    fmt = ChatFormat(tok, None)
    folders = {build(sft, tok, tmp_path / "c", rows=ChatRows(fmt, n, skip))[0].folder
               for n, skip in ((64, False), (128, False), (64, True))}
    assert len(folders) == 3


def test_half_written_cache_is_never_used(tmp_path, tok):
    data = head(DEMO / "pretrain_demo.jsonl", tmp_path / "p.jsonl", 30)
    good, _ = build(data, tok, tmp_path / "c")
    expected = [good.row(i).copy() for i in range(len(good))]
    folder = good.folder
    # 1. a killed run's folder: shards written, manifest missing (written last) -> rebuilt, not read
    (folder / "manifest.json").unlink()
    for shard in good.manifest["shards"]:
        (folder / shard["file"]).write_bytes(b"\xff\xff" * 3)
    CountingRows.calls = 0
    again, _ = build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 30 and [again.row(i).tolist() for i in range(len(again))] == \
        [r.tolist() for r in expected]
    # 2. a truncated shard under a manifest -> rebuilt
    shard = folder / again.manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-2])
    CountingRows.calls = 0
    build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 30
    # 3. a build killed mid-way: its .tmp folder and the lock of a process that no longer exists
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = folder.with_name(folder.name + ".lock")
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "started": 0}))
    tmp = folder.with_name(f"{folder.name}.tmp-{os.uname().nodename}-{dead.stdout.strip()}")
    tmp.mkdir()
    (tmp / "tokens_00000.bin").write_bytes(b"\0\0")
    import shutil
    shutil.rmtree(folder)
    CountingRows.calls = 0
    rebuilt, lines = build(data, tok, tmp_path / "c")
    assert CountingRows.calls == 30 and any("stale lock" in line for line in lines)
    assert not lock.exists() and not tmp.exists() and (folder / "manifest.json").is_file()


def test_waiting_for_a_live_builder_times_out_with_a_clear_message(tmp_path, tok):
    data = head(DEMO / "pretrain_demo.jsonl", tmp_path / "p.jsonl", 5)
    folder, _ = tc.cache_folder(tmp_path / "c", data, tok, PretrainRows(tok))
    folder.parent.mkdir(parents=True)
    lock = folder.with_name(folder.name + ".lock")
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "started": 0}))  # alive: us
    with pytest.raises(tc.UserError, match="timed out after 1 s waiting for another process.*pretokenize.py"):
        tc.load_or_build(data, tok, PretrainRows(tok), tmp_path / "c", log=lambda m: None, timeout_s=1)


def test_bad_line_is_named_and_no_cache_is_left(tmp_path, tok):
    data = tmp_path / "p.jsonl"
    data.write_text('{"text": "一"}\n\n{"txt": "二"}\n{"text": "三"}\n', encoding="utf-8")
    with pytest.raises(tc.UserError, match=r'p.jsonl:3: missing field "text"'):
        build(data, tok, tmp_path / "c", workers=2)
    assert [p.name for p in (tmp_path / "c").iterdir()] == []
    cache, _ = build(data, tok, tmp_path / "c", rows=PretrainRows(tok, skip_bad_lines=True))
    assert len(cache) == 2 and cache.skipped_lines == 1


BUILDER = textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist
    from transformers import AutoTokenizer
    from dataset import token_cache as tc
    from dataset.lm_dataset import PretrainRows
    dist.init_process_group("gloo")
    tok = AutoTokenizer.from_pretrained(sys.argv[3])
    lines = []
    cache = tc.load_or_build(sys.argv[1], tok, PretrainRows(tok), sys.argv[2], log=lines.append)
    built = any("tokenizing" in line for line in lines)
    print(json.dumps({"rank": dist.get_rank(), "built": built, "tokens": cache.n_tokens,
                      "first": cache.row(0)[:20].tolist()}), flush=True)
    dist.barrier()
    dist.destroy_process_group()
""")


@pytest.mark.slow  # subprocess / several processes: in the full run, not the quick loop (issue 26)
def test_one_builder_under_torchrun(tmp_path):
    data = head(DEMO / "pretrain_demo.jsonl", tmp_path / "p.jsonl", 400)
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    # --standalone: torchrun picks a free port itself
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(data), str(tmp_path / "c"), str(ROOT / "model")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert sum(r["built"] for r in results) == 1, results  # the other rank waited and mapped the same files
    assert results[0]["tokens"] == results[1]["tokens"] and results[0]["first"] == results[1]["first"]


# ------------------------------------------------------------------------------------- every row trained per epoch

class Rows(torch.utils.data.Dataset):
    """Row i is the token i + 3 repeated; a padding row is what PretrainDataset/SFTDataset give (labels all -100)."""

    def __init__(self, n: int, length: int = 8):
        self.n, self.length = n, length

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        ids = torch.full((self.length,), i + 3, dtype=torch.long)
        return ids, ids.clone()

    def padding_row(self):
        return torch.zeros(self.length, dtype=torch.long), torch.full((self.length,), IGNORE_INDEX)


@pytest.mark.parametrize("compiled", [False, True])
def test_every_row_is_trained_once_per_epoch(compiled, tmp_path, monkeypatch):
    """10 rows, batch 4: batches of 4, 4 and 2 (+2 rows that carry no loss when compiled, so one shape)."""
    monkeypatch.setenv("MINIMIND_COMPILE_BACKEND", "eager")  # Dynamo only: the same shapes and guards, no compiler
    args = trainer_utils.build_parser("t").parse_args(
        ["--hidden_size", "32", "--num_hidden_layers", "1", "--max_seq_len", "8", "--device", "cpu",
         "--batch_size", "4", "--epochs", "2", "--use_compile", str(int(compiled)), "--log_interval", "1",
         "--save_interval", "100", "--save_dir", str(tmp_path / "o"), "--checkpoint_dir", str(tmp_path / "c")])
    ctx, _, model, _ = trainer_utils.start_stage(args)
    trained, shapes = [], []

    def loss_fn(m, batch):
        input_ids, labels = batch
        shapes.append(tuple(input_ids.shape))
        trained.extend(int(row[0]) - 3 for row, lab in zip(input_ids, labels) if (lab != IGNORE_INDEX).any())
        return trainer_utils.causal_lm_loss(m, batch)

    torch._dynamo.reset()
    trainer = trainer_utils.train(args, ctx, model, Rows(10), loss_fn, log=lambda m: None)
    torch._dynamo.reset()
    assert sorted(trained[:10]) == sorted(trained[10:]) == list(range(10))  # each epoch: every row, once
    assert shapes == ([(4, 8)] * 6 if compiled else [(4, 8), (4, 8), (2, 8)] * 2)
    assert trainer.recompiles == 0
    assert trainer.tokens_seen == 2 * 10 * 8  # tokens/s counts the real rows only


def test_padding_rows_leave_the_loss_and_gradient_of_the_real_rows_unchanged(tok):
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(hidden_size=32, num_hidden_layers=1, inference_rope_scaling=False))
    real = torch.randint(3, 6400, (2, 8))
    pad_ids, pad_labels = Rows(1).padding_row()
    padded_ids = torch.cat([real, pad_ids.expand(2, 8)])
    padded_labels = torch.cat([real, pad_labels.expand(2, 8)])
    losses, grads = [], []
    for ids, labels in ((real, real), (padded_ids, padded_labels)):
        model.zero_grad()
        loss = model(ids, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.lm_head.weight.grad.clone())
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
