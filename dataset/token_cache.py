"""Token cache: tokenize a JSONL file once, in parallel, into memory-mapped shards that every run and rank reuses.

Packing tokenized the whole file in every process at start-up (0.6M tokens/s on 2 loaded cores: about 15 minutes
per rank for MiniMind's 1.6 GB pretrain_hq.jsonl, again on every resume). Now the first run writes the tokens to
disk and later runs, resumes and every rank map the same files: the OS page cache holds them once per machine.

Layout under the cache folder (default dataset/cache/tokens/, git-ignored):

    {stem}-{key}/                 one cache; key = hash of (source path, tokenizer fingerprint, format settings)
        manifest.json             written last: a folder without it is never used
        index.npy                 int64, rows + 1 entries: where each row starts in the token stream (and the end)
        tokens_00000.bin ...      uint16 token ids (int32 when the vocabulary has more than 65,536 entries)
        mask_00000.bin ...        uint8, 1 where the token carries loss (chat formats only)
    {stem}-{key}.tmp-{host}-{pid}/   a build in progress; renamed to the final name when complete
    {stem}-{key}.lock             the builder (host, pid); its mtime is the heartbeat others watch

A cache is used when its manifest matches the key and the source file: same size and mtime (no read), or, when
only the mtime changed, the same SHA-256 of the content. Anything else rebuilds. A build killed half-way leaves a
.tmp folder (and a lock whose process is gone): never read, removed by the next build.

Rows are turned into tokens by an encoder object (dataset/lm_dataset.py: `PretrainRows`, `ChatRows`) with
`settings()` (what changes its output), `parse_line(raw, offset)` and `encode(items) -> [(ids, mask or None)]`.
"""
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dataset.jsonl_index import index_line_starts
from model.runtime import UserError, repo_path

FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = "dataset/cache/tokens"
CHUNK_BYTES = 8 << 20  # one pool task: ~8 MB of JSONL, ~3M tokens, a few seconds of one core
STALE_LOCK_S = 600  # a builder touches its lock every few seconds; 10 minutes of silence means it is gone
WAIT_TIMEOUT_ENV = "MINIMIND_CACHE_WAIT_S"


CACHE_DIR_ENV = "MINIMIND_TOKEN_CACHE"  # overrides the default folder (the tests point it at a temporary one)
CACHE_DIR_HELP = (f"token cache folder (default {DEFAULT_CACHE_DIR}, or ${CACHE_DIR_ENV}): the data is tokenized "
                  "once (all cores) into memory-mapped files there and reused by later runs, resumes and every "
                  "rank; 'none' = no files, tokenize in each process. Build ahead: python scripts/pretokenize.py "
                  "(docs/data_en.md)")


def resolve_cache_dir(value) -> Path | None:
    """--cache_dir as given (relative to the repository root), $MINIMIND_TOKEN_CACHE or the default; None for 'none'."""
    value = value or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return None if str(value).lower() == "none" else repo_path(value)


