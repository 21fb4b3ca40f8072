"""The data pipeline at scale: index, token-cache build, time to the first optimizer step, RSS per rank, loader speed.

Each measurement returns a dict that scripts/bench_data.py prints as one JSON line. The corpus is synthesized by
repeating the bundled pretraining text (dataset/demo/pretrain_demo.jsonl) with a running id in each row, so every
row is distinct and the token statistics are those of the demo text (~0.32 tokens per byte).
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

from dataset.lm_dataset import PretrainDataset, PretrainRows, index_line_starts
from dataset.token_cache import cpu_cores, load_or_build
from model.checkpoint import TOKENIZER_DIR, load_tokenizer
from model.runtime import ROOT
from trainer.trainer_utils import ResumableBatchSampler

DEMO = ROOT / "dataset" / "demo" / "pretrain_demo.jsonl"
# the first optimizer step measures the data path, so the model is tiny and the step small (CPU)
STEP_FLAGS = ["--packing", "1", "--max_steps", "1", "--log_interval", "1", "--save_interval", "100000",
              "--hidden_size", "64", "--num_hidden_layers", "2", "--batch_size", "8", "--accumulation_steps", "1",
              "--max_seq_len", "340", "--device", "cpu", "--num_workers", "0"]


def machine_state() -> dict:
    load1, load5, _ = os.getloadavg()
    return {"cores": cpu_cores(), "load_1m": round(load1, 2), "load_5m": round(load5, 2)}


def synthesize(path: Path, size_mb: float, source: Path = DEMO) -> dict:
    """Write about size_mb MB of {"id", "text"} rows to `path` (kept and reused when already that size)."""
    target = int(size_mb * 1e6)
    if path.is_file() and abs(path.stat().st_size - target) < 2e6:
        return {"bench": "corpus", "path": str(path), "mb": round(path.stat().st_size / 1e6, 1), "reused": True}
    texts = [json.loads(line)["text"] for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    start, written, n = time.perf_counter(), 0, 0
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as f:
        while written < target:
            block = "".join(json.dumps({"id": n + i, "text": f"[{n + i}] {t}"}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(texts))
            f.write(block)
            written += len(block.encode("utf-8"))
            n += len(texts)
    os.replace(tmp, path)
    return {"bench": "corpus", "path": str(path), "rows": n, "mb": round(path.stat().st_size / 1e6, 1),
            "seconds": round(time.perf_counter() - start, 2), "reused": False}


def prefix(path: Path, out: Path, mb: float) -> Path:
    """The first `mb` MB of a JSONL file, cut at a line end."""
    with open(path, "rb") as f:
        data = f.read(int(mb * 1e6))
    out.write_bytes(data[: data.rfind(b"\n") + 1])
    return out


def bench_index(path: Path) -> dict:
    start = time.perf_counter()
    offsets = index_line_starts(path)
    seconds = time.perf_counter() - start
    return {"bench": "index", "rows": len(offsets), "mb": round(path.stat().st_size / 1e6, 1),
            "seconds": round(seconds, 3), "mb_per_s": round(path.stat().st_size / 1e6 / seconds, 1),
            **machine_state()}


def build_stats(cache, label: str, **extra) -> dict:
    b = cache.manifest["build"]
    return {"bench": label, "tokens": cache.n_tokens, "rows": len(cache), "processes": b["processes"],
            "tokenize_s": b["tokenize_s"], "index_s": b["index_s"], "tokens_per_s": b["tokens_per_s"],
            "cpu_s": b["cpu_s"], "cores_used": round(b["cpu_s"] / max(b["tokenize_s"], 1e-9), 2),
            "tokens_per_cpu_s": round(cache.n_tokens / max(b["cpu_s"], 1e-9)), **extra, **machine_state()}


def bench_single_process(path: Path, work: Path, mb: float) -> dict:
    """The single-process build rate on the corpus's first `mb` MB (the whole corpus on one core would take long)."""
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    sample = prefix(path, work / f"single_{mb:g}mb.jsonl", mb)
    cache = load_or_build(sample, tokenizer, PretrainRows(tokenizer), work / "cache_single", log=lambda m: None,
                          workers=1)
    return build_stats(cache, "build_single_process", sample_mb=mb)


def is_rank(cmdline: list) -> bool:
    """A training process (not torchrun's launcher, whose arguments name the script too)."""
    text = " ".join(cmdline)
    return "train_pretrain.py" in text and "torch.distributed.run" not in text


def run_watched(cmd: list, env: dict, timeout: float = 3600) -> dict:
    """Run `cmd`; seconds until its first 'step 1/' log line, the builder count, peak RSS of each training process.

    Peak RSS is VmHWM of every process running trainer/train_pretrain.py whose parent is not one (the ranks, not
    their forked tokenizer pool), polled every 0.1 s.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines, first_step, peaks = [], [], {}

    data_line = []

    def read():  # a thread: the main loop polls memory while the log streams
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if not data_line and line.startswith("data: "):
                data_line.append(time.perf_counter() - start)
            if not first_step and " step 1/" in line:
                first_step.append(time.perf_counter() - start)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while True:
        try:
            root = psutil.Process(proc.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = []
        for child in family:
            try:
                if is_rank(child.cmdline()) and not is_rank(child.parent().cmdline()):
                    with open(f"/proc/{child.pid}/status") as f:
                        hwm = next(int(x.split()[1]) for x in f if x.startswith("VmHWM"))
                    peaks[child.pid] = max(peaks.get(child.pid, 0), hwm)
            except (psutil.Error, OSError, StopIteration):
                pass
        if proc.poll() is not None:
            reader.join(timeout=10)
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
            raise RuntimeError(f"{cmd} ran past {timeout} s")
        time.sleep(0.1)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n" + "\n".join(lines[-30:]))
    return {"seconds_to_first_step": round(first_step[0], 2) if first_step else None,
            # from the stage's "data: ..." line (imports, model and tokenizer done) to the first step's log line:
            # opening or building the data, the trainer set-up and one optimizer step of the tiny model
            "seconds_data_line_to_first_step": round(first_step[0] - data_line[0], 2)
            if first_step and data_line else None,
            "builders": sum("token cache: tokenizing" in line for line in lines),
            "peak_rss_mb_per_rank": sorted(round(kb / 1024) for kb in peaks.values()),
            "wall_s": round(time.perf_counter() - start, 2), "log": lines}


def train_command(data: Path, work: Path, cache: Path, ranks: int, tag: str) -> list:
    script = str(ROOT / "trainer" / "train_pretrain.py")
    flags = [*STEP_FLAGS, "--data_path", str(data), "--cache_dir", str(cache), "--save_dir", str(work / tag),
             "--checkpoint_dir", str(work / tag / "ckpt")]
    if ranks == 1:
        return [sys.executable, script, *flags]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), script,
            *flags]


def bench_first_step(data: Path, work: Path, cache: Path, ranks: int, label: str, baseline_rss=None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    result = run_watched(train_command(data, work, cache, ranks, label), env)
    result.pop("log")
    out = {"bench": label, "ranks": ranks, "backend": "gloo" if ranks > 1 else None, **result}
    if baseline_rss:
        out["rss_growth_from_data_mb_per_rank"] = [a - b for a, b in zip(result["peak_rss_mb_per_rank"],
                                                                          baseline_rss)]
    return {**out, **machine_state()}


def _cpu_s(pids: list) -> float:
    """CPU seconds used so far by these processes (the DataLoader workers)."""
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def bench_loader(data: Path, cache_dir: Path, seconds: float = 6.0, batch_size: int = 128,
                 seq_len: int = 340) -> list:
    """Packed rows from the warm cache in shuffled order through a DataLoader (0 workers: in this process; 1 worker).

    Batch 128 x 340 is the CUDA pretraining default. On a loaded machine the wall rate only says what share of a
    core we got, so each line also gives tokens per CPU-second of the process that did the reading (this one for
    0 workers, the worker for 1): the rate one unshared core reaches.
    """
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    dataset = PretrainDataset(data, tokenizer, seq_len, packing=True, cache_dir=cache_dir, log=lambda m: None)
    results = []
    for workers in (0, 1):
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed=workers)
        # persistent workers, as the trainer keeps them: a small corpus may take several epochs
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                            prefetch_factor=4 if workers else None)
        it = iter(loader)
        pids = [w.pid for w in getattr(it, "_workers", [])]
        reader_cpu = (lambda: _cpu_s(pids)) if workers else time.process_time
        tokens, start, i = 0, None, 0
        while start is None or time.perf_counter() - start < seconds:
            for input_ids, _ in it:
                i += 1
                if i == 10:  # after the worker started and the first batches
                    start, tokens, cpu = time.perf_counter(), 0, reader_cpu()
                tokens += input_ids.numel()
                if start and time.perf_counter() - start > seconds:
                    break
            else:
                it = iter(loader)
        elapsed, cpu = time.perf_counter() - start, reader_cpu() - cpu
        results.append({"bench": "loader", "workers": workers, "batch_size": batch_size, "seq_len": seq_len,
                         "tokens_per_s_per_worker": round(tokens / elapsed),
                         "tokens_per_cpu_s": round(tokens / max(cpu, 1e-9)), "reader_cores": round(cpu / elapsed, 2),
                         "cache_mb": round(dataset.n_tokens * dataset.cache.dtype.itemsize / 1e6),
                         **machine_state()})
        del it, loader
    return results


def summary(results: dict) -> dict:
    """The issue's targets against what was measured."""
    single, build = results["build_single_process"], results["first_build"]
    warm, cold_ddp, warm_ddp = results["first_step_warm"], results["first_step_cold_torchrun"], \
        results["first_step_warm_torchrun"]
    loader = max(r["tokens_per_s_per_worker"] for r in results["loader"])
    loader_cpu = max(r["tokens_per_cpu_s"] for r in results["loader"] if r["workers"] == 1)
    growth = warm_ddp.get("rss_growth_from_data_mb_per_rank") or [None]
    speedup = build["tokens_per_s"] / single["tokens_per_s"]
    return {"bench": "targets",
            "warm_first_step_s": warm["seconds_to_first_step"], "warm_first_step_under_15s":
                warm["seconds_to_first_step"] is not None and warm["seconds_to_first_step"] < 15,
            "builders_cold_torchrun_2": cold_ddp["builders"], "built_once": cold_ddp["builders"] == 1,
            "build_speedup_vs_single_process": round(speedup, 2), "speedup_at_least_1_7": speedup >= 1.7,
            "per_core_efficiency": round(build["tokens_per_cpu_s"] / single["tokens_per_cpu_s"], 2),
            "rss_growth_mb_per_rank": growth, "rss_growth_under_300mb": all(g is not None and g < 300 for g in growth),
            "loader_tokens_per_s_per_worker": loader, "loader_at_least_20m": loader >= 20e6,
            "loader_worker_tokens_per_cpu_s": loader_cpu, "loader_worker_per_core_at_least_20m": loader_cpu >= 20e6,
            **machine_state()}


def extrapolate(build: dict, corpus_mb: float, tokens: int) -> dict:
    """MiniMind's pretrain_hq.jsonl (1.6 GB) from the measured tokens per CPU-second and tokens per MB."""
    per_core = build["tokens_per_cpu_s"]
    hq_tokens = tokens / corpus_mb * 1600
    hosts = {"gpu_host_16_cores": 16, "npu_node_8_cards_192_cores": 192}
    return {"bench": "extrapolation_pretrain_hq_1600mb", "tokens_estimate": round(hq_tokens),
            "tokens_per_cpu_s_measured": per_core,
            **{f"build_s_{name}": round(hq_tokens / (per_core * cores), 1) for name, cores in hosts.items()},
            "note": "linear in cores (each pool process is independent); one builder per node, the other ranks "
                    "wait; the 192-core figure assumes a 4 x 48-core Kunpeng 920 host at this machine's per-core rate"}


def load_cache(data: Path, cache_dir: Path):
    """The pretraining cache of `data` in `cache_dir` (built already: no tokenizing here)."""
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    yield load_or_build(data, tokenizer, PretrainRows(tokenizer), cache_dir, log=lambda m: None)