def rank_log(msg: str) -> None:
    """print, prefixed with the rank under torchrun: whichever rank builds the cache reports its progress."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE", "1")
    print(f"[rank {rank}] {msg}" if rank is not None and world != "1" else msg, flush=True)


def cpu_cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of the tokenizer's full definition (vocabulary, merges, normalizer, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_folder(cache_dir, data_path, tokenizer, encoder) -> tuple[Path, dict]:
    """(folder of this cache, the key it is stored under)."""
    key = {"version": FORMAT_VERSION, "source": str(Path(data_path).resolve()),
           "tokenizer": tokenizer_fingerprint(tokenizer), "format": encoder.settings()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(data_path).stem}-{digest}", key


# --------------------------------------------------------------------------------------------------------- reading

class TokenCache:
    """Read-only view of a built cache: rows of token ids (and loss masks) from memory-mapped shards.

    Memory: the maps cost address space, not RSS, until pages are touched, and touched pages are the OS page
    cache, shared by every process on the machine. Safe to pickle into DataLoader workers (maps are reopened).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / "manifest.json").read_text(encoding="utf-8"))
        self.dtype = np.dtype(self.manifest["dtype"])
        self.has_mask = bool(self.manifest["has_mask"])
        self.shard_tokens = np.array([s["tokens"] for s in self.manifest["shards"]], dtype=np.int64)
        self.shard_starts = np.concatenate(([0], np.cumsum(self.shard_tokens)))
        self.n_tokens = int(self.shard_starts[-1])
        self._maps = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def _open(self):
        if self._maps is None:
            index = np.load(self.folder / "index.npy", mmap_mode="r")

            def mapped(name, dtype, n):
                # np.memmap refuses an empty file; a shard of only skipped lines has none
                return np.memmap(self.folder / name, dtype=dtype, mode="r") if n else np.zeros(0, dtype)
            tokens = [mapped(s["file"], self.dtype, s["tokens"]) for s in self.manifest["shards"]]
            masks = [mapped(s["mask"], np.uint8, s["tokens"]) for s in self.manifest["shards"]] if self.has_mask \
                else None
            self._maps = index, tokens, masks
        return self._maps

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    @property
    def skipped_lines(self) -> int:
        return int(self.manifest["skipped_lines"])

    def row_bounds(self, i: int) -> tuple[int, int]:
        index = self._open()[0]
        return int(index[i]), int(index[i + 1])

    def span(self, start: int, stop: int, mask: bool = False) -> np.ndarray:
        """Tokens [start, stop) of the concatenated stream (a row may cross a shard boundary)."""
        parts = self._open()[2 if mask else 1]
        k = int(np.searchsorted(self.shard_starts, start, side="right")) - 1
        out = []
        while start < stop:
            lo = start - int(self.shard_starts[k])
            take = min(stop, int(self.shard_starts[k + 1])) - start
            out.append(parts[k][lo:lo + take])
            start += take
            k += 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def rows_at(self, starts, length: int) -> np.ndarray:
        """A (len(starts), length) array of the token runs starting at `starts`: one batch in one call (the
        DataLoader's batched fetch; ~1 us a row against ~10 us through span() and per-row tensors)."""
        starts = np.asarray(starts, dtype=np.int64)
        shards = np.searchsorted(self.shard_starts, starts, side="right") - 1
        maps = self._open()[1]
        out = np.empty((len(starts), length), dtype=self.dtype)
        for j, (start, k) in enumerate(zip(starts.tolist(), shards.tolist())):
            lo = start - int(self.shard_starts[k])
            if lo + length <= len(maps[k]):
                out[j] = maps[k][lo:lo + length]
            else:  # crosses into the next shard
                out[j] = self.span(start, start + length)
        return out

    def row(self, i: int) -> np.ndarray:
        return self.span(*self.row_bounds(i))

    def row_mask(self, i: int) -> np.ndarray:
        return self.span(*self.row_bounds(i), mask=True)


def _valid(folder: Path, key: dict, stat: os.stat_result) -> bool:
    """A complete cache for this key and this source content."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("key") != key:
        return False
    for shard in manifest["shards"]:  # a truncated shard (disk full, manual edits) is not a cache
        want = shard["tokens"] * np.dtype(manifest["dtype"]).itemsize
        files = [(shard["file"], want)] + ([(shard["mask"], shard["tokens"])] if manifest["has_mask"] else [])
        if any(not (folder / f).is_file() or (folder / f).stat().st_size != n for f, n in files):
            return False
    source = manifest["source"]
    if source["size"] != stat.st_size:
        return False
    if source["mtime_ns"] == stat.st_mtime_ns:
        return True
    return file_sha256(key["source"]) == source["sha256"]  # touched or copied: same bytes are still valid


# -------------------------------------------------------------------------------------------------------- building

_WORKER: dict = {}


def _init_worker(path, encoder):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per pool process; the pool is the parallelism
    _WORKER.update(path=path, encoder=encoder)


def _encode_chunk(task) -> dict:
    """Tokenize rows [row_start, row_end) that lie in bytes [byte_start, byte_end); write this chunk's shard."""
    k, row_start, row_end, byte_start, byte_end, out_dir, dtype = task
    encoder = _WORKER["encoder"]
    with open(_WORKER["path"], "rb") as f:
        f.seek(byte_start)
        data = f.read(byte_end - byte_start)
    items, bad, pos = [], [], byte_start
    for raw in data.split(b"\n"):
        offset, pos = pos, pos + len(raw) + 1
        if not raw.strip():  # blank lines are not rows (the same rule as index_line_starts)
            continue
        try:
            items.append(encoder.parse_line(raw, offset))
        except ValueError as exc:
            bad.append((offset, str(exc)))
    if len(items) + len(bad) != row_end - row_start:  # the file changed under us
        raise UserError(f"{_WORKER['path']} changed while it was being tokenized; run again")
    lengths = np.zeros(len(items), dtype=np.int64)
    ids_parts, mask_parts, no_labels = [], [], 0
    for b in range(0, len(items), 512):  # the tokenizer's batch call: one Rust call per 512 rows
        for j, (ids, mask) in enumerate(encoder.encode(items[b:b + 512]), start=b):
            lengths[j] = len(ids)
            ids_parts.append(np.asarray(ids, dtype=dtype))
            if mask is not None:
                mask_parts.append(np.asarray(mask, dtype=np.uint8))
                no_labels += not mask_parts[-1].any()
    tokens = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype)
    shard = {"file": f"tokens_{k:05d}.bin", "tokens": int(len(tokens))}
    tokens.tofile(Path(out_dir) / shard["file"])
    if encoder.has_mask:
        shard["mask"] = f"mask_{k:05d}.bin"
        (np.concatenate(mask_parts) if mask_parts else np.zeros(0, np.uint8)).tofile(Path(out_dir) / shard["mask"])
    return {"k": k, "shard": shard, "lengths": lengths, "bad": bad, "rows_without_labels": no_labels}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _line_numbers(path, offsets) -> dict:
    """1-based line number of each byte offset (one pass; error path only)."""
    found, line, done, want = {}, 1, 0, sorted(offsets)
    with open(path, "rb") as f:
        for offset in want:
            while done < offset:
                chunk = f.read(min(1 << 24, offset - done))
                line += chunk.count(b"\n")
                done += len(chunk)
            found[offset] = line
    return found


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def build(data_path, encoder, dtype, out_dir: Path, workers: int, log: Callable = print, heartbeat=None,
          chunk_bytes: int = CHUNK_BYTES) -> dict:
    """Tokenize `data_path` into shards in `out_dir` with a pool of `workers` processes; returns the manifest body.

    The byte-offset index splits the file into ~8 MB tasks at line starts; each pool process reads its byte range,
    parses and batch-encodes it and writes one shard, so the parent only gathers row lengths (8 bytes a row).
    """

    t0 = time.perf_counter()
    offsets = index_line_starts(data_path)
    size = os.path.getsize(data_path)
    index_s = time.perf_counter() - t0
    if len(offsets) == 0:
        raise UserError(f"{data_path} has no records (it is empty or all blank lines)")
    bounds = np.append(offsets, size)
    # task edges: the first line start at or after every chunk_bytes, and at least 4 tasks per worker for balance
    step = max(1, min(chunk_bytes, size // (4 * workers) + 1))
    edges = np.unique(np.searchsorted(offsets, np.arange(0, size, step)))
    edges = np.append(edges[edges < len(offsets)], len(offsets))
    tasks = [(k, int(a), int(b), int(bounds[a]), int(bounds[b]), str(out_dir), dtype)
             for k, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    results, rows, tokens, last_print = [None] * len(tasks), 0, 0, 0.0
    t_start, cpu_start = time.perf_counter(), _cpu_seconds()

    def progress(final=False):
        nonlocal last_print
        now = time.perf_counter()
        if not final and now - last_print < 2:
            return
        last_print = now
        rate = tokens / max(now - t_start, 1e-9)
        eta = (now - t_start) / max(rows, 1) * (len(offsets) - rows)
        log(f"token cache: {rows:,}/{len(offsets):,} rows, {tokens:,} tokens, {rate:,.0f} tokens/s, "
            f"{workers} process(es), ETA {_fmt_s(eta)}")
        if heartbeat:
            heartbeat()

    def take(result):
        nonlocal rows, tokens
        results[result["k"]] = result
        rows += len(result["lengths"]) + len(result["bad"])
        tokens += result["shard"]["tokens"]
        progress()

    if workers <= 1:  # in this process: the single-process rate the benchmark compares against
        _init_worker(str(data_path), encoder)
        for task in tasks:
            take(_encode_chunk(task))
    else:
        # fork: the pool inherits the tokenizer without pickling and starts in milliseconds; spawn elsewhere
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # set before forking so tokenizers' fork hook does not warn about parallelism used in the parent
        before = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        try:
            with multiprocessing.get_context(method).Pool(workers, _init_worker, (str(data_path), encoder)) as pool:
                for result in pool.imap_unordered(_encode_chunk, tasks):
                    take(result)
        finally:
            if before is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = before
    build_s = time.perf_counter() - t_start
    cpu_s = _cpu_seconds() - cpu_start  # this process + the pool's (reaped) processes
    progress(final=True)

    bad = [b for r in results for b in r["bad"]]
    if bad and not encoder.skip_bad_lines:
        numbers = _line_numbers(data_path, [o for o, _ in bad[:10]])
        listed = "\n  ".join(f"{data_path}:{numbers[o]}: {msg}" for o, msg in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise UserError(f"{data_path}: {len(bad)} malformed line(s):\n  {listed}{more}\nFix or delete them, or "
                        "skip malformed lines with --skip_bad_lines 1 (skip_bad_lines=True in Python).")
    lengths = np.concatenate([r["lengths"] for r in results])
    np.save(out_dir / "index.npy", np.concatenate(([0], np.cumsum(lengths))).astype(np.int64))
    return {"rows": int(len(lengths)), "tokens": int(tokens), "dtype": np.dtype(dtype).name,
            "has_mask": bool(encoder.has_mask), "shards": [r["shard"] for r in results],
            "skipped_lines": len(bad), "rows_without_labels": int(sum(r["rows_without_labels"] for r in results)),
            "build": {"index_s": round(index_s, 3), "tokenize_s": round(build_s, 3), "processes": workers,
                      "tokens_per_s": round(tokens / max(build_s, 1e-9)), "cpu_s": round(cpu_s, 3),
                      "host": socket.gethostname()}}


# ------------------------------------------------------------------------------------------- one builder, others wait

def _lock_is_stale(lock: Path) -> bool:
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):  # half-written lock or gone already: judge by age only
        try:
            return time.time() - lock.stat().st_mtime > 30
        except OSError:
            return False
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True  # the builder on this machine is dead
        except PermissionError:
            pass
    return age > STALE_LOCK_S


def _touch(lock: Path) -> None:
    """The builder's heartbeat: waiting processes treat a lock untouched for STALE_LOCK_S as abandoned."""
    try:
        os.utime(lock)
    except OSError:
        pass  # removed by hand: the build still finishes and renames into place


def _read_lock(lock: Path) -> str:
    try:
        return lock.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "gone"


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders of killed builds of this cache (we hold the lock, so none is in progress)."""
    for tmp in folder.parent.glob(f"{folder.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(data_path, tokenizer, encoder, cache_dir=DEFAULT_CACHE_DIR, log: Callable = rank_log,
                  workers: int | None = None, timeout_s: float | None = None) -> TokenCache:
    """The cache of `data_path` for this tokenizer and encoder: mapped if built, else built here or awaited.

    Exactly one process builds (whoever creates the lock file first: under torchrun one rank per machine, or one
    for all machines on a shared file system); the others poll for the manifest, printing who they wait for, and
    give up after `timeout_s` (default 2 h, or $MINIMIND_CACHE_WAIT_S) with a message saying how to build ahead.
    """
    data_path = Path(data_path)
    if not data_path.is_file():
        raise UserError(f"Data file not found: {data_path}")
    folder, key = cache_folder(cache_dir, data_path, tokenizer, encoder)
    lock = folder.with_name(folder.name + ".lock")
    timeout_s = float(os.environ.get(WAIT_TIMEOUT_ENV, 7200)) if timeout_s is None else timeout_s
    waited_since, last_note = None, 0.0
    while True:
        stat = data_path.stat()
        if _valid(folder, key, stat):
            return TokenCache(folder)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(lock):
                log(f"token cache: removing the stale lock {lock} (its builder is gone)")
                lock.unlink(missing_ok=True)
                continue
            now = time.monotonic()
            waited_since = waited_since or now
            if now - waited_since > timeout_s:
                raise UserError(
                    f"timed out after {timeout_s:.0f} s waiting for another process to build the token cache "
                    f"{folder} (lock {lock}: {_read_lock(lock)}). Build it ahead "
                    f"with `python scripts/pretokenize.py --data_path {data_path}`, raise ${WAIT_TIMEOUT_ENV}, or "
                    f"delete the lock if no build is running.")
            if now - last_note > 60:
                last_note = now
                log(f"token cache: waiting for another process to build {folder.name} "
                    f"(lock {lock.name}; {now - waited_since:.0f} s so far, timeout {timeout_s:.0f} s)")
            time.sleep(0.5)
            continue
        except OSError as exc:
            raise UserError(f"cannot write the token cache folder {folder.parent}: {exc}. Pass a writable "
                            f"--cache_dir, or build ahead with scripts/pretokenize.py") from None
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}, f)
        try:
            if _valid(folder, key, data_path.stat()):  # built by someone else between our check and the lock
                return TokenCache(folder)
            _build_into(folder, key, data_path, tokenizer, encoder, log, workers or cpu_cores(),
                        heartbeat=lambda: _touch(lock))
            return TokenCache(folder)
        finally:
            lock.unlink(missing_ok=True)


def _build_into(folder, key, data_path, tokenizer, encoder, log, workers, heartbeat) -> None:
    _remove_leftovers(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        stat = data_path.stat()
        log(f"token cache: tokenizing {data_path} ({stat.st_size / 1e6:,.1f} MB) once into {folder} "
            f"with {workers} process(es); later runs and other ranks reuse it")
        sha = file_sha256(data_path)
        dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.int32
        body = build(data_path, encoder, dtype, tmp, workers, log, heartbeat)
        if data_path.stat().st_mtime_ns != stat.st_mtime_ns or data_path.stat().st_size != stat.st_size:
            raise UserError(f"{data_path} changed while it was being tokenized; run again")
        if body["rows"] == 0:
            raise UserError(f"{data_path} has no valid records")
        manifest = {"key": key, "source": {"path": str(data_path), "size": stat.st_size,
                                           "mtime_ns": stat.st_mtime_ns, "sha256": sha}, **body,
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        # the manifest is written last (temp + rename): a folder without it is never used
        (tmp / "manifest.json.part").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(tmp / "manifest.json.part", tmp / "manifest.json")
        old = None
        if folder.exists():  # an outdated cache (the file or its mtime changed): swap, then delete
            old = folder.with_name(f"{folder.name}.tmp-old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        log(f"token cache: {body['rows']:,} rows, {body['tokens']:,} tokens, {mb:,.1f} MB in {folder} "
            f"({body['build']['tokens_per_s']:,} tokens/s with {workers} process(es))"
            + (f"; skipped {body['skipped_lines']} bad line(s)" if body["skipped_lines"] else ""))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
